"""Why notebook 03's predictions came out as they did: the reveal's reason, from this run.

A prediction is revealed beside its measurement (``mmlab.predict``), with a reason. The
reason must come from this run's numbers and the machine sizes that decide them (readahead
window, fault-around, large folios), and must read true on a server with 8 MiB of readahead
and on a laptop with 128 KiB: so each function here words what was measured, names the size
that decided it, and says what the other kind of machine does. Where a number could not be
measured here (reads not counted on this file system, sizes unknown), the reason says so
instead of guessing. ``mmlab.course.lazyexplain`` holds the longer printouts these build on.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmlab.course import lazy
from mmlab.course.lazy import PAGE, Sizes, StrideRow, Touch, _pages, read_counted, read_text
from mmlab.course.lazyexplain import explain_first, explain_random
from mmlab.instruments.facts import format_size

__all__ = ["why_cold_mapped", "why_fault_kind", "why_fewest", "why_first_read", "why_lazy_stride"]


def why_first_read(mapping, touched, mapped_bytes: int, file_bytes: int, sizes: Sizes) -> str:
    """Section 1's reveal: what the cold touches read, per major fault, against the window."""
    lines = [line.rstrip(".") for line in explain_first(mapping, touched, mapped_bytes, file_bytes)]
    return "; ".join(lines) + (
        f". A major fault reads a readahead window around its page, not the page: "
        f"{sizes.window_text()}; with read_ahead_kb 128 (many laptops) each far-apart touch "
        f"would read at most about {_pages(lazy.LAPTOP_WINDOW)}"
    )


def why_cold_mapped(cold: Touch, sizes: Sizes) -> str:
    """Section 2's reveal: the pages one cold fault mapped, beside the pages it left cached."""
    around = sizes.fault_around
    if cold.mapped_pages > around:
        how = f"more than fault-around's {around}: the page sat in a large folio, mapped whole"
    elif cold.mapped_pages > 1:
        how = (
            "the fault slept until its own page was read, then was retried, and the retry "
            f"mapped the neighbours already read at that moment, within one aligned fault-around "
            f"window (up to {around} pages)"
        )
    else:
        how = (
            "only its own page: when the fault was retried after the read, no neighbour in its "
            f"fault-around window (up to {around} pages) was read yet"
        )
    ra = sizes.readahead
    ratio = f"{cold.cached / ra:.2g}x the window, " if ra else ""
    return (
        f"the cold fault mapped {_pages(cold.mapped_pages)}: {how}. It read "
        f"{read_text(cold.read_bytes)} and left {cold.cached:,} pages cached ({ratio}"
        f"{sizes.window_text()}): the rest are cached, not mapped, until touched. What one fault "
        f"maps is bounded by fault-around ({around} pages here) or a folio, not by readahead: "
        f"with read_ahead_kb 128 (many laptops) it caches about {lazy.LAPTOP_WINDOW} pages and "
        "still maps at most a fault-around window of them"
    )


def why_lazy_stride(rows: Sequence[StrideRow], sizes: Sizes) -> str:
    """Section 3's reveal: where the share read fell, against the readahead window."""
    first, window = lazy.first_lazy_stride(rows), sizes.window
    if first is None:
        return (
            f"bytes read from storage are not counted here ({read_text(None)}), so this run "
            "cannot say where reading stopped covering the file; the mapped share (figure) and "
            f"the faults still show. {sizes.window_text()}"
        )
    shares = ", ".join(f"{r.stride:,}: {100 * r.fraction('read'):.0f}%" for r in rows)
    text = f"share of the file read per stride: {shares}; {sizes.window_text()}"
    if not window:
        return text
    text += (
        f": touches closer than that leave no gap the windows do not cover, so a stride under "
        f"{window:,} pages reads the whole file, and a wider one as little as window / stride"
    )
    if isinstance(first, str):
        return text + f"; even the widest stride here ({rows[-1].stride:,}) did not read less"
    text += f"; the first stride to read under 90% was {first:,}: {first / window:.2g}x the window"
    if first > 2 * window:
        text += ". Wider strides still read it all: in-order touches that land in the part "
        text += "marked for reading ahead keep readahead running"
    return text


def why_fault_kind(watch, touched_pages: int, file_pages: int, sizes: Sizes) -> str:
    """Section 4's reveal: why a cold random run's faults (a ``Watch``) were major or minor."""
    t = watch.totals
    read = read_counted(t)
    if read is None:
        storage = f"The run read {read_text(None)}"
    else:
        storage = (
            f"The run read {format_size(read)}, {100 * read / (file_pages * PAGE):.0f}% of the "
            f"file, {format_size(read // max(t.major_faults, 1))} per major fault"
        )
    return (
        f"{explain_random(watch, watch, touched_pages, sizes)[2]}. {storage} "
        f"({sizes.window_text()}); a touch on a page an earlier fault had already mapped "
        "(fault-around, a folio) took no fault at all. The fewer pages one window holds "
        "against the file, the more faults are major"
    )


def why_fewest(result, stride: int, sizes: Sizes) -> str:
    """Section 5's reveal: the bytes each hint read for every ``stride``-th page, and why."""
    read = ", ".join(f"{r.name}: {read_text(r.storage_bytes)}" for r in result.rows)
    name = lazy.fewest_bytes(result)
    if name is None:
        return (
            f"read from storage (median): {read}. Reads are not counted on this file system, "
            "so this run cannot say which hint read the fewest bytes"
        )
    fewest = result[name]
    per = format_size(fewest.storage_bytes // max(fewest.major_faults, 1))
    if name != "random":
        return f"read from storage (median): {read}. {name} read the fewest, {per} a fault"
    others = min(r.storage_bytes for r in result.rows if r.name != "random")
    text = (
        f"read from storage (median): {read}. MADV_RANDOM turns readahead off: each of its "
        f"{fewest.major_faults:,} major faults read {per}, only the page touched, 1 in {stride}"
    )
    if sizes.window and sizes.window > stride:
        text += f"; every other way read {format_size(others)} or more: its windows (up to "
        text += f"{_pages(sizes.window)}) are wider than the {stride}-page gaps and cover them"
    return text
