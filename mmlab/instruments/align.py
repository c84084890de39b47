"""Page alignment: why mmap wants page-aligned offsets, and how to map any byte range anyway.

The kernel maps whole pages. So ``mmap``'s ``offset`` must be a multiple of the allocation
granularity (the page size on Linux and macOS, 64 KiB on Windows) or the call fails with
EINVAL, and a mapping always covers whole pages: the last page of a file that is not a
multiple of the page size is partly waste. ``map_range`` maps from the aligned offset below
the one asked for and returns a view of exactly the asked range. ``plot_sections`` draws a
file laid out in aligned sections, with a zoom on the padding one boundary leaves.
"""

from __future__ import annotations

import mmap
import os
import warnings
from dataclasses import dataclass
from itertools import pairwise

__all__ = [
    "TailCost",
    "align_down",
    "align_up",
    "alignment_claim",
    "allocation_granularity",
    "describe_padding",
    "map_range",
    "padding_after",
    "padding_side",
    "page_size",
    "plot_sections",
    "sorted_offsets",
    "tail_cost",
    "tail_side",
    "tail_waste",
    "why_offsets",
    "why_padding",
    "why_tail",
]


def page_size() -> int:
    """The size of one page of memory, in bytes."""
    return mmap.PAGESIZE


def allocation_granularity() -> int:
    """What mmap offsets must be a multiple of, in bytes."""
    return mmap.ALLOCATIONGRANULARITY


def align_down(offset: int, alignment: int | None = None) -> int:
    """The largest multiple of ``alignment`` (default: the granularity) not above ``offset``."""
    alignment = alignment or allocation_granularity()
    if offset < 0:
        raise ValueError(f"offset must not be negative, got {offset}")
    return offset - offset % alignment


def align_up(offset: int, alignment: int | None = None) -> int:
    """The smallest multiple of ``alignment`` (default: the granularity) not below ``offset``."""
    alignment = alignment or allocation_granularity()
    return align_down(offset + alignment - 1, alignment)


def tail_waste(size: int, alignment: int | None = None) -> int:
    """Bytes of the last page a file of ``size`` bytes leaves unused when mapped."""
    alignment = alignment or page_size()
    if size < 0:
        raise ValueError(f"size must not be negative, got {size}")
    return -size % alignment


