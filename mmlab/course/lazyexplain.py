"""What a lazy-loading run showed, in words: which case happened on this machine, and why.

The same experiment gives different numbers on different machines: a server with
``read_ahead_kb`` 8192 and large folios reads and maps the whole file where a laptop with
128 KiB of readahead and single pages stays lazy. Each function here takes the measurements
of ``mmlab.course.lazy`` (and ``mmlab.bench.compare``) and the machine's ``Sizes``, and
returns sentences that say what happened and name the size that decided it, so that no
notebook prose has to guess. ``claim_lazy`` and ``claim_faults`` give the two rows of the
course's claims table that notebook 03 records.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmlab.course.lazy import PAGE, Sizes, StrideRow, Touch, _pages
from mmlab.instruments.facts import format_size

__all__ = [
    "claim_faults",
    "claim_lazy",
    "explain_cold_warm",
    "explain_first",
    "explain_hints",
    "explain_strides",
    "explain_touches",
]


def explain_touches(cold: Touch, warm: Touch, sizes: Sizes) -> list[str]:
    """What one cold and one warm touch of the same page show here, and the size behind each."""
    lines = []
    if sizes.readahead is None:
        lines.append(f"the cold fault cached {cold.cached:,} pages (read_ahead_kb is unknown here)")
    else:
        ratio = cold.cached / sizes.readahead
        first, end = cold.window()
        lines.append(
            f"the cold fault left {cold.cached:,} pages cached: {ratio:.2g}x the readahead "
            f"window of {sizes.readahead:,} pages (read_ahead_kb "
            f"{sizes.readahead * PAGE // 1024:,}); the run around the touched page spans pages "
            f"{first:,} to {end - 1:,}: {cold.page - first:,} before it, {end - cold.page - 1:,} "
            "after it (read-around places the window near the page it needs)"
        )
    if sizes.cold_cached:
        lines.append(
            f"mmlab doctor's probe (cold_touch) found {sizes.cold_cached:,} pages cached after "
            f"one cold touch of its own file: this run cached {cold.cached / sizes.cold_cached:.2g}"
            "x that"
        )
    if cold.cached_at_once < cold.cached:
        lines.append(
            f"right after the fault only {cold.cached_at_once:,} of them were in the cache: the "
            "fault waits for its own page only, the rest of the window was still being read"
        )
    lines.append(
        f"the cold fault mapped {_pages(cold.mapped_pages)} of the {cold.cached:,} it brought "
        "into the page cache: the rest are cached, not mapped, and join RSS only once touched"
    )
    if warm.mapped_pages > sizes.fault_around:
        case = (
            f"more than fault-around's {sizes.fault_around}: the page sits in a large folio "
            "and the fault mapped the folio whole"
        )
    elif warm.mapped_pages > 1:
        case = (
            f"no more than fault-around's {sizes.fault_around}: fault-around (or a small folio) "
            "mapped cached neighbours along with it"
        )
    else:
        case = "only the page itself: no fault-around, no large folio here"
    lines.append(
        f"touched again through a new mapping (now cached: a minor fault), it mapped "
        f"{_pages(warm.mapped_pages)}: {case}"
    )
    return lines


def explain_cold_warm(cold, warm, one_major_s: float) -> str:
    """Where the time of a cold run went, from two ``Measurement`` s and one cold fault's time.

    ``one_major_s`` is what one major fault took on its own (``touch_once``): the run's major
    faults account for about that much each; the rest of the extra time was spent in minor
    faults that waited for reads already in flight.
    """
    extra = cold.wall_s - warm.wall_s
    majors = cold.major_faults * one_major_s
    text = (
        f"cold took {cold.wall_s / max(warm.wall_s, 1e-9):,.0f}x the time of warm "
        f"({cold.wall_s * 1e3:,.1f} ms against {warm.wall_s * 1e3:,.1f} ms) with "
        f"{cold.major_faults:,} major + {cold.minor_faults:,} minor faults (warm: "
        f"{warm.minor_faults:,} minor). One major fault alone took {one_major_s * 1e3:.2f} ms, "
        f"so the major faults account for about {majors * 1e3:,.1f} ms of the "
        f"{extra * 1e3:,.1f} ms extra"
    )
    if extra > 2 * majors:
        text += (
            f". The other {(extra - majors) * 1e3:,.0f} ms went to minor faults that found "
            "their page in the page cache while readahead was still reading it, and waited "
            "for the read: the kernel counts such a fault as minor (it started no I/O), so "
            "only the time shows the wait"
        )
    else:
        text += (
            ". Here the major faults account for the extra time: no wait hidden in minor "
            "faults shows in this run"
        )
    return text


def explain_strides(rows: Sequence[StrideRow], sizes: Sizes) -> list[str]:
    """Per stride, what happened here and which size decided it, from the measured numbers."""
    lines = []
    for r in rows:
        span = format_size(r.stride * PAGE)
        head = (
            f"every {r.stride:,}th page ({span} apart): touched {100 * r.fraction('touched'):.2g}%"
            f", read {100 * r.fraction('read'):.0f}%, mapped {100 * r.fraction('mapped'):.0f}% "
            f"of the file with {r.major_faults:,} major + {r.minor_faults:,} minor faults"
        )
        if r.fraction("read") > 0.9:
            why = (
                "read nearly all: the readahead window "
                f"({format_size((sizes.readahead or 0) * PAGE)}) is wider than the gap"
                if sizes.readahead and r.stride <= sizes.readahead
                else "read nearly all: readahead kept going ahead of the touches"
            )
        else:
            why = f"read {r.read_bytes // max(r.major_faults, 1) // 1024:,} KiB per major fault"
        per_fault = r.mapped_pages / max(r.faults, 1)
        mapped = f"{per_fault:,.0f} pages mapped per fault"
        if per_fault > sizes.fault_around:
            mapped += " (more than fault-around: large folios mapped whole)"
        elif per_fault > 1.5:
            mapped += " (fault-around and folios)"
        lines.append(f"{head}\n    {why}; {mapped}")
    return lines


def explain_hints(result, none: str = "none") -> list[str]:
    """What a comparison of madvise hints shows, from its medians, against the no-hint row."""
    base = result[none]
    lines = []
    for row in result.rows:
        if row.name == none:
            continue
        speed = result.relative(row.name, none).median  # per round: > 1 means faster
        pace = f"{speed:.2f}x the speed" if speed >= 1 else f"{1 / speed:.2f}x the time"
        read = (row.storage_bytes or 0) / max(base.storage_bytes or 0, 1)
        line = (
            f"{row.name}: {row.major_faults:,} major + {row.minor_faults:,} minor faults, read "
            f"{format_size(row.storage_bytes or 0)} ({read:.2g}x no hint's), took {pace} of no "
            f"hint: {result.lead(row.name, none)}"
        )
        side = result.relative(row.name, none).side(1.0)
        if read < 0.5 and side < 0:
            line += (
                f".\n    Fewer bytes, yet slower: {row.major_faults:,} small reads, each waited "
                "for in its own fault, cost more than a few large reads of the whole file"
            )
        elif read < 0.5:
            line += ".\n    Fewer bytes and not slower: the reads it skipped outweighed its waits"
        elif row.name in ("willneed", "populate") and 0.9 < read < 1.1:
            line += (
                ".\n    It read the whole file up front; no hint ended up reading all of it too, "
                "so the same bytes came in, only at another moment"
            )
        elif 0.9 < read < 1.1:
            line += (
                ".\n    The same bytes as no hint: without a hint the kernel already read around "
                "the first fault and then ahead of the touches, so this hint changed "
                + ("no time clearly" if side == 0 else "only the time, by a little")
            )
        lines.append(line)
    return lines


def explain_first(mapping, touched, mapped_bytes: int, file_bytes: int) -> list[str]:
    """Section 1 in words: what the touches read and mapped, and whether that was lazy here."""
    if touched.read_bytes is None or mapping.read_bytes is None:
        why = touched.unavailable.get("read_bytes", "no /proc/self/io")
        return [f"bytes read from storage are unknown here ({why}): only faults and RSS show"]
    share = touched.read_bytes / file_bytes
    per_major = touched.read_bytes / max(touched.major_faults, 1)
    faults = touched.minor_faults + touched.major_faults
    lines = [
        f"{faults} faults ({touched.major_faults} major); read "
        f"{format_size(touched.read_bytes)} = {100 * share:.1f}% of the file, "
        f"{format_size(int(per_major))} per major fault ({per_major / PAGE:,.0f} pages); mapped "
        f"{format_size(mapped_bytes)}"
    ]
    if mapping.read_bytes == 0 and share < 0.5:
        lines.append(
            "Lazy here: mapping read nothing and the touches read only a part of the file."
        )
    else:
        lines.append(
            "NOT lazy here: mapping or the touches read most of the file, as each fault read a "
            "whole readahead window."
        )
    return lines


def claim_lazy(mapping, touched, mapped_bytes: int, file_bytes: int) -> tuple[str, str]:
    """The claims table's sentences for "lazy loading": (measured, verdict), from section 1's
    two ``Measurement`` s (the mapping, the touches) and the bytes the touches mapped."""
    if touched.read_bytes is None or mapping.read_bytes is None:
        return "bytes read from storage unknown here (no /proc/self/io)", "not checked here"
    share = touched.read_bytes / file_bytes
    per_major = touched.read_bytes / max(touched.major_faults, 1)
    faults = touched.minor_faults + touched.major_faults
    measured = (
        f"mapping {format_size(file_bytes)}: {mapping.wall_s * 1e3:.2f} ms, "
        f"{mapping.minor_faults + mapping.major_faults} faults, {format_size(mapping.read_bytes)}"
        f" read; touching {faults - touched.minor_faults} pages cold: {faults} faults, "
        f"{format_size(touched.read_bytes)} read ({100 * share:.1f}% of the file), "
        f"{format_size(mapped_bytes)} mapped"
    )
    if mapping.read_bytes == 0 and share < 0.5:
        verdict = (
            f"true: nothing loads until touched, but each cold fault read {format_size(per_major)}"
            " (readahead), not one page"
        )
    else:
        verdict = "not on this machine: mapping or a few touches read most of the file"
    return measured, verdict


def claim_faults(cold: Touch, rows: Sequence[StrideRow]) -> tuple[str, str]:
    """The claims table's sentences for "page faults decide what loads": (measured, verdict)."""
    dense, sparse = rows[0], rows[-1]
    most = max(r.mapped_pages / max(r.faults, 1) for r in rows)

    def shares(r: StrideRow) -> str:
        read, mapped = 100 * r.fraction("read"), 100 * r.fraction("mapped")
        return f"{r.faults:,} faults, {read:.3g}% read, {mapped:.3g}% mapped"

    measured = (
        f"one cold touch: {cold.major_faults} major fault, {format_size(cold.read_bytes or 0)} "
        f"read, {cold.cached:,} pages cached, {cold.mapped_pages} mapped; every "
        f"{dense.stride}th page: {shares(dense)}; every {sparse.stride:,}th: {shares(sparse)}"
    )
    verdict = (
        f"true, but one fault decides for many pages: a cold fault read {cold.cached:,} pages "
        f"(readahead) and a minor fault mapped up to {most:,.0f} (fault-around, large folios); "
        f"touching {100 * dense.fraction('touched'):.2g}% of the pages mapped "
        f"{100 * dense.fraction('mapped'):.0f}% of the file"
    )
    return measured, verdict
