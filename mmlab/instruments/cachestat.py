"""Page-cache totals of a file from the ``cachestat`` system call, once or over time.

``cache_stats(path)`` gives totals from ``cachestat`` (Linux 6.5+): the cached pages and,
of those, the *dirty* ones (written in memory, not yet on storage) and those under
*writeback* (being written to storage right now). Unlike ``mincore`` it says how many, not
which ones, and it costs one system call however large the file.

``CacheSampler(path)`` records those totals over time in a background thread. Write to a
file and its pages turn dirty; they turn clean when the kernel writes them back on its own
(after ``vm.dirty_expire_centisecs``, 30 s by default) or at once on ``fsync`` (a mapping's
``flush``).

Where cachestat is missing (before Linux 6.5, or blocked by a sandbox) or refused for the
file (see ``mmlab.visibility``), both raise an error saying why and what to do: no number
is ever made up.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmlab.instruments.live import draw_marks
from mmlab.instruments.visibility import (
    _HIDDEN_SINCE,
    PAGE_SIZE,
    PageCacheHiddenError,
    UnsupportedPlatformError,
    _hidden_cause,
    _kernel_hides,
    _libc,
    _open_file,
    _remedy,
)

__all__ = ["CacheSampler", "CacheStats", "cache_stats"]

_SYS_CACHESTAT = 451  # the same number on every Linux architecture but alpha
_CACHESTAT_RULE_SINCE = "Linux 6.14 (and the 6.6 and 6.12 stable kernels of early 2025)"


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


def _cachestat(fd: int) -> _Cachestat | int:
    """The whole file's counts, or the errno cachestat failed with."""
    whole_file, stats = _CachestatRange(0, 0), _Cachestat()
    if _libc.syscall(_SYS_CACHESTAT, fd, ctypes.byref(whole_file), ctypes.byref(stats), 0):
        return ctypes.get_errno()
    return stats


def _kernel_release() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def _seccomp_filtered() -> bool:
    """Whether a seccomp filter (a container's sandbox, say) screens this process's calls."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    return any(line.split() == ["Seccomp:", "2"] for line in status.splitlines())


def _cachestat_error(path: Path, fd: int, err: int) -> OSError:
    """The error cache_stats raises for cachestat's errno, saying what it means and what to do."""
    uname = os.uname()
    if err == errno.ENOSYS:
        if _kernel_release() < (6, 5):
            cause = f"cachestat came in Linux 6.5 and this kernel is {uname.release}"
        elif _seccomp_filtered():
            cause = (
                f"this kernel ({uname.release}) has it, but a seccomp filter (a container's "
                "sandbox, say) answers that it does not"
            )
        else:
            cause = f"this kernel ({uname.release}) was built without it"
        return UnsupportedPlatformError(
            err, f"no cachestat system call here: {cause}. residency() still counts cached pages"
        )
    if err == errno.EPERM and _kernel_hides(fd):
        return PageCacheHiddenError(
            err,
            f"cachestat refused {path}: {_hidden_cause(fd)}. Since {_CACHESTAT_RULE_SINCE} "
            "the kernel answers cachestat only for files the process could open for writing "
            f"(as mincore since {_HIDDEN_SINCE}). " + _remedy(path),
        )
    if err in (errno.EPERM, errno.EACCES):
        name = errno.errorcode[err]
        if _seccomp_filtered():
            return UnsupportedPlatformError(
                err,
                f"cachestat was refused for {path} ({name}) although this process may see its "
                "page cache: a seccomp filter blocks the call, as container sandboxes do with "
                "system calls their profile does not list. Allow cachestat in the sandbox's "
                "profile or run outside it; residency() still counts cached pages",
            )
        return PermissionError(
            err,
            f"cachestat was refused for {path} ({name}) although this process may see its page "
            "cache and no seccomp filter screens it: a security module (SELinux, AppArmor, "
            "BPF) may forbid the call. residency() still counts cached pages",
        )
    if err == errno.EOPNOTSUPP:
        return UnsupportedPlatformError(err, f"cachestat does not work on hugetlbfs: {path}")
    return OSError(err, f"cachestat failed on {path}: {os.strerror(err)}")


def cache_stats(path: str | os.PathLike[str]) -> CacheStats:
    """Totals of the file's cached, dirty, writeback and evicted pages (Linux 6.5 and newer).

    Raises ``UnsupportedPlatformError`` where there is no cachestat (before Linux 6.5, or
    blocked by a sandbox), ``PageCacheHiddenError`` where the kernel refuses it for this
    file (this process may not write it), each message saying why and what to do.
    """
    if not sys.platform.startswith("linux") or _libc is None:
        raise UnsupportedPlatformError(f"cachestat is a Linux system call; this is {sys.platform}")
    path = Path(path)
    fd = _open_file(path)
    try:
        stats = _cachestat(fd)
        if not isinstance(stats, _Cachestat):
            raise _cachestat_error(path, fd, stats)
    finally:
        os.close(fd)
    return CacheStats(
        stats.nr_cache,
        stats.nr_dirty,
        stats.nr_writeback,
        stats.nr_evicted,
        stats.nr_recently_evicted,
    )


_SAMPLED = ("cached", "dirty", "writeback")


