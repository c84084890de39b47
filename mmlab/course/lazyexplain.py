"""What a lazy-loading run showed, in words: which case happened on this machine, and why.

The same experiment gives different numbers on different machines: a server with
``read_ahead_kb`` 8192 and large folios reads and maps the whole file where a laptop with
128 KiB of readahead and single pages stays lazy. Each function here takes the measurements
of ``mmlab.course.lazy`` (and ``mmlab.bench.compare``) and the machine's ``Sizes``, and
returns sentences that say what happened and name the size that decided it, so that no
notebook prose has to guess. The reasons for the measurements a student's
prediction is revealed beside (``mmlab.predict``) live in ``mmlab.course.lazywhy``.
``claim_lazy`` and ``claim_faults`` give the two rows of the course's claims table that
notebook 03 records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from mmlab.course.lazy import PAGE, Sizes, StrideRow, Touch, _pages, folio_text, read_text
from mmlab.instruments.facts import format_size
from mmlab.instruments.spread import FEW_ROUNDS

__all__ = [
    "claim_faults",
    "claim_lazy",
    "explain_cold_warm",
    "explain_first",
    "explain_hints",
    "explain_random",
    "explain_reach",
    "explain_strides",
    "explain_touches",
]


def _folio_of(touch: Touch) -> int | None:
    sizes = touch.folio
    return max(sizes) if isinstance(sizes, Counter) and sizes else None


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
    how = (
        "the fault slept until its page was read, was then retried, and the retry mapped the "
        "page with the neighbours already read at that moment (fault-around, as for a minor "
        "fault)"
        if cold.mapped_pages > 1
        else "the fault slept until its page was read and mapped that page alone"
    )
    lines.append(
        f"the cold fault mapped {_pages(cold.mapped_pages)} of the {cold.cached:,} it brought "
        f"into the page cache: {how}; the rest are cached, not mapped, and join RSS only once "
        "touched"
    )
    folio = _folio_of(warm)
    met = (
        f"the touched page sits in a folio of {_pages(folio)} (pagemap, kpageflags)"
        if folio
        else f"its folio size is unknown here ({folio_text(warm.folio)})"
    )
    if warm.mapped_pages > sizes.fault_around:
        case = "more than fault-around's: the page sits in a large folio, mapped whole"
    elif folio == 1 and sizes.large_folios:
        case = (
            f"fault-around (up to {sizes.fault_around}) mapped cached neighbours. This file "
            "system has large folios, but read-around filled this window with 1-page folios: "
            "only readahead running ahead of in-order touches builds large ones"
        )
    elif warm.mapped_pages > 1:
        case = f"fault-around (up to {sizes.fault_around}) mapped cached neighbours with it"
    else:
        case = "only the page itself: no fault-around, no large folio here"
    lines.append(
        f"touched again through a new mapping (now cached: a minor fault), it mapped "
        f"{_pages(warm.mapped_pages)}; {met}: {case}"
    )
    return lines


def explain_cold_warm(cold, warm, one_major_s: float, kernel: str = "") -> str:
    """Where the time of a cold run went, from two ``Measurement`` s and one cold fault's time.

    The run only touches pages, so its wall time beyond its CPU time is time spent asleep in
    page faults, waiting for storage. ``one_major_s`` (one major fault on its own, from
    ``touch_once``) says how much of that the major faults explain; the rest was waited in
    faults this kernel counted as minor.
    """
    waited = max(cold.wall_s - cold.cpu_s, 0.0)
    majors = cold.major_faults * one_major_s
    text = (
        f"cold took {cold.wall_s / max(warm.wall_s, 1e-9):,.0f}x the time of warm "
        f"({cold.wall_s * 1e3:,.1f} ms against {warm.wall_s * 1e3:,.1f} ms); it used "
        f"{cold.cpu_s * 1e3:,.1f} ms of CPU, so it waited {waited * 1e3:,.0f} ms. It took "
        f"{cold.major_faults:,} major + {cold.minor_faults:,} minor faults (warm: "
        f"{warm.minor_faults:,} minor); one major fault alone took {one_major_s * 1e3:.2f} ms, "
        f"so the major faults explain about {majors * 1e3:,.1f} ms of the wait"
    )
    if waited > 2 * majors:
        text += (
            f". The other {(waited - majors) * 1e3:,.0f} ms were waited in faults counted as "
            "minor: faults on pages readahead was still reading, which slept until the read "
            "finished, so here the time, not the major count, shows the wait"
        )
        if _version(kernel) >= (6, 7):
            text += (
                f". This kernel ({kernel}) retries such a fault under the per-VMA lock and "
                "counts it minor; before 6.7 the retry counted it major"
            )
    else:
        text += ". Here the major faults account for the wait: none hid behind minor faults"
    return text


def _version(kernel: str) -> tuple[int, int]:
    """(6, 18) from "6.18.0-1-amd64"; (0, 0) where it cannot be read."""
    parts = kernel.split(".")[:2]
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return 0, 0


def explain_strides(rows: Sequence[StrideRow], sizes: Sizes) -> list[str]:
    """Per stride, what happened here and which size decided it, from the measured numbers."""
    lines = []
    for r in rows:
        span = format_size(r.stride * PAGE)
        read = "?" if r.read_bytes is None else f"{100 * r.fraction('read'):.0f}"
        head = (
            f"every {r.stride:,}th page ({span} apart): touched {100 * r.fraction('touched'):.2g}%"
            f", read {read}%, mapped {100 * r.fraction('mapped'):.0f}% "
            f"of the file with {r.major_faults:,} major + {r.minor_faults:,} minor faults"
        )
        if r.read_bytes is None:
            why = f"{r.major_faults:,} of {r.touched:,} touches were major; read {read_text(None)}"
        elif r.major_faults * 4 <= r.touched and r.fraction("read") > 0.5:
            why = (
                f"{r.major_faults:,} of {r.touched:,} touches faulted major, yet "
                f"{100 * r.fraction('read'):.0f}% was read: readahead kept running ahead of them"
            )
        else:
            per_major = format_size(r.read_bytes // max(r.major_faults, 1))
            why = f"{r.major_faults:,} of {r.touched:,} touches were major, {per_major} read each"
            if r.major_faults >= 0.9 * r.touched:
                why += ": each touch read its own window (read-around)"
        mapped = f"{r.per_fault:,.0f} pages mapped per fault; folios met: {folio_text(r.folios)}"
        largest = max(r.folios) if isinstance(r.folios, Counter) and r.folios else None
        if largest and largest > sizes.fault_around and r.per_fault > sizes.fault_around:
            mapped += " -> large folios, built by that running readahead, mapped whole"
        elif largest == 1:
            mapped += " -> fault-around only (read-around leaves small folios)"
        elif largest is None and r.per_fault <= sizes.fault_around:
            mapped += " -> no more than fault-around's pages per fault (folio sizes unknown here)"
        elif largest is None:
            mapped += " -> more than fault-around maps: large folios mapped whole"
        lines.append(f"{head}\n    {why}; {mapped}")
    return lines


def explain_reach(
    reach: dict[str, tuple[int, int]], file_pages: int, sizes: Sizes, io_pages: int | None
) -> list[str]:
    """What each hint had cached before the first touch (``lazy.hint_reach``), in words;
    ``io_pages`` is the device's largest I/O in pages (``lazy.io_cap_pages``)."""
    lines = []
    for name, (at_once, settled) in reach.items():
        share = 100 * settled / file_pages
        line = (
            f"{name}: before any touch, {at_once:,} pages cached as mmap returned, {settled:,} "
            f"({share:.3g}% of the file) once its reads finished"
        )
        if name == "willneed" and settled < file_pages / 2:
            line += (
                ": MADV_WILLNEED did not read the range; the kernel starts at most "
                "max(read_ahead_kb, the device's largest I/O: max_sectors_kb) per call"
            )
            if sizes.readahead and io_pages:
                kib = (sizes.readahead * PAGE // 1024, io_pages * PAGE // 1024)
                cap = max(sizes.readahead, io_pages)
                line += (
                    f", here max({kib[0]:,} KiB, {kib[1]:,} KiB) = {format_size(cap * PAGE)} "
                    f"= {cap:,} pages"
                )
            line += "; the rest is read only when touched"
        lines.append(line)
    return lines


def explain_hints(result, none: str = "none") -> list[str]:
    """What a comparison of madvise hints shows, from its medians, against the no-hint row."""
    base = result[none]
    lines = []
    for row in result.rows:
        if row.name == none:
            continue
        speed = result.relative(row.name, none)  # per round: > 1 means faster
        # its time / no hint's per round, over the spread that decides "clear": the IQR, or
        # every round when there are few (Spread.side)
        few = len(speed.samples) < FEW_ROUNDS
        fast, slow = (speed.max, speed.min) if few else (speed.q3, speed.q1)
        what = "all" if few else "middle half of the"
        spread = f"[{1 / fast:.3g}x-{1 / slow:.3g}x, {what} {len(speed.samples)} rounds]"
        if speed.side(1.0) == 0:
            pace = f"no clear difference in time from no hint {spread}"
        else:
            pace = f"took {1 / speed.median:.3g}x as long as no hint {spread}"
        if row.storage_bytes is None or base.storage_bytes is None:
            read = f"read {read_text(None)}"
        else:
            share = row.storage_bytes / max(base.storage_bytes, 1)
            read = f"read {format_size(row.storage_bytes)} ({share:.2g}x no hint's)"
        line = (
            f"{row.name}: {row.major_faults:,} major + {row.minor_faults:,} minor faults, "
            f"{read}: {pace}"
        )
        per = read_text(None if row.storage_bytes is None else
                        row.storage_bytes // max(row.major_faults, 1))  # fmt: skip
        if row.major_faults > 4 * max(base.major_faults, 1):
            line += (
                f".\n    {row.major_faults:,} reads of {per}, each waited for in its own fault, "
                f"against no hint's {base.major_faults:,} major fault(s) and "
                f"{read_text(base.storage_bytes)} read in all"
            )
        elif (
            row.storage_bytes is not None
            and base.storage_bytes is not None
            and (0.9 < row.storage_bytes / max(base.storage_bytes, 1) < 1.1)
            and row.major_faults <= 2 * max(base.major_faults, 1)
        ):
            line += ".\n    About the same bytes and major faults as no hint"
        lines.append(line)
    return lines


def explain_first(mapping, touched, mapped_bytes: int, file_bytes: int) -> list[str]:
    """Section 1 in words: what the touches read and mapped, and whether that was lazy here."""
    if touched.read_bytes is None or mapping.read_bytes is None:
        why = touched.unavailable.get("read_bytes", "no /proc/self/io")
        return [f"bytes read from storage are unknown here ({why}): only faults and RSS show"]
    if touched.major_faults == 0 or touched.read_bytes == 0:
        return [
            f"not checked here: the cold touches took {touched.major_faults} major fault(s) and "
            f"read {format_size(touched.read_bytes)} from storage, so the file was not cold (on "
            "tmpfs, or eviction failed) or this file system's reads are not counted (FUSE, "
            "network file systems): mmlab doctor says which"
        ]
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


def explain_random(live, quiet, touched_pages: int, sizes: Sizes) -> list[str]:
    """Section 4 in words: the live view's fault counts against a quiet run's, and what the
    quiet run's faults mapped (two ``Watch`` es)."""
    t = quiet.totals
    faults = t.major_faults + t.minor_faults
    per_fault = t.rss / PAGE / max(faults, 1)
    ratio = live.totals.minor_faults / max(t.minor_faults, 1)
    if per_fault > sizes.fault_around * 1.5:
        what = "more than fault-around maps: large folios, mapped whole"
    elif per_fault > 1.5:
        what = f"about fault-around's {sizes.fault_around} pages: fault-around, not large folios"
    else:
        what = "about one page each"
    share = "most" if t.major_faults < t.minor_faults else "few"
    return [
        f"minor faults with the live view / without: {ratio:.2f}",
        f"RSS grew {t.rss / (touched_pages * PAGE):,.1f}x the bytes touched: "
        f"{format_size(t.rss)} over {faults:,} faults = {per_fault:,.1f} pages mapped per fault"
        f" ({what})",
        f"{t.major_faults:,} of {faults:,} faults were major: {share} touches found their page "
        "already read by an earlier fault's window",
    ]


def claim_lazy(
    mapping, touched, mapped_bytes: int, file_bytes: int, touches: int
) -> tuple[str, str]:
    """The claims table's sentences for "lazy loading": (measured, verdict), from section 1's
    two ``Measurement`` s (the mapping, ``touches`` pages touched) and the bytes they mapped."""
    if touched.read_bytes is None or mapping.read_bytes is None or not touched.read_bytes:
        return explain_first(mapping, touched, mapped_bytes, file_bytes)[0], "not checked here"
    share = touched.read_bytes / file_bytes
    per_major = touched.read_bytes / max(touched.major_faults, 1)
    faults = touched.minor_faults + touched.major_faults
    measured = (
        f"mapping {format_size(file_bytes)}: {mapping.wall_s * 1e3:.2f} ms, "
        f"{mapping.minor_faults + mapping.major_faults} faults, {format_size(mapping.read_bytes)}"
        f" read; touching {touches} pages cold: {faults} faults, "
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


def claim_faults(cold: Touch, rows: Sequence[StrideRow], sizes: Sizes) -> tuple[str, str]:
    """The claims table's sentences for "page faults decide what loads": (measured, verdict).

    What one minor fault mapped is taken from the strides whose faults were mostly minor.
    """
    dense, sparse = rows[0], rows[-1]
    minor = [r for r in rows if r.minor_faults > r.major_faults] or list(rows)
    most = max(r.per_fault for r in minor)
    largest = max(
        (max(r.folios) for r in minor if isinstance(r.folios, Counter) and r.folios), default=None
    )
    if most > sizes.fault_around and (largest is None or largest > sizes.fault_around):
        how = "large folios built by readahead, mapped whole"
    else:
        how = f"fault-around, up to {sizes.fault_around} pages"

    def shares(r: StrideRow) -> str:
        read = "?" if r.read_bytes is None else f"{100 * r.fraction('read'):.3g}"
        return f"{r.faults:,} faults, {read}% read, {100 * r.fraction('mapped'):.3g}% mapped"

    measured = (
        f"one cold touch: {cold.major_faults} major fault, {read_text(cold.read_bytes)} "
        f"read, {cold.cached:,} pages cached, {cold.mapped_pages} mapped; every "
        f"{dense.stride}th page: {shares(dense)}; every {sparse.stride:,}th: {shares(sparse)}"
    )
    verdict = (
        f"true, but one fault decides for many pages: a cold fault read {cold.cached:,} pages "
        f"(readahead) and a mostly-minor-fault stride mapped {most:,.0f} pages per fault "
        f"({how}); touching {100 * dense.fraction('touched'):.2g}% of the pages mapped "
        f"{100 * dense.fraction('mapped'):.0f}% of the file"
    )
    return measured, verdict
