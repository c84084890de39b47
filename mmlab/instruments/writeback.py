"""Dirty pages and their way to storage: the kernel's rules, flush calls, device counters.

A byte written through a shared mapping (or with ``write()``) lands in the page cache: the
page is *dirty*, newer in memory than on storage. It reaches storage at *writeback*: at once
when the program asks (``msync(MS_SYNC)``, which is Python's ``mmap.flush()``; ``fsync``;
``fdatasync``), or later when the kernel decides. The kernel's flusher threads wake every
``vm.dirty_writeback_centisecs`` and write back pages dirty for longer than
``vm.dirty_expire_centisecs``; they start at once when the system's dirty memory passes
``vm.dirty_background_ratio`` (or ``_bytes``), and a process that dirties memory past
``vm.dirty_ratio`` is made to wait. ``rules()`` reads those settings.

``msync(mm, MS_ASYNC)`` calls msync with any flags (Python only offers ``MS_SYNC``): since
Linux 2.6.19 ``MS_ASYNC`` does nothing at all, the pages stay dirty (``dirty_pages`` shows
it with cachestat).

Where cachestat cannot count a file's dirty pages, ``dirty_sampler`` falls back to
``/proc/meminfo``'s Dirty and Writeback, which count the whole system, and says so.
``DeviceWrites`` reads the sectors written to the block device under a file
(``/sys/dev/block/MAJ:MIN/stat``): every process's writes and the file system's metadata
(and journal, where it has one) included, so it is the storage traffic, not this file's alone.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmlab.instruments.cachestat import CacheSampler, cache_stats
from mmlab.instruments.facts import Fact, Info, Unknown, _from_file, format_size, read_value
from mmlab.instruments.live import draw_marks

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from mmlab.instruments.live import LiveFigure

__all__ = [
    "MS_ASYNC",
    "MS_INVALIDATE",
    "MS_SYNC",
    "DeviceWrites",
    "MeminfoSampler",
    "Rules",
    "background_bytes",
    "device_stat",
    "dirty_pages",
    "dirty_sampler",
    "meminfo_dirty",
    "msync",
    "rules",
]

# Linux's values (asm-generic/mman-common.h); Python's mmap module exports none of them.
MS_ASYNC, MS_INVALIDATE, MS_SYNC = 1, 2, 4
_PAGE = mmap.PAGESIZE
_SECTOR = 512  # /sys/block/*/stat counts 512-byte sectors whatever the device's own size
_libc = ctypes.CDLL(None, use_errno=True)
_libc.msync.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def msync(mm: mmap.mmap, flags: int, offset: int = 0, length: int | None = None) -> None:
    """``msync(2)`` on ``length`` bytes of ``mm`` from ``offset`` (page-aligned) with ``flags``."""
    length = len(mm) - offset if length is None else length
    if offset % mmap.ALLOCATIONGRANULARITY or not 0 <= offset <= offset + length <= len(mm):
        raise ValueError(f"offset {offset} must be page-aligned and the range inside the map")
    view = (ctypes.c_char * len(mm)).from_buffer(mm)  # the mapping's address
    try:
        if _libc.msync(ctypes.addressof(view) + offset, length, flags):
            err = ctypes.get_errno()
            raise OSError(err, f"msync failed: {os.strerror(err)}")
    finally:
        del view  # release the export, or the mmap could not be closed


def dirty_pages(path: str | os.PathLike[str]) -> int | str:
    """The file's dirty pages (cachestat), or why this machine cannot count them."""
    try:
        return cache_stats(path).dirty
    except OSError as error:
        return str(error)


