"""What /proc and getrusage say about a process now: its counters and its memory by kind.

The readers under ``mmlab.measure`` and ``mmlab.sampler``. ``counters()`` reads this
process's cumulative wall and CPU time, page faults (``getrusage``), bytes read and written
(``/proc/self/io``) and RSS at one instant; subtract two to measure what lay between.
``proc_io()`` and ``rss_bytes()`` read one of them. The files of ``/proc/self`` are kept open
and re-read with ``pread``: opening costs more than reading, and a measurement is a few reads.

Memory by kind (``memory_by_kind``): *anonymous* pages (``RssAnon``: heap, ``MAP_PRIVATE``
copies, what copy-on-read costs) belong to the process and can only go to swap;
*file-backed* pages (``RssFile``) are page cache the kernel can drop and read again; *shmem*
pages (``RssShmem``) are shared memory: ``MAP_SHARED`` anonymous mappings (Python's
``mmap.mmap(-1, n)`` by default), ``/dev/shm`` and tmpfs files. With USS/PSS the same split
of PSS (``Pss_Anon``, ``Pss_File``, ``Pss_Shmem``) adds up correctly across processes.

A value the OS cannot give is ``None`` with the reason beside it; nothing is estimated.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from dataclasses import dataclass, field

__all__ = ["Counters", "MemoryByKind", "counters", "memory_by_kind", "proc_io", "rss_bytes"]

try:
    import resource
except ImportError:  # Windows
    resource = None

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_HAS_PROC = sys.platform.startswith("linux")
_NO_PROC = f"{sys.platform} has no /proc"

# Read by hand from /proc, where psutil (7.2, installed here) falls short:
# - /proc/self/io: psutil's io_counters() leaves out cancelled_write_bytes;
# - /proc/self/statm (RSS): psutil's memory_info() reads it too, but opens it on every call
#   (6 us, against 0.6 us for a pread of a descriptor kept open), and measure()'s budget is
#   a few reads (bench/bench_instruments.py);
# - RssAnon, RssFile, RssShmem (/proc/PID/status), Pss_Anon, Pss_File, Pss_Shmem
#   (smaps_rollup): psutil 8 adds the first three (memory_info_ex); memory_full_info()
#   reads smaps_rollup but keeps only USS, PSS and swap, which is what psutil is used for.
# Page faults come from getrusage; psutil 7.2 has no page_faults() (psutil 8 adds it).

_PROC_FILE_SIZE = 1 << 14  # status is 1.5 KiB here; its CPU masks grow with the machine


def _cannot_read(path: str, err: OSError) -> str:
    return f"cannot read {path}: {err.strerror or err}"


class _SelfFile:
    """A /proc/self file kept open and re-read with pread: opening costs more than reading."""

    __slots__ = ("error", "fd", "path", "size")
    _open_lock = threading.Lock()

    def __init__(self, name: str, size: int = 4096) -> None:
        self.path = f"/proc/self/{name}"
        self.size = size
        self.fd: int | None = None
        self.error = None if _HAS_PROC else _NO_PROC  # why read() gave None

    def read(self) -> bytes | None:
        """The file's text now, or None with the reason in ``error``."""
        fd = self.fd
        if fd is None:
            if not self._open():
                return None
            fd = self.fd
        try:
            return os.pread(fd, self.size, 0)
        except OSError as err:
            self.error = _cannot_read(self.path, err)
            return None

    def _open(self) -> bool:
        if not _HAS_PROC:
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:  # e.g. io on a kernel without task I/O accounting
            self.error = _cannot_read(self.path, err)
            return False
        with self._open_lock:
            if self.fd is None:
                self.fd = fd
            else:  # another thread opened it meanwhile
                os.close(fd)
        return True

    def forget(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


_IO = _SelfFile("io")
_STATM = _SelfFile("statm")
_SELF_FILES = {name: _SelfFile(name, _PROC_FILE_SIZE) for name in ("status", "smaps_rollup")}

# /proc/self resolves to this process when opened, so a forked child must reopen the files.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        after_in_child=lambda: [f.forget() for f in (_IO, _STATM, *_SELF_FILES.values())]
    )


