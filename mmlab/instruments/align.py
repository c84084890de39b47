"""Page alignment: why mmap wants page-aligned offsets, and how to map any byte range anyway.

The kernel maps whole pages. So ``mmap``'s ``offset`` must be a multiple of the allocation
granularity (the page size on Linux and macOS, 64 KiB on Windows) or the call fails with
EINVAL, and a mapping always covers whole pages: the last page of a file that is not a
multiple of the page size is partly waste. ``map_range`` maps from the aligned offset below
the one asked for and returns a view of exactly the asked range.
"""

from __future__ import annotations

import mmap
import os

__all__ = [
    "align_down",
    "align_up",
    "allocation_granularity",
    "map_range",
    "page_size",
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
