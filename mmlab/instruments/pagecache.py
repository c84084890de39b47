"""The page cache: which pages of a file the kernel holds in memory, and how to drop them.

Every read of a file, through ``read()`` or through a mapping, goes through the page cache.
A mapping's page fault either finds the page there (a *minor* fault: no I/O) or has to read
it from storage (a *major* fault). So to see lazy loading, look at the cache:

* ``residency(path)`` asks the kernel with ``mincore`` on a fresh read-only mapping, as
  ``vmtouch`` and ``fincore`` do: one bool per page of the file.
* ``cache_stats(path)`` and ``CacheSampler(path)`` (``mmlab.cachestat``) count the cached,
  dirty and writeback pages with the ``cachestat`` system call (Linux 6.5+), once or over
  time: write to a file and its pages turn dirty, then clean at writeback.
* ``evict(path)`` writes dirty pages back and asks the kernel to drop the rest
  (``POSIX_FADV_DONTNEED``), so cold-cache runs need no root. Pages stay if the file is still
  mapped somewhere, and always on tmpfs, where the page cache *is* the file: then it warns
  with ``EvictionWarning`` and reports what stayed.

The kernel hides a file's page cache from a process that may not write the file (see
``mmlab.visibility``): there ``residency`` and ``cache_stats`` raise
``PageCacheHiddenError`` naming the cause and the remedy instead of showing a made-up 100%;
``cache_hidden(path)`` asks without raising.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmlab.instruments.cachestat import (
    _CACHESTAT_RULE_SINCE,
    CacheSampler,
    CacheStats,
    _Cachestat,
    _cachestat,
    cache_stats,
)
from mmlab.instruments.visibility import (
    _HIDDEN_SINCE,
    PAGE_SIZE,
    PageCacheHiddenError,
    UnsupportedPlatformError,
    _hidden_cause,
    _kernel_hides,
    _libc,
    _mincore,
    _open_file,
    _remedy,
    cache_hidden,
)

__all__ = [
    "CacheSampler",
    "CacheStats",
    "EvictionReport",
    "EvictionWarning",
    "PageCacheHiddenError",
    "UnsupportedPlatformError",
    "cache_hidden",
    "cache_stats",
    "evict",
    "on_tmpfs",
    "plot_residency",
    "residency",
    "settled_residency",
]

_TMPFS_MAGIC = 0x01021994


class EvictionWarning(UserWarning):
    """Pages of a file stayed in the page cache after ``evict``."""


def residency(path: str | os.PathLike[str]) -> np.ndarray:
    """One bool per page of the file: True where the page is in the page cache.

    Raises ``PageCacheHiddenError`` where the kernel hides the file's page cache from this
    process (it neither owns the file nor may write it; see ``mmlab.visibility``): there
    ``mincore`` would answer "all cached" whatever the truth, so there is no answer to give.
    """
    if _libc is None:
        raise UnsupportedPlatformError(f"mincore is not available on {sys.platform}")
    path = Path(path)
    fd = _open_file(path)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return np.zeros(0, dtype=bool)
        if _kernel_hides(fd):
            raise PageCacheHiddenError(
                errno.EPERM,
                f"cannot tell which pages of {path} are cached: {_hidden_cause(fd)}. "
                f"Since {_HIDDEN_SINCE} the kernel answers mincore() for such a file with "
                "'every page cached' (what is cached would tell what other users read), so "
                "residency() would show a made-up 100%. " + _remedy(path) + _cache_stats_note(fd),
            )
        try:
            return _mincore(fd, 0, size)
        except OSError as e:
            raise OSError(e.errno, f"{e.strerror} on {path}") from None
    finally:
        os.close(fd)


def settled_residency(path: str | os.PathLike[str], timeout: float = 2.0) -> np.ndarray:
    """``residency(path)`` once the reads in flight have finished: two counts 20 ms apart agree
    (or ``timeout`` seconds passed). ``mincore`` counts a page only once its read completed,
    so right after a fault the readahead it started is still arriving."""
    import time

    resident = residency(path)
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        time.sleep(0.02)
        again = residency(path)
        if again.sum() == resident.sum():
            return again
        resident = again
    return resident


def _cache_stats_note(fd: int) -> str:
    """What cache_stats can do instead, on this kernel, for a file residency cannot show."""
    result = _cachestat(fd)
    if isinstance(result, _Cachestat):
        return (
            " This kernel still answers cachestat for it: cache_stats() counts its cached "
            "pages (not which ones)."
        )
    if result == errno.EPERM:
        return (
            " cache_stats() is refused for the same reason: the kernel applies the same rule "
            f"to cachestat since {_CACHESTAT_RULE_SINCE}."
        )
    return ""


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
    """What ``evict`` achieved: pages of the file resident before and after, and why any stayed.

    Where the kernel hides the file's page cache from this process (``cache_hidden``), the
    eviction still happens but nobody here can count it: both counts are None and
    ``reason`` says why.
    """

    path: Path
    pages: int
    resident_before: int | None
    resident_after: int | None
    reason: str | None

    @property
    def fraction_after(self) -> float | None:
        if self.resident_after is None:
            return None
        return self.resident_after / self.pages if self.pages else 0.0

    def __str__(self) -> str:
        if self.resident_after is None:
            return (
                f"evict {self.path.name}: asked the kernel to drop its {self.pages:,} pages; "
                f"how many stayed is unknown ({self.reason})"
            )
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
    hidden = cache_hidden(path)
    before = None if hidden else int(residency(path).sum())
    fd = _open_file(path)
    try:
        pages = -(-os.fstat(fd).st_size // PAGE_SIZE)
        os.fsync(fd)  # dirty pages cannot be dropped until they are written
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    if hidden:
        reason = f"the kernel hides this file's page cache from this process: {hidden}"
        return EvictionReport(path, pages, None, None, reason)
    after = int(residency(path).sum())
    reason = None
    if after:
        if on_tmpfs(path):
            reason = "the file lives on tmpfs, where the page cache is the file itself"
        elif _mapped_here(path):
            reason = "the file is still mapped by this process; close the mapping first"
        else:
            reason = "the file is probably mapped or locked by another process"
        warnings.warn(
            f"{after:,} of {pages:,} pages of {path} stayed in the page cache: {reason}",
            EvictionWarning,
            stacklevel=2,
        )
    return EvictionReport(path, pages, before, after, reason)


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