def _read_proc(pid: int | None, name: str) -> tuple[bytes | None, str]:
    """``/proc/PID/name`` (this process for None) now, or None and why.

    Raises ProcessLookupError when the process is gone.
    """
    if pid is None:
        file = _SELF_FILES[name]
        raw = file.read()
        return raw, file.error or ""
    path = f"/proc/{pid}/{name}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.read(fd, _PROC_FILE_SIZE), ""
        finally:
            os.close(fd)
    except OSError as err:
        if not os.path.exists(f"/proc/{pid}"):
            raise ProcessLookupError(f"no process {pid}") from None
        return None, _cannot_read(path, err)


_IO_KEYS = (b"rchar:", b"read_bytes:", b"write_bytes:", b"cancelled_write_bytes:")


def _io_fields(raw: bytes) -> tuple[int, ...]:
    """rchar, read_bytes, write_bytes, cancelled_write_bytes from /proc/self/io."""
    words = raw.split()
    # The kernel's order since Linux 2.6.20; should a future kernel insert lines, go by name.
    if len(words) >= 14 and words[12] == b"cancelled_write_bytes:":
        return int(words[1]), int(words[9]), int(words[11]), int(words[13])
    io = dict(zip(words[::2], words[1::2], strict=True))
    return tuple(int(io[key]) for key in _IO_KEYS)


def proc_io() -> dict[str, int] | None:
    """This process's I/O counters from ``/proc/self/io`` (Linux), or None."""
    raw = _IO.read()
    if raw is None:
        return None
    pairs = (line.split(b": ") for line in raw.splitlines())
    return {key.decode(): int(value) for key, value in pairs}


def rss_bytes() -> int:
    """This process's resident set size, in bytes."""
    statm = _STATM.read()
    if statm is not None:
        return int(statm.split()[1]) * _PAGE
    import psutil

    return psutil.Process().memory_info().rss


if resource is None:

    def _rusage() -> None:
        return None

else:
    _rusage = functools.partial(resource.getrusage, resource.RUSAGE_SELF)


def _diff(after, before):
    return None if after is None or before is None else after - before


@dataclass(frozen=True)
class Counters:
    """This process's cumulative counters at one instant; subtract two to measure between."""

    wall_s: float
    cpu_s: float
    minor_faults: int | None
    major_faults: int | None
    read_bytes: int | None  # fetched from storage
    rchar_bytes: int | None  # passed through read()-like calls
    write_bytes: int | None  # dirtied for storage (see the module docstring)
    cancelled_write_bytes: int | None  # dirtied, then dropped before writeback
    rss: int

    def __sub__(self, earlier: Counters) -> Counters:
        return Counters(
            self.wall_s - earlier.wall_s,
            self.cpu_s - earlier.cpu_s,
            _diff(self.minor_faults, earlier.minor_faults),
            _diff(self.major_faults, earlier.major_faults),
            _diff(self.read_bytes, earlier.read_bytes),
            _diff(self.rchar_bytes, earlier.rchar_bytes),
            _diff(self.write_bytes, earlier.write_bytes),
            _diff(self.cancelled_write_bytes, earlier.cancelled_write_bytes),
            self.rss - earlier.rss,
        )


def counters() -> Counters:
    """Read time, page faults, I/O and RSS now (cheap: no smaps, no page-cache scan)."""
    usage = _rusage()
    raw = _IO.read()
    rchar, read, write, cancelled = (None,) * 4 if raw is None else _io_fields(raw)
    return Counters(
        time.perf_counter(),
        time.process_time() if usage is None else usage.ru_utime + usage.ru_stime,
        None if usage is None else usage.ru_minflt,
        None if usage is None else usage.ru_majflt,
        read,
        rchar,
        write,
        cancelled,
        rss_bytes(),
    )


# -- memory by kind ------------------------------------------------------------------------

