"""Point an existing memory range at another part of a file, so old numpy views follow moved data.

When a store grows, its sections move to new offsets in a new file. A numpy view a user took
earlier still points into an old mapping. Rather than let it show stale values, we map the new
file's section over the same virtual addresses with ``MAP_FIXED``: the view keeps its address
and now reads and writes the section where it lives now. Python's ``mmap`` module has no
``MAP_FIXED``, so this goes through libc with ctypes (POSIX only).

``Followers`` keeps every old mapping that a user view still holds, however many growths ago
it was retired, and re-points all of them at each move. It holds them weakly: when the last
view of one dies, Python unmaps it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import weakref

import numpy as np

from mmlab.store.format import Layout

__all__ = ["Followers", "address_of", "map_over", "private_bytes", "supported"]

_MAP_FIXED = 0x10  # the same value on Linux and macOS
_MAP_FAILED = ctypes.c_void_p(-1).value

_libc = None
if os.name == "posix":
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _libc.mmap.restype = ctypes.c_void_p
    _libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int64,
    ]


def supported() -> bool:
    """Whether views can be carried across a remap on this platform."""
    return _libc is not None


def address_of(buffer: mmap.mmap) -> int:
    """The address of the first byte of a mapping (read-only ones too)."""
    return np.frombuffer(buffer, dtype=np.uint8, count=1).ctypes.data


def map_over(
    address: int, length: int, fd: int, offset: int, *, writable: bool, private: bool = False
) -> None:
    """Map ``length`` bytes of ``fd`` at ``offset`` onto ``address``, replacing what was there."""
    if _libc is None:
        raise OSError("MAP_FIXED remapping needs a POSIX libc")
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    flags = (mmap.MAP_PRIVATE if private else mmap.MAP_SHARED) | _MAP_FIXED
    result = _libc.mmap(address, length, prot, flags, fd, offset)
    if result in (None, _MAP_FAILED) or result != address:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap(MAP_FIXED) failed: {os.strerror(err)}")


def private_bytes(address: int, length: int) -> int | None:
    """Bytes of ``[address, address + length)`` copied on write (``Anonymous`` in smaps).

    None where the OS does not say (no ``/proc/self/smaps``).
    """
    try:
        with open("/proc/self/smaps", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    end, total, inside = address + length, 0, False
    for line in lines:
        head = line.split(b" ", 1)[0]
        if b"-" in head and not head.endswith(b":"):
            start, stop = (int(x, 16) for x in head.split(b"-"))
            inside = start < end and address < stop
        elif inside and head == b"Anonymous:":
            total += int(line.split()[1]) * 1024
    return total


class Followers:
    """Old mappings that user views still hold, re-pointed at the store's file at each move."""

    def __init__(self) -> None:
        self._held: list[tuple[weakref.ref[mmap.mmap], Layout]] = []

    def retire(self, mm: mmap.mmap, layout: Layout) -> None:
        """Keep ``mm`` (laid out as ``layout``) following the store while views hold it."""
        self._held.append((weakref.ref(mm), layout))

    def alive(self) -> list[tuple[mmap.mmap, Layout]]:
        self._held = [(ref, layout) for ref, layout in self._held if ref() is not None]
        return [(mm, layout) for ref, layout in self._held if (mm := ref()) is not None]

    def repoint(self, fd: int, layout: Layout, *, writable: bool, private: bool) -> None:
        """Map each held mapping's sections onto the same sections of ``fd`` (``layout``).

        Every held layout must fit in ``layout`` (``layout.holds``) and be page-aligned.
        """
        for mm, old in self.alive():
            base = address_of(mm)
            for (old_off, length), (new_off, _) in zip(
                old.mapped_extents(), layout.mapped_extents(), strict=True
            ):
                map_over(base + old_off, length, fd, new_off, writable=writable, private=private)

    def private_bytes(self) -> int | None:
        """Bytes copied on write in all held mappings; None where the OS does not say."""
        sizes = [private_bytes(address_of(mm), len(mm)) for mm, _ in self.alive()]
        return None if None in sizes else sum(sizes)

    def forget(self) -> None:
        """Stop following: each held mapping is unmapped when its last view dies."""
        self._held.clear()
