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
from itertools import pairwise

__all__ = [
    "align_down",
    "align_up",
    "allocation_granularity",
    "map_range",
    "page_size",
    "plot_sections",
    "tail_waste",
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
        _, axes = plt.subplots(2, 1, figsize=(10, 4.2), gridspec_kw={"height_ratios": [1, 1.3]})
    whole, zoom = axes
    page, kib = page_size(), 1024
    colours = {name: f"C{k % 10}" for k, name in enumerate(sections)}
    for ax in axes:
        ax.axvspan(0, nbytes / kib, color="0.85", lw=0)
        for name, (offset, size) in sections.items():
            ax.barh(0, size / kib, left=offset / kib, color=colours[name], edgecolor="white")
        ax.set_yticks([])
    name, end, start = _largest_gap(sections)
    low = max(0, end - 4 * page)
    high = start + 2 * page
    for x in range(low - low % page, high + 1, page):
        zoom.axvline(x / kib, color="white", lw=0.8)
    zoom.set(xlim=(low / kib, high / kib), ylim=(-0.5, 0.8))
    zoom.axvline(start / kib, color="k", lw=1.5, ls="--")
    after = next((n for n, (o, _) in sections.items() if o == start), None)
    zoom.text((low + end) / 2 / kib, 0, f"{name}\n(its last pages)", ha="center", va="center")
    # above the bars: the padding can be narrower than its label
    zoom.text((end + start) / 2 / kib, 0.45, f"padding: {start - end:,} bytes", ha="center",
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
    whole.axvspan(low / kib, high / kib, ymin=0, ymax=1, fill=False, edgecolor="k", lw=1.2)
    whole.set_title(title or "sections of the file; the box is the zoom below", fontsize=10)
    for n, (offset, size) in sections.items():
        whole.text((offset + size / 2) / kib, 0, n, ha="center", va="center", fontsize=6,
                   rotation=90)  # fmt: skip
    return axes