_KIND_NAMES = ("rss", "rss_anon", "rss_file", "rss_shmem")
_PSS_NAMES = ("uss", "pss", "pss_anon", "pss_file", "pss_shmem")
# The kernel's names for them: lines of /proc/PID/status and of smaps_rollup, in kB.
_STATUS_KEYS = {
    "rss": b"VmRSS",
    "rss_anon": b"RssAnon",
    "rss_file": b"RssFile",
    "rss_shmem": b"RssShmem",
}
_ROLLUP_KEYS = {
    "pss": b"Pss",
    "pss_anon": b"Pss_Anon",
    "pss_file": b"Pss_File",
    "pss_shmem": b"Pss_Shmem",
}
_USS_KEYS = (b"Private_Clean", b"Private_Dirty", b"Private_Hugetlb")  # as psutil counts USS


def _kib(text: bytes, key: bytes) -> int | None:
    """The value of a ``key:   1234 kB`` line, in bytes; None without such a line."""
    at = text.find(b"\n" + key + b":")
    if at < 0:
        return None
    start = at + len(key) + 2
    return int(text[start : text.index(b"kB", start)]) * 1024


def _lines(
    text: bytes, keys: dict[str, bytes], path: str, values: dict, unavailable: dict[str, str]
) -> None:
    for name, key in keys.items():
        values[name] = _kib(text, key)
        if values[name] is None:
            unavailable[name] = f"this kernel's {path} has no {key.decode()} line"


@dataclass(slots=True)  # slots: built on every sample of RSSSampler(memory_kinds=True)
class MemoryByKind:
    """One process's memory at one instant, split by what backs it; bytes.

    ``rss == rss_anon + rss_file + rss_shmem`` exactly (one read of ``/proc/PID/status``);
    ``pss`` and its split come from one read of ``smaps_rollup`` and agree within a few KiB
    (the kernel rounds each line down to a KiB). USS and PSS are None unless asked for;
    anything else None could not be read, and ``unavailable`` says why.
    """

    rss: int | None = None
    rss_anon: int | None = None
    rss_file: int | None = None
    rss_shmem: int | None = None
    uss: int | None = None
    pss: int | None = None
    pss_anon: int | None = None
    pss_file: int | None = None
    pss_shmem: int | None = None
    unavailable: dict[str, str] = field(default_factory=dict)


def memory_by_kind(pid: int | None = None, *, uss_pss: bool = False) -> MemoryByKind:
    """RSS by kind (anonymous, file-backed, shmem) of a process (default: this one) now.

    ``uss_pss=True`` adds USS, PSS and PSS by kind from one read of ``smaps_rollup``, which
    costs far more (it walks every mapped page). Raises ``ProcessLookupError`` if the
    process does not exist. A zombie (exited, not yet reaped) holds no memory: all zeros.
    """
    names = _KIND_NAMES + _PSS_NAMES if uss_pss else _KIND_NAMES
    status, why = _read_proc(pid, "status")
    if status is None:
        return MemoryByKind(unavailable=dict.fromkeys(names, why))
    if b"\nState:\tZ" in status:
        return MemoryByKind(**dict.fromkeys(names, 0))
    where = f"/proc/{'self' if pid is None else pid}"
    values: dict[str, int | None] = {}
    unavailable: dict[str, str] = {}
    _lines(status, _STATUS_KEYS, f"{where}/status", values, unavailable)
    if uss_pss:
        # psutil's memory_full_info() reads smaps_rollup too but keeps only USS, PSS and
        # swap; read it once here rather than twice: this walk of every page is the cost.
        rollup, why = _read_proc(pid, "smaps_rollup")
        if rollup is None:
            values.update(dict.fromkeys(_PSS_NAMES))
            unavailable.update(dict.fromkeys(_PSS_NAMES, why))
        else:
            values["uss"] = sum(_kib(rollup, key) or 0 for key in _USS_KEYS)
            _lines(rollup, _ROLLUP_KEYS, f"{where}/smaps_rollup", values, unavailable)
    return MemoryByKind(**values, unavailable=unavailable)


def _uss_pss_psutil() -> MemoryByKind:
    import psutil

    info = psutil.Process().memory_full_info()
    uss, pss = getattr(info, "uss", None), getattr(info, "pss", None)
    unavailable = {
        name: f"psutil gives no {name.upper()} on {sys.platform}"
        for name, value in (("uss", uss), ("pss", pss))
        if value is None
    }
    return MemoryByKind(uss=uss, pss=pss, unavailable=unavailable)
