"""The page cache: which pages of a file the kernel holds in memory, and how to drop them.

Every read of a file, through ``read()`` or through a mapping, goes through the page cache.
A mapping's page fault either finds the page there (a *minor* fault: no I/O) or has to read
it from storage (a *major* fault). So to see lazy loading, look at the cache:

* ``residency(path)`` asks the kernel with ``mincore`` on a fresh read-only mapping, as
  ``vmtouch`` and ``fincore`` do: one bool per page of the file.
* ``cache_stats(path)`` gives totals from the ``cachestat`` system call (Linux 6.5+).
* ``evict(path)`` writes dirty pages back and asks the kernel to drop the rest
  (``POSIX_FADV_DONTNEED``), so cold-cache runs need no root. Pages stay if the file is still
  mapped somewhere, and always on tmpfs, where the page cache *is* the file: then it warns
  with ``EvictionWarning`` and reports what stayed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "CacheStats",
    "EvictionReport",
    "EvictionWarning",
    "UnsupportedPlatformError",
    "cache_stats",
    "evict",
    "on_tmpfs",
    "plot_residency",
    "residency",
]

PAGE_SIZE = mmap.PAGESIZE
_TMPFS_MAGIC = 0x01021994
_SYS_CACHESTAT = 451  # the same number on every Linux architecture


class UnsupportedPlatformError(OSError):
    """This operating system lacks the system call an instrument needs."""


class EvictionWarning(UserWarning):
    """Pages of a file stayed in the page cache after ``evict``."""


_libc = (
    ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if os.name == "posix"
    else None
)
if _libc is not None:
    _libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    _libc.mincore.restype = ctypes.c_int


def residency(path: str | os.PathLike[str]) -> np.ndarray:
    """One bool per page of the file: True where the page is in the page cache."""
    if _libc is None:
        raise UnsupportedPlatformError(f"mincore is not available on {sys.platform}")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pages = -(-size // PAGE_SIZE)
        if size == 0:
            return np.zeros(0, dtype=bool)
        # A fresh mapping that is never touched: mincore then reports the page cache,
        # not what this process happens to have faulted in.
        with mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as mm:
            address = np.frombuffer(mm, np.uint8, count=1).ctypes.data
            vector = np.zeros(pages, dtype=np.uint8)
            if _libc.mincore(address, size, vector.ctypes.data) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"mincore failed on {path}: {os.strerror(err)}")
    return (vector & 1).astype(bool)


@dataclass(frozen=True)
class CacheStats:
    """Page-cache totals for a file, in pages, from ``cachestat(2)``."""

    cached: int
    dirty: int
    writeback: int
    evicted: int
    recently_evicted: int


class _CachestatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [
        ("nr_cache", ctypes.c_uint64),
        ("nr_dirty", ctypes.c_uint64),
        ("nr_writeback", ctypes.c_uint64),
        ("nr_evicted", ctypes.c_uint64),
        ("nr_recently_evicted", ctypes.c_uint64),
    ]


def cache_stats(path: str | os.PathLike[str]) -> CacheStats:
    """Totals of the file's cached, dirty and evicted pages (Linux 6.5 and newer)."""
    if not sys.platform.startswith("linux") or _libc is None:
        raise UnsupportedPlatformError(f"cachestat is a Linux system call; this is {sys.platform}")
    fd = os.open(path, os.O_RDONLY)
    try:
        whole_file, stats = _CachestatRange(0, 0), _Cachestat()
        result = _libc.syscall(_SYS_CACHESTAT, fd, ctypes.byref(whole_file), ctypes.byref(stats), 0)
        if result != 0:
            err = ctypes.get_errno()
            raise UnsupportedPlatformError(
                err, f"cachestat failed: {os.strerror(err)} (it needs Linux 6.5 or newer)"
            )
    finally:
        os.close(fd)
    return CacheStats(
        stats.nr_cache,
        stats.nr_dirty,
        stats.nr_writeback,
        stats.nr_evicted,
        stats.nr_recently_evicted,
    )


def on_tmpfs(path: str | os.PathLike[str]) -> bool:
    """Whether the file lives on tmpfs (``/dev/shm`` and often ``/tmp``), where eviction fails."""
    if not sys.platform.startswith("linux"):
        return False
    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type is its first field
    if _libc.statfs(os.fsencode(os.fspath(path)), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"statfs failed on {path}: {os.strerror(err)}")
    return ctypes.c_long.from_buffer(buf).value == _TMPFS_MAGIC


def _mapped_here(path: Path) -> bool:
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    return any(line.endswith(" " + str(path)) for line in maps.splitlines())


@dataclass(frozen=True)
class EvictionReport:
    """What ``evict`` achieved: pages of the file resident before and after, and why any stayed."""

    path: Path
    pages: int
    resident_before: int
    resident_after: int
    reason: str | None

    @property
    def fraction_after(self) -> float:
        return self.resident_after / self.pages if self.pages else 0.0

    def __str__(self) -> str:
        text = (
            f"evict {self.path.name}: {self.resident_before:,} -> {self.resident_after:,} "
            f"of {self.pages:,} pages resident"
        )
        return text + (f" ({self.reason})" if self.reason else "")


def evict(path: str | os.PathLike[str]) -> EvictionReport:
    """Drop the file's pages from the page cache (fsync, then ``POSIX_FADV_DONTNEED``)."""
    if not hasattr(os, "posix_fadvise"):
        raise UnsupportedPlatformError(
            f"posix_fadvise is not available on {sys.platform}: cannot evict without root"
        )
    path = Path(path).absolute()
    before = int(residency(path).sum())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped until they are written
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    resident = residency(path)
    after = int(resident.sum())
    reason = None
    if after:
        if on_tmpfs(path):
            reason = "the file lives on tmpfs, where the page cache is the file itself"
        elif _mapped_here(path):
            reason = "the file is still mapped by this process; close the mapping first"
        else:
            reason = "the file is probably mapped or locked by another process"
        warnings.warn(
            f"{after:,} of {len(resident):,} pages of {path} stayed in the page cache: {reason}",
            EvictionWarning,
            stacklevel=2,
        )
    return EvictionReport(path, len(resident), before, after, reason)


def plot_residency(resident: np.ndarray, ax=None, columns: int | None = None, title: str = ""):
    """Draw residency as a grid of pages (row by row): dark where the page is cached."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 2.5))
    pages = len(resident)
    columns = columns or max(1, min(256, int(np.ceil(np.sqrt(pages * 8)))))
    rows = max(1, -(-pages // columns))
    grid = np.full(rows * columns, np.nan)
    grid[:pages] = resident
    ax.imshow(
        grid.reshape(rows, columns),
        cmap=ListedColormap(["#e8e8e8", "#1f77b4"]),
        vmin=0,
        vmax=1,
        aspect="auto",
        interpolation="nearest",
    )
    ax.set_xticks([])
    ax.set_yticks([])
    percent = 100 * resident.mean() if pages else 0
    ax.set_title(title or f"{int(resident.sum()):,} of {pages:,} pages cached ({percent:.0f}%)")
    ax.set_xlabel(f"{columns} pages per row, {PAGE_SIZE // 1024} KiB each")
    return ax