def map_range(
    path: str | os.PathLike[str], offset: int, length: int, *, writable: bool = False
) -> memoryview:
    """Map ``length`` bytes of a file from any ``offset``, aligned or not; returns a view.

    The mapping starts at the aligned offset below ``offset``; the view holds it open until
    the view is released (``view.release()`` or when it is garbage-collected).
    """
    if offset < 0 or length < 0:
        raise ValueError(f"offset and length must not be negative, got {offset} and {length}")
    with open(path, "r+b" if writable else "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if offset + length > size:
            raise ValueError(
                f"range [{offset}, {offset + length}) runs past the end of {path} ({size} bytes)"
            )
        if length == 0:
            return memoryview(b"")
        start = align_down(offset)
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        mapping = mmap.mmap(f.fileno(), offset + length - start, access=access, offset=start)
    view = memoryview(mapping)[offset - start : offset - start + length]
    return view


def padding_after(sections: dict[str, tuple[int, int]], name: str, nbytes: int) -> int:
    """Bytes between the end of section ``name`` and the next section (or the file's end,
    ``nbytes``): its last page's unused part and any whole pages of padding after it."""
    offset, size = sections[name]
    starts = [o for o, _ in sections.values() if o >= offset + size]
    return min(starts, default=nbytes) - (offset + size)


def describe_padding(
    sections: dict[str, tuple[int, int]], name: str, nbytes: int, read_ahead_kb: int | None
) -> str:
    """The padding after section ``name`` against its size, the bytes outside any section, and
    how far past the section readahead may reach: with ``read()`` (up to ``read_ahead_kb``
    ahead of what is read) and with a fault in a mapping (a read-around window of
    ``read_ahead_kb`` centred on the faulting page: about half before it, half after)."""
    (at, size), pad = sections[name], padding_after(sections, name, nbytes)
    outside = nbytes - sum(s for _, s in sections.values())
    side = "more" if pad > size else "less"
    lines = [
        f"padding after {name}: {pad:,} B = {pad / size:.2%} of the field ({size:,} B): "
        f"{side} than the field itself",
        f"outside any section (headers and padding): {outside:,} of {nbytes:,} B "
        f"({outside / nbytes:.1%})",
    ]
    if read_ahead_kb is None:
        return "\n".join(
            [*lines, "read_ahead_kb is unknown here: how far readahead reaches cannot be said"]
        )
    stride = min((o for o, _ in sections.values() if o > at), default=nbytes) - at
    rest = nbytes - (at + size)
    # upper bounds: a read() reads ahead only from the file's start, sequentially, or when
    # larger than the window; a lone read() of a field in the middle reads just the field.
    # A fault reads a window around the faulting page by default (half of it after).
    reach = {
        "read() of it": (read_ahead_kb * 1024, "when read sequentially or from the file's start"),
        "a fault in a mapping of it": (read_ahead_kb * 512, "by default (half a window after)"),
    }
    for how, (ahead, when) in reach.items():
        whole = ": all the rest of this file" if ahead >= rest else ""
        lines.append(
            f"read_ahead_kb {read_ahead_kb:,}: {how} may bring up to {ahead / stride:.1f} "
            f"sections' worth ({stride:,} B apart) after the part read into the page cache, "
            f"{when}{whole}"
        )
    lines.append(
        "(upper bounds: one read() of a field in the middle of the file, on its own, reads "
        "just that field; the kernel reads ahead once reads look sequential)"
    )
    return "\n".join(lines)


def sorted_offsets(offsets) -> list[int] | None:
    """Offsets as a sorted list (a prediction written as a set or in any order compares
    equal to the measured list); ``None`` stays ``None`` (no prediction)."""
    return None if offsets is None else sorted(int(o) for o in offsets)


def why_offsets(outcomes: dict[int, str], granularity: int) -> str:
    """Why ``mmap`` accepted some offsets and refused others (``outcomes``: offset ->
    ``"accepted"`` or ``"refused: EINVAL (...)"``), from this machine's granularity."""
    accepted = [o for o, outcome in outcomes.items() if outcome == "accepted"]
    refused = {o: outcome.split()[1] for o, outcome in outcomes.items() if o not in accepted}
    errors = sorted(set(refused.values()))
    text = (
        f"the kernel maps whole pages, so an offset must be a multiple of the allocation "
        f"granularity: {granularity:,} bytes here (mmap.ALLOCATIONGRANULARITY: the page size "
        f"on Linux and macOS, 64 KiB on Windows). Accepted: {', '.join(map(str, accepted))}"
    )
    if refused:
        text += f"; refused with {' or '.join(errors)}: {', '.join(map(str, refused))}"
    # the same offsets on a machine of the other common granularity
    other, machine = (
        (4096, "4 KiB pages (x86)")
        if granularity != 4096
        else (16384, "16 KiB pages (Apple silicon)")
    )
    passing = [o for o in outcomes if o % other == 0]
    only = "only " if len(passing) == 1 else ""
    return text + f". With {machine}, {only}{', '.join(map(str, passing))} would pass."


def padding_side(sections: dict[str, tuple[int, int]], name: str, nbytes: int) -> str:
    """``"more"`` if the padding after section ``name`` is larger than the section, else
    ``"less"`` (``"the same"`` if equal)."""
    pad, size = padding_after(sections, name, nbytes), sections[name][1]
    return "more" if pad > size else "less" if pad < size else "the same"


def why_padding(
    sections: dict[str, tuple[int, int]], name: str, nbytes: int, alignment: int = 65536
) -> str:
    """Why the padding after section ``name`` is more or less than the section: it fills
    the section's end up to the next multiple of ``alignment``, whatever the page size."""
    (at, size), pad = sections[name], padding_after(sections, name, nbytes)
    end = at + size
    rule = (
        f"it is more than the section only while the section fills less than half of one "
        f"{alignment // 1024} KiB unit (under {alignment // 2:,} B)"
    )
    return (
        f"{name} holds {size:,} B and ends at {end:,}; the next section starts at the next "
        f"multiple of {alignment // 1024} KiB ({alignment:,} B, fixed by the store's format, "
        f"not by this machine's {page_size():,}-byte pages), {end + pad:,}: {pad:,} B of "
        f"padding, {pad / size:.2%} of the section. The padding is always under "
        f"{alignment // 1024} KiB, so {rule}."
    )


def tail_side(tail: TailCost) -> str | None:
    """Which way of reading left more of the file's pages in the page cache: ``"read"``,
    ``"mmap"``, ``"same"`` (as many), or ``None`` where this process cannot count them."""
    r, m = tail.cached_after_read, tail.cached_after_mmap
    if r is None or m is None:
        return None
    return "same" if r == m else "read" if r > m else "mmap"


def why_tail(tail: TailCost) -> str:
    """Why the page cache held what it held of a small file after ``read()`` and after a
    touch of a mapping, from this run's counts and the page size."""
    page = page_size()
    pages = -(-tail.size // page)
    if tail_side(tail) is None:
        return (
            f"this process cannot count the file's cached pages ({tail.why}), so the run "
            f"cannot show it; the page cache holds whole pages of {page:,} bytes either way"
        )
    return (
        f"the page cache holds whole pages of {page:,} bytes, and a {tail.size:,}-byte file "
        f"has {pages} of them, so read() and a touch of a mapping both bring in that page "
        f"({tail.cached_after_read} after read(), {tail.cached_after_mmap} after mmap): "
        f"{tail_waste(tail.size):,} of its bytes past the file's end, with either way of "
        f"reading (readahead has no further page to read). "
        + _disk_words(tail.disk_bytes, tail.size)
    )


def _disk_words(disk: int, size: int) -> str:
    """What ``st_blocks`` said the file takes on disk, in words from its value."""
    if disk == 0:
        return f"On disk its {size:,} bytes take no block (st_blocks 0): they live in its inode."
    kind = "more than" if disk > size else "no more than"
    return (
        f"On disk it takes {disk:,} bytes (st_blocks), {kind} its {size:,}: file systems "
        "allocate blocks, not bytes (compression or inline storage can take less)."
    )


@dataclass(frozen=True)
class TailCost:
    """What a small file costs, read with ``read()`` and then mapped: its bytes on disk
    (``st_blocks``), and its pages in the page cache after each (evicted before each), or
    ``None`` with ``why`` where this process cannot count them."""

    size: int
    disk_bytes: int
    cached_after_read: int | None
    cached_after_mmap: int | None
    why: str = ""

    @property
    def cached(self) -> str:
        """The cached pages after each way of reading, in words."""
        if self.cached_after_read is None or self.cached_after_mmap is None:
            return f"its cached pages cannot be counted here ({self.why})"
        return (
            f"{self.cached_after_read} page(s) of {page_size():,} bytes in the page cache after "
            f"read(), {self.cached_after_mmap} after mmap and a touch"
        )

    def __str__(self) -> str:
        return f"a {self.size:,}-byte file: {self.disk_bytes:,} bytes on disk; {self.cached}"


def tail_cost(path: str | os.PathLike[str]) -> TailCost:
    """Read ``path`` whole with ``read()``, then map it and touch its first byte, evicting
    it from the page cache before each, and count its cached pages after each."""
    from mmlab.instruments import pagecache

    def cached_after(load) -> int:
        if pagecache.evict(path).resident_after is None:
            raise pagecache.PageCacheHiddenError("the kernel hides this file's page cache")
        with open(path, "rb") as f:
            load(f)
            return int(pagecache.residency(path).sum())

    def mapped(f) -> None:
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            m.read(1)  # the touch that faults the page in

    st = os.stat(path)
    try:
        with warnings.catch_warnings():  # tmpfs cannot evict: counted as cached, as it is
            warnings.simplefilter("ignore", pagecache.EvictionWarning)
            by_read, by_mmap = cached_after(lambda f: f.read()), cached_after(mapped)
    except OSError as exc:  # no posix_fadvise or mincore, or a hidden page cache
        return TailCost(st.st_size, st.st_blocks * 512, None, None, str(exc))
    return TailCost(st.st_size, st.st_blocks * 512, by_read, by_mmap)


def alignment_claim(outcomes: dict[int, str], granularity: int, tail: TailCost) -> dict:
    """The blog's claim on alignment and waste, judged from this run: the offsets ``mmap``
    refused (``outcomes`` as for ``why_offsets``) and the small file's ``tail``. Returns
    ``measured`` and ``verdict`` for ``mmlab.results.claim``."""
    page, gb = page_size(), 10**9
    refused = ", ".join(f"{o} ({r.split()[1]})" for o, r in outcomes.items() if r != "accepted")
    measured = (
        f"offsets {refused or 'none'} refused (granularity {granularity:,}); the last page "
        f"wastes at most {page - 1:,} bytes: {tail_waste(gb) / (gb + tail_waste(gb)):.1e} of a "
        f"1 GB file's mapping, {tail_waste(100) / page:.0%} of a 100-byte file's, which had "
        f"{tail.cached}, and {tail.disk_bytes:,} bytes on disk"
    )
    side = tail_side(tail)
    spent = {
        "same": "that page of cache and block of disk are spent with read() too",
        None: "read() needs whole pages of cache too (not counted here)",
    }.get(side, f"here read() left {tail.cached_after_read} cached, mmap {tail.cached_after_mmap}")
    verdict = (
        "partly true: offsets must be multiples of the granularity, and a size that is not a "
        f"multiple of the page leaves part of one page unused; but {spent}: mmap adds only "
        "address space (and bytes past the end that read as zeros and are not saved)"
    )
    return {"measured": measured, "verdict": verdict}


def _largest_gap(sections: dict[str, tuple[int, int]]) -> tuple[str, int, int]:
    """The section followed by the most padding: (its name, where it ends, where the next
    section, or nothing, starts)."""
    spans = sorted((offset, offset + size, name) for name, (offset, size) in sections.items())
    gaps = [(nxt[0] - end, name, end, nxt[0]) for (_, end, name), nxt in pairwise(spans)]
    if not gaps:
        raise ValueError("need two sections or more to show a boundary between them")
    _, name, end, start = max(gaps)
    return name, end, start


def plot_sections(
    sections: dict[str, tuple[int, int]],
    nbytes: int,
    *,
    title: str = "",
    alignment: int = 65536,
    axes=None,
):
    """A file's sections (``{name: (offset, size)}``) along its bytes, and below a zoom on
    the boundary with the most padding: the section's last pages, the padding up to the
    next ``alignment`` boundary, and where the next section starts, with page lines.

    Returns the two axes (whole file, zoom). Needs matplotlib.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(2, 1, figsize=(10, 5), gridspec_kw={"height_ratios": [1.3, 1]})
    whole, zoom = axes
    page, kib = page_size(), 1024
    colours = {name: f"C{k % 10}" for k, name in enumerate(sections)}
    for ax in axes:
        ax.barh(0, nbytes / kib, left=0, color="0.85", lw=0)  # grey only where no section is
        for name, (offset, size) in sections.items():
            ax.barh(0, size / kib, left=offset / kib, color=colours[name], edgecolor="white")
        ax.set_yticks([])
    name, end, start = _largest_gap(sections)
    low = max(0, end - 4 * page)
    high = start + 2 * page
    for x in range(low - low % page, high + 1, page):
        zoom.axvline(x / kib, color="white", lw=0.8)
    zoom.set(xlim=(low / kib, high / kib), ylim=(-0.5, 1.0))
    zoom.axvline(start / kib, color="k", lw=1.5, ls="--")
    after = next((n for n, (o, _) in sections.items() if o == start), None)
    zoom.text((low + end) / 2 / kib, 0, f"{name}\n(its last pages)", ha="center", va="center")
    # above the bars, between arrows marking the padding; the label ends at the dashed line,
    # since the padding can be narrower than its label
    zoom.annotate("", (end / kib, 0.55), (start / kib, 0.55), arrowprops={"arrowstyle": "<->"})
    zoom.text(start / kib, 0.65, f"padding after {name}: {start - end:,} bytes ", ha="right",
              va="bottom")  # fmt: skip
    if after:
        zoom.text((start + high) / 2 / kib, 0, after, ha="center", va="center")
    zoom.set_xlabel(
        f"offset in the file (KiB); white lines: {page // kib} KiB pages; dashed: "
        f"{after or 'the end of the file'} at {start:,} = {start // alignment} x "
        f"{alignment // kib} KiB"
    )
    whole.set_xlim(0, nbytes / kib)
    whole.set_xlabel("offset in the file (KiB); grey: outside any section (headers, padding)")
    # the zoom can be a few KiB of a file of megabytes: the box is drawn at least 2% wide
    middle, width = (low + high) / 2, max(high - low, nbytes / 50)
    box = ((middle - width / 2) / kib, (middle + width / 2) / kib)
    whole.axvspan(*box, ymin=0.02, ymax=0.98, fill=False, edgecolor="k", lw=2)
    whole.text(box[1], 0.5, " zoom", va="center", ha="left", fontsize=9)
    whole.set_ylim(-0.5, 0.7)
    whole.set_title(title or "sections of the file; the box is the zoom below", fontsize=10)
    width_points = whole.get_position().width * whole.figure.get_figwidth() * 72
    starts = sorted([o for o, _ in sections.values()] + [nbytes])
    for n, (offset, _) in sections.items():
        room = min(s for s in starts if s > offset) - offset  # up to the next section
        if room / nbytes * width_points >= 10:  # room for a line of 8-point text
            whole.text((offset + room / 2) / kib, 0, n, ha="center", va="center", fontsize=8,
                       rotation=90)  # fmt: skip
    return axes
