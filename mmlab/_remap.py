"""Point an existing memory range at another part of a file, so old numpy views follow moved data.

When a store grows, its sections move to new offsets in a new file. A numpy view a user took
earlier still points into the old mapping. Rather than let it show stale values, we map the new
file's section over the same virtual addresses with ``MAP_FIXED``: the view keeps its address
and now reads and writes the section where it lives now. Python's ``mmap`` module has no
``MAP_FIXED``, so this goes through libc with ctypes (POSIX only).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os

import numpy as np

__all__ = ["address_of", "map_over", "supported"]

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


def map_over(address: int, length: int, fd: int, offset: int, *, writable: bool) -> None:
    """Map ``length`` bytes of ``fd`` at ``offset`` onto ``address``, replacing what was there."""
    if _libc is None:
        raise OSError("MAP_FIXED remapping needs a POSIX libc")
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    result = _libc.mmap(address, length, prot, mmap.MAP_SHARED | _MAP_FIXED, fd, offset)
    if result in (None, _MAP_FAILED) or result != address:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap(MAP_FIXED) failed: {os.strerror(err)}")
