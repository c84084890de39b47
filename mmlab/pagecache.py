"""The page cache: which pages of a file the kernel holds in memory, and how to drop them.

Every read of a file, through ``read()`` or through a mapping, goes through the page cache.
A mapping's page fault either finds the page there (a *minor* fault: no I/O) or has to read
it from storage (a *major* fault). So to see lazy loading, look at the cache:

* ``residency(path)`` asks the kernel with ``mincore`` on a fresh read-only mapping, as
  ``vmtouch`` and ``fincore`` do: one bool per page of the file.
* ``cache_stats(path)`` gives totals from the ``cachestat`` system call (Linux 6.5+): the
  cached pages and, of those, the *dirty* ones (written in memory, not yet on storage) and
  those under *writeback* (being written to storage right now).
* ``CacheSampler(path)`` records those totals over time in a background thread. Write to a
  file and its pages turn dirty; they turn clean when the kernel writes them back on its
  own (after ``vm.dirty_expire_centisecs``, 30 s by default) or at once on ``fsync`` (a
  mapping's ``flush``).
* ``evict(path)`` writes dirty pages back and asks the kernel to drop the rest
  (``POSIX_FADV_DONTNEED``), so cold-cache runs need no root. Pages stay if the file is still
  mapped somewhere, and always on tmpfs, where the page cache *is* the file: then it warns
  with ``EvictionWarning`` and reports what stayed.

The kernel does not show everyone every file's page cache: which pages of a shared file are
cached tells what other users read (a side channel). It answers only for files the process
could open for writing: files it owns or may write (root, with ``CAP_FOWNER``, qualifies
for all). For any other file ``mincore`` has reported *every page cached* since Linux 5.2,
and ``cachestat`` refuses with ``EPERM`` since Linux 6.14 (and in the 6.6 and 6.12 stable
kernels since early 2025). A dataset shared read-only on a JupyterHub is such a file. So
``residency`` and ``cache_stats`` ask the kernel itself whether it hides the file (one page
far past the end of the file, which cannot be cached, reported cached is the tell), and
then raise ``PageCacheHiddenError`` naming the cause and the remedy instead of showing a
made-up 100%; ``cache_hidden(path)`` asks without raising.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import stat
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
]

PAGE_SIZE = mmap.PAGESIZE
_TMPFS_MAGIC = 0x01021994
_SYS_CACHESTAT = 451  # the same number on every Linux architecture but alpha
_HIDDEN_SINCE = "Linux 5.2"  # mincore's "every page resident" for files one may not write
_CACHESTAT_RULE_SINCE = "Linux 6.14 (and the 6.6 and 6.12 stable kernels of early 2025)"


class UnsupportedPlatformError(OSError):
    """This system (OS, kernel or sandbox) lacks the system call an instrument needs."""


class PageCacheHiddenError(PermissionError):
    """The kernel hides this file's page cache from this process, which may not write it.

    Raised by ``residency`` (where ``mincore`` would report every page cached) and by
    ``cache_stats`` (where ``cachestat`` refuses with ``EPERM``). The message names the
    file's owner, this process's user and what to do.
    """


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
    _libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,  # off_t on every 64-bit platform
    ]
    _libc.mmap.restype = ctypes.c_void_p
    _libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    _libc.munmap.restype = ctypes.c_int
    _libc.syscall.restype = ctypes.c_long
_MAP_FAILED = ctypes.c_void_p(-1).value
# Far enough past the end of any file that no page there can be cached: a large folio that
# straddles the end of a file spans a few MiB at most.
_PROBE_GAP = 2**30


def _open_file(path: Path) -> int:
    """Open a regular file read-only; anything else has no page cache of its own to show."""
    # O_NONBLOCK: opening a FIFO would otherwise wait for a writer, forever.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"not a regular file: {path}")
    return fd


def _mincore(fd: int, offset: int, length: int) -> np.ndarray:
    """mincore over a fresh shared read-only mapping of ``length`` bytes at ``offset``.

    A fresh mapping that is never touched: mincore then reports the page cache, not what
    this process happens to have faulted in. libc's mmap, not the mmap module, because the
    probe in ``_kernel_hides`` maps past the end of the file, which the module refuses.
    """
    address = _libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
    if address in (None, _MAP_FAILED):
        err = ctypes.get_errno()
        raise OSError(err, f"mmap failed: {os.strerror(err)}")
    try:
        vector = np.zeros(-(-length // PAGE_SIZE), dtype=np.uint8)
        if _libc.mincore(address, length, vector.ctypes.data) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mincore failed: {os.strerror(err)}")
    finally:
        _libc.munmap(address, length)
    return (vector & 1).astype(bool)


def _kernel_hides(fd: int) -> bool:
    """Whether mincore fakes "all resident" for this file: asked of the kernel, not guessed.

    Where the kernel hides a file's page cache it fills mincore's answer with ones without
    looking. A page a gigabyte past the end of the file is never cached, so one such page
    reported resident is the fake, whatever made the kernel decide (ownership, permission
    bits, ACLs, a read-only file system, user namespaces, a security module).
    """
    if not sys.platform.startswith("linux"):
        return False  # the rule and its fake answer are Linux's
    size = os.fstat(fd).st_size
    probe = (size // _PROBE_GAP + 2) * _PROBE_GAP
    return bool(_mincore(fd, probe, PAGE_SIZE)[0])


def _user(uid: int) -> str:
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _hidden_cause(fd: int) -> str:
    """Why the kernel hides this file from this process, in the terms of its rule."""
    owner, me = _user(os.fstat(fd).st_uid), _user(os.geteuid())
    if os.fstatvfs(fd).f_flag & os.ST_RDONLY:
        return (
            f"this process runs as {me}, the file belongs to {owner}, and it is on a "
            "read-only file system, so this process could not open it for writing"
        )
    return (
        f"this process runs as {me}, the file belongs to {owner}, and this process may not write it"
    )


def _remedy(path: Path) -> str:
    return (
        f"To measure its page cache, make a copy you own (cp {path} ~/) and read the copy "
        "in your experiment, or run as the file's owner."
    )


def cache_hidden(path: str | os.PathLike[str]) -> str | None:
    """Why the kernel hides the file's page cache from this process, or None if it does not.

    None means ``residency`` and ``cache_stats`` tell the truth about this file (as far as
    the system has them). Otherwise they raise ``PageCacheHiddenError``; the string says why.
    """
    if _libc is None:
        return None
    path = Path(path)
    fd = _open_file(path)
    try:
        return _hidden_cause(fd) if _kernel_hides(fd) else None
    finally:
        os.close(fd)


def residency(path: str | os.PathLike[str]) -> np.ndarray:
    """One bool per page of the file: True where the page is in the page cache.

    Raises ``PageCacheHiddenError`` where the kernel hides the file's page cache from this
    process (it neither owns the file nor may write it; see the module's docstring): there
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
        for at, label in self._marks:
            ax.axvline(at, color="0.6", linestyle=":", linewidth=1)
            ax.annotate(
                label,
                (at, 1),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=8,
                color="0.35",
            )
        ax.set_xlabel("time (s)")
        ax.set_ylabel(f"MiB ({PAGE_SIZE // 1024} KiB pages)")
        ax.set_title(f"page cache of {self.path.name}")
        if series:
            ax.legend(loc="upper left", fontsize=8)
        return ax

    def live(self, every: float = 0.25, **figure_kwargs):
        """A ``mmlab.live.LiveFigure`` that redraws this sampler's plot on ``update()``."""
        from mmlab.live import LiveFigure

        return LiveFigure(lambda ax: self.plot(ax), every=every, **figure_kwargs)


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