@dataclass(frozen=True)
class Rules:
    """When the kernel writes dirty pages back by itself (each a ``Fact`` or ``Unknown``)."""

    expire_s: Info  # a page dirty this long is written at the flusher's next wakeup
    period_s: Info  # how often the flusher threads wake
    background: Info  # dirty memory past this starts writeback at once (text)
    limit: Info  # dirty memory past this makes writers wait (text)

    @property
    def longest_wait(self) -> float | None:
        """Seconds a lone dirty page may wait for the flusher: expiry plus one period."""
        if not (self.expire_s.known and self.period_s.known):
            return None
        return self.expire_s.value + self.period_s.value

    def lines(self) -> list[str]:
        """The writeback settings, one sentence each, "unknown (why)" where unreadable."""

        def show(info: Info, unit: str = "") -> str:
            if not info.known:
                return f"unknown ({info.reason})"
            value = info.value
            return f"{value:g}{unit}" if isinstance(value, (int, float)) else f"{value}{unit}"

        return [
            f"vm.dirty_expire_centisecs: a file dirty for {show(self.expire_s, ' s')} is old "
            "enough to be written back (timed per file, from when it first went dirty)",
            f"vm.dirty_writeback_centisecs: the flusher wakes every {show(self.period_s, ' s')}",
            f"vm.dirty_background_*: writeback starts at once when the system's dirty memory "
            f"passes {show(self.background)}",
            f"vm.dirty_ratio / dirty_bytes: a process that dirties pages is slowed once the "
            f"system's dirty memory passes halfway from the background threshold to "
            f"{show(self.limit)}, and made to wait once it reaches that, until writeback "
            "catches up",
        ]


def _seconds(name: str) -> Info:
    info = _from_file(f"/proc/sys/vm/{name}", what=" (centiseconds)")
    return Fact(info.value / 100, info.source) if info.known else info


def _threshold(ratio: str, nbytes: str) -> Info:
    """``vm.<nbytes>`` when set (it replaces the ratio), else ``vm.<ratio>`` % of memory."""
    by_bytes = _from_file(f"/proc/sys/vm/{nbytes}")
    if by_bytes.known and by_bytes.value:
        return Fact(format_size(by_bytes.value), by_bytes.source)
    by_ratio = _from_file(f"/proc/sys/vm/{ratio}")
    if not by_ratio.known:
        return by_ratio
    # the kernel's base is "dirtyable" memory: free pages plus the page cache, near MemAvailable
    return Fact(f"{by_ratio.value}% of dirtyable memory (free + file pages)", by_ratio.source)


def rules() -> Rules:
    """The ``vm.dirty_*`` settings that decide when the kernel writes back on its own."""
    return Rules(
        _seconds("dirty_expire_centisecs"),
        _seconds("dirty_writeback_centisecs"),
        _threshold("dirty_background_ratio", "dirty_background_bytes"),
        _threshold("dirty_ratio", "dirty_bytes"),
    )


def background_bytes() -> Info:
    """About how much dirty memory starts background writeback: ``dirty_background_bytes``,
    or the ratio of MemAvailable (the kernel's base, "dirtyable" memory, is close to it)."""
    by_bytes = _from_file("/proc/sys/vm/dirty_background_bytes")
    if by_bytes.known and by_bytes.value:
        return by_bytes
    ratio = _from_file("/proc/sys/vm/dirty_background_ratio")
    if not ratio.known:
        return ratio
    for line in read_value("/proc/meminfo").splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1]) * 1024
            return Fact(
                available * ratio.value // 100,
                f"{ratio.source} = {ratio.value}% of MemAvailable {format_size(available)} "
                "(about: the kernel counts its dirtyable memory)",
            )
    return Unknown("/proc/meminfo has no MemAvailable")


def meminfo_dirty() -> tuple[int, int]:
    """The whole system's Dirty and Writeback memory, bytes, from /proc/meminfo."""
    fields = {}
    for line in read_value("/proc/meminfo").splitlines():
        name, _, rest = line.partition(":")
        if name in ("Dirty", "Writeback"):
            fields[name] = int(rest.split()[0]) * 1024
    return fields["Dirty"], fields["Writeback"]