class CacheSampler:
    """Record a file's cached, dirty and writeback pages over time, in a background thread.

    ``with CacheSampler("data.bin", interval=0.01) as s:`` write, ``s.mark("fsync")``, fsync;
    then ``s.times`` (seconds since start), ``s.cached``, ``s.dirty``, ``s.writeback``
    (pages, one per sample) and ``s.plot()``. Each sample is one ``cachestat`` of the path,
    opened afresh, so a file renamed over it (a store that grew) is followed. Starting
    raises the error of ``cache_stats`` where cachestat is unavailable or refused: there are
    no numbers to show, and the sampler never makes any up. If sampling fails midway (the
    file was deleted), ``stop()`` raises that error; the samples taken before it are kept.
    """

    def __init__(self, path: str | os.PathLike[str], interval: float = 0.01) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.path = Path(path)
        self.interval = interval
        self._rows: list[tuple[float, int, int, int]] = []
        self._marks: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: OSError | None = None
        self._t0 = 0.0

    def start(self) -> CacheSampler:
        """Start sampling (again from zero), with one sample at once."""
        if self._thread is not None:
            raise RuntimeError("the sampler is already running")
        self._rows, self._marks, self._error = [], [], None
        self._stop.clear()
        self._t0 = time.perf_counter()
        self._sample()  # raises here, in the caller, if cachestat cannot work for this file
        self._thread = threading.Thread(target=self._run, name="mmlab-CacheSampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> CacheSampler:
        """Stop sampling, after one last sample; raise the error that cut sampling short."""
        if self._thread is None:
            return self
        self._halt()
        if self._error is not None:
            raise self._error
        self._sample()
        return self

    def _halt(self) -> None:
        self._stop.set()
        self._thread.join()
        self._thread = None

    def __enter__(self) -> CacheSampler:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is None:
            self.stop()
        elif self._thread is not None:
            self._halt()  # the block's own exception is the one to see

    @property
    def running(self) -> bool:
        return self._thread is not None

    def mark(self, label: str) -> None:
        """Note a moment (drawn as a vertical line by ``plot``)."""
        self._marks.append((time.perf_counter() - self._t0, label))

    def _run(self) -> None:
        next_at = time.perf_counter() + self.interval
        while not self._stop.wait(max(0.0, next_at - time.perf_counter())):
            try:
                self._sample()
            except OSError as e:
                e.add_note(
                    f"CacheSampler stopped sampling {self.path} "
                    f"{time.perf_counter() - self._t0:.3f} s after it started"
                )
                self._error = e
                return
            next_at += self.interval
            if next_at < time.perf_counter():  # fell behind: skip, don't burst
                next_at = time.perf_counter() + self.interval

    def _sample(self) -> None:
        stats = cache_stats(self.path)
        row = (time.perf_counter() - self._t0, stats.cached, stats.dirty, stats.writeback)
        with self._lock:
            self._rows.append(row)

    def _column(self, i: int, dtype: type) -> np.ndarray:
        with self._lock:
            return np.array([row[i] for row in self._rows], dtype=dtype)

    @property
    def times(self) -> np.ndarray:
        """Seconds since start, one per sample."""
        return self._column(0, float)

    @property
    def cached(self) -> np.ndarray:
        """Pages of the file in the page cache, one per sample."""
        return self._column(1, np.int64)

    @property
    def dirty(self) -> np.ndarray:
        """Cached pages written in memory and not yet written to storage."""
        return self._column(2, np.int64)

    @property
    def writeback(self) -> np.ndarray:
        """Cached pages being written to storage at that moment."""
        return self._column(3, np.int64)

    @property
    def marks(self) -> list[tuple[float, str]]:
        return list(self._marks)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        peak = f", peak dirty {self.dirty.max():,} pages" if len(self) else ""
        return (
            f"<CacheSampler {self.path.name} {state}, {len(self)} samples "
            f"every {self.interval * 1e3:g} ms{peak}>"
        )

    def plot(self, ax=None, series: tuple[str, ...] = _SAMPLED):
        """Plot the page counts (MiB) against time, with the marks."""
        import matplotlib.pyplot as plt

        unknown = set(series) - set(_SAMPLED)
        if unknown:
            raise ValueError(f"unknown series {sorted(unknown)}; choose from {_SAMPLED}")
        if ax is None:
            _, ax = plt.subplots(figsize=(8, 3.5))
        ax.clear()
        with self._lock:
            rows = np.array(self._rows, dtype=float).reshape(-1, 1 + len(_SAMPLED))
        for name in series:
            pages = rows[:, 1 + _SAMPLED.index(name)]
            ax.plot(rows[:, 0], pages * PAGE_SIZE / 2**20, label=name, drawstyle="steps-post")
        draw_marks(ax, self._marks)
        ax.set_xlabel("time (s)")
        ax.set_ylabel(f"MiB ({PAGE_SIZE // 1024} KiB pages)")
        ax.set_title(f"page cache of {self.path.name}")
        if series:
            ax.legend(loc="upper left", fontsize=8)
        return ax

    def live(self, every: float = 0.25, **figure_kwargs):
        """A ``mmlab.live.LiveFigure`` that redraws this sampler's plot on ``update()``."""
        from mmlab.instruments.live import LiveFigure

        return LiveFigure(lambda ax: self.plot(ax), every=every, **figure_kwargs)