class MeminfoSampler:
    """The system's dirty and writeback memory over time (``/proc/meminfo``), in pages.

    The stand-in for ``CacheSampler`` where cachestat is unavailable: the same ``times``,
    ``dirty``, ``writeback``, ``mark``, ``plot`` and ``live``, but counting every file of
    every process, so other programs' writes show up too.
    """

    system_wide = True

    def __init__(self, path: str | os.PathLike[str], interval: float = 0.01) -> None:
        self.path, self.interval = Path(path), interval
        self._rows: list[tuple[float, int, int]] = []
        self._marks: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def _sample(self) -> None:
        dirty, writeback = meminfo_dirty()
        self._rows.append((time.perf_counter() - self._t0, dirty // _PAGE, writeback // _PAGE))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> MeminfoSampler:
        """Forget earlier samples and marks, take one now, and sample every ``interval`` s
        in a background thread until ``stop``."""
        self._rows, self._marks, self._t0 = [], [], time.perf_counter()
        self._stop.clear()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="mmlab-meminfo", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> MeminfoSampler:
        """Stop the background thread, if running, and take one last sample."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._sample()
        return self

    def __enter__(self) -> MeminfoSampler:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def mark(self, label: str) -> None:
        """Note the present moment as ``label`` (drawn as a vertical line by ``plot``)."""
        self._marks.append((time.perf_counter() - self._t0, label))

    @property
    def marks(self) -> list[tuple[float, str]]:
        """The marks so far: (seconds since ``start``, label)."""
        return list(self._marks)

    def _column(self, i: int, dtype: type) -> np.ndarray:
        return np.array([row[i] for row in list(self._rows)], dtype=dtype)

    @property
    def times(self) -> np.ndarray:
        """Each sample's seconds since ``start``."""
        return self._column(0, float)

    @property
    def dirty(self) -> np.ndarray:
        """The system's dirty pages at each sample."""
        return self._column(1, np.int64)

    @property
    def writeback(self) -> np.ndarray:
        """The system's pages under writeback at each sample."""
        return self._column(2, np.int64)

    def plot(self, ax: Axes | None = None) -> Axes:
        """Dirty and writeback MiB over time, with the marks, on ``ax`` (cleared; None: a
        new figure's)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(8, 3.5))
        ax.clear()
        times = self.times
        for name in ("dirty", "writeback"):
            mib = getattr(self, name) * _PAGE / 2**20
            ax.plot(times, mib, label=name, drawstyle="steps-post")
        draw_marks(ax, self._marks)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("MiB, whole system")
        ax.set_title("/proc/meminfo Dirty and Writeback (every file, every process)")
        ax.legend(loc="upper left", fontsize=8)
        return ax

    def live(self, every: float = 0.25, **figure_kwargs: object) -> LiveFigure:
        """A figure redrawn with ``plot`` at most every ``every`` s, while in a ``with``."""
        from mmlab.instruments.live import LiveFigure

        return LiveFigure(lambda ax: self.plot(ax), every=every, **figure_kwargs)


def dirty_sampler(
    path: str | os.PathLike[str], interval: float = 0.01
) -> tuple[CacheSampler | MeminfoSampler, str]:
    """A sampler of ``path``'s dirty pages (cachestat), or of the system's (/proc/meminfo)
    where cachestat cannot count them; and a sentence saying which, and why."""
    try:
        cache_stats(path)
    except OSError as error:
        return MeminfoSampler(path, interval), (
            f"cachestat cannot count this file's pages here ({error}); the plot shows "
            "/proc/meminfo's Dirty and Writeback instead: the WHOLE system, every file of "
            "every process, so other programs' writes show in it too"
        )
    return CacheSampler(path, interval), f"cachestat counts {Path(path).name}'s own pages"


def device_stat(path: str | os.PathLike[str]) -> Info:
    """The ``/sys/dev/block/MAJ:MIN/stat`` file of the block device holding ``path``."""
    st_dev = os.stat(path).st_dev
    dev = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    stat = Path("/sys/dev/block") / dev / "stat"
    if stat.exists():
        return Fact(str(stat), f"device {dev} of {path}")
    return Unknown(
        f"{path} is on device {dev}, which is no block device (tmpfs keeps files in memory; "
        "btrfs, overlay, network and FUSE file systems have no single disk): there are no "
        "device counters to read"
    )


class DeviceWrites:
    """Bytes written to the block device under ``path`` during a ``with`` block.

    The device's own counter (sectors written, field 7 of its stat file): every process's
    writes and the file system's metadata (and journal, where it has one), counted when they
    reach the device. ``nbytes`` is None where there is no such device, and ``unknown`` says
    why.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.stat = device_stat(path)
        self.unknown = None if self.stat.known else self.stat.reason
        self.nbytes: int | None = None
        self._before = 0

    def _sectors(self) -> int:
        return int(read_value(self.stat.value).split()[6])

    def __enter__(self) -> DeviceWrites:
        if self.stat.known:
            self._before = self._sectors()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.stat.known:
            self.nbytes = (self._sectors() - self._before) * _SECTOR
