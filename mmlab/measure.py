"""Measure what a piece of code costs the machine: time, page faults, I/O and memory.

``with measure() as m: ...`` records, for the code inside, wall and CPU time, minor and
major page faults (``getrusage``), bytes read from storage, bytes passed through
``read()``-like calls and bytes written to storage (``/proc/self/io``), and resident memory
before and after. Optionally it splits memory by kind (``memory_kinds=True``), adds USS and
PSS (``uss_pss=True``: they read ``smaps_rollup``, which walks every mapped page and costs
a tenth of a millisecond or more), and, given a file, counts its pages in the page cache.

Read the numbers together. On ext4 with large folios one minor fault can map many pages at
once, and with readahead one major fault can bring in hundreds of MiB. Fault counts alone
undercount I/O, so the result always shows storage bytes and the page-cache change beside
them.

Storage bytes written (``write_bytes``) are charged to the process that dirties a page, at
the moment it dirties it: that page will reach storage at writeback, now (``fsync``,
``msync``) or later (the kernel's flusher). A page written again after it was cleaned is
charged again, which is how flushing after every small record shows up as write
amplification. ``cancelled_write_bytes`` are dirty bytes this process dropped before they
reached storage, by truncating or deleting the file.

Memory by kind: *anonymous* pages (``RssAnon``: heap, ``MAP_PRIVATE`` copies, what
copy-on-read costs) belong to the process and can only go to swap; *file-backed* pages
(``RssFile``) are page cache the kernel can drop and read again; *shmem* pages
(``RssShmem``) are shared memory: ``MAP_SHARED`` anonymous mappings (Python's
``mmap.mmap(-1, n)`` by default), ``/dev/shm`` and tmpfs files. With USS/PSS the same split
of PSS (``Pss_Anon``, ``Pss_File``, ``Pss_Shmem``) adds up correctly across processes.

A value the OS cannot give is ``None``, shown as "n/a", and ``Measurement.unavailable``
says why; nothing is estimated.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mmlab import pagecache

__all__ = [
    "Counters",
    "Measurement",
    "MemoryByKind",
    "counters",
    "format_count",
    "measure",
    "memory_by_kind",
    "proc_io",
    "rss_bytes",
]

try:
    import resource
except ImportError:  # Windows
    resource = None

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_HAS_PROC = sys.platform.startswith("linux")
_NO_PROC = f"{sys.platform} has no /proc"
_NO_RUSAGE = f"{sys.platform} has no getrusage"

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


# -- the measurement -----------------------------------------------------------------------


def _mib(n: int | None) -> str:
    if n is None:
        return "n/a"
    return f"{n / 2**20:,.1f} MiB" if abs(n) >= 2**20 or n == 0 else f"{n / 2**10:,.0f} KiB"


def _signed_mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:+,.1f} MiB"


def format_count(n: int | None) -> str:
    """A count with thousands separators, or "n/a" where the OS gave none."""
    return "n/a" if n is None else f"{n:,}"


_IO_NAMES = ("rchar_bytes", "read_bytes", "write_bytes", "cancelled_write_bytes")
_KIND_LABELS = {
    "rss_anon": "anonymous (RssAnon)",
    "rss_file": "file-backed (RssFile)",
    "rss_shmem": "shared memory (RssShmem)",
    "pss_anon": "anonymous (Pss_Anon)",
    "pss_file": "file-backed (Pss_File)",
    "pss_shmem": "shared memory (Pss_Shmem)",
}


@dataclass
class Measurement:
    """What ``measure`` recorded. Byte counts are bytes.

    A value is None where it was not asked for (memory by kind, USS/PSS, the page cache) or
    the OS could not give it; then ``unavailable`` maps its name (``"read_bytes"``,
    ``"rss_anon"``, ``"pss"`` ...; no ``_before``/``_after``) to the reason.
    """

    label: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    minor_faults: int | None = None
    major_faults: int | None = None
    read_bytes: int | None = None  # fetched from storage (page-cache misses)
    rchar_bytes: int | None = None  # passed through read(), pread(), readinto() ...
    write_bytes: int | None = None  # pages dirtied for storage (see the module docstring)
    cancelled_write_bytes: int | None = None  # dirty bytes dropped before writeback
    rss_before: int = 0
    rss_after: int = 0
    rss_anon_before: int | None = None
    rss_anon_after: int | None = None
    rss_file_before: int | None = None
    rss_file_after: int | None = None
    rss_shmem_before: int | None = None
    rss_shmem_after: int | None = None
    uss_before: int | None = None
    uss_after: int | None = None
    pss_before: int | None = None
    pss_after: int | None = None
    pss_anon_before: int | None = None
    pss_anon_after: int | None = None
    pss_file_before: int | None = None
    pss_file_after: int | None = None
    pss_shmem_before: int | None = None
    pss_shmem_after: int | None = None
    file: Path | None = None
    cached_pages_before: int | None = None
    cached_pages_after: int | None = None
    file_pages: int | None = None
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def rss_delta(self) -> int:
        return self.rss_after - self.rss_before

    @property
    def cached_pages_delta(self) -> int | None:
        return _diff(self.cached_pages_after, self.cached_pages_before)

    def _shown(self, name: str) -> bool:
        """Whether ``name`` was asked for: measured, or explained in ``unavailable``."""
        return getattr(self, f"{name}_after") is not None or name in self.unavailable

    def delta(self, name: str) -> int | None:
        """After minus before of a memory value, e.g. ``m.delta("rss_anon")``; None if unknown."""
        return _diff(getattr(self, f"{name}_after"), getattr(self, f"{name}_before"))

    def _split(self, total: str) -> str:
        kinds = ", ".join(
            f"{kind} {_signed_mib(self.delta(f'{total}_{kind}')).removesuffix(' MiB')}"
            for kind in ("anon", "file", "shmem")
        )
        return f" ({kinds} MiB)"

    def __repr__(self) -> str:
        written = f"storage written {_mib(self.write_bytes)}"
        if self.cancelled_write_bytes:
            written += f" ({_mib(self.cancelled_write_bytes)} cancelled)"
        rss = f"RSS {_signed_mib(self.rss_delta)}"
        if self._shown("rss_anon"):
            rss += self._split("rss")
        parts = [
            f"wall {self.wall_s * 1e3:,.3f} ms",
            f"cpu {self.cpu_s * 1e3:,.3f} ms",
            f"faults {format_count(self.minor_faults)} minor"
            f" / {format_count(self.major_faults)} major",
            f"storage read {_mib(self.read_bytes)}",
            written,
            f"read() {_mib(self.rchar_bytes)}",
            rss,
        ]
        if self._shown("uss"):
            parts.append(f"USS {_signed_mib(self.delta('uss'))}")
            pss = f"PSS {_signed_mib(self.delta('pss'))}"
            if self._shown("pss_anon"):
                pss += self._split("pss")
            parts.append(pss)
        if self.file is not None:
            parts.append(
                f"page cache {self.cached_pages_before:,} -> {self.cached_pages_after:,} "
                f"of {self.file_pages:,} pages"
            )
        label = f"{self.label}: " if self.label else ""
        return f"<Measurement {label}{', '.join(parts)}>"

    def _cell(self, name: str, text: str) -> str:
        why = self.unavailable.get(name)
        return text if why is None else f"{text} <small>({why})</small>"

    def _change(self, name: str) -> str:
        before, after = getattr(self, f"{name}_before"), getattr(self, f"{name}_after")
        if before is None or after is None:
            return self._cell(name, "n/a")
        return f"{_mib(before)} → {_mib(after)} ({_signed_mib(after - before)})"

    def _repr_html_(self) -> str:
        rows = [
            ("wall time", f"{self.wall_s * 1e3:,.3f} ms"),
            ("CPU time", f"{self.cpu_s * 1e3:,.3f} ms"),
            ("minor page faults", self._cell("minor_faults", format_count(self.minor_faults))),
            ("major page faults", self._cell("major_faults", format_count(self.major_faults))),
            ("read from storage", self._cell("read_bytes", _mib(self.read_bytes))),
            ("written to storage", self._cell("write_bytes", _mib(self.write_bytes))),
            (
                "writes cancelled (dropped before writeback)",
                self._cell("cancelled_write_bytes", _mib(self.cancelled_write_bytes)),
            ),
            ("read through read() calls", self._cell("rchar_bytes", _mib(self.rchar_bytes))),
            ("RSS before → after", self._change("rss")),
        ]
        if self._shown("rss_anon"):
            rows += [(f"&nbsp;&nbsp;{_KIND_LABELS[n]}", self._change(n)) for n in _KIND_NAMES[1:]]
        if self._shown("uss"):
            rows.append(("USS before → after", self._change("uss")))
            rows.append(("PSS before → after", self._change("pss")))
            if self._shown("pss_anon"):
                rows += [
                    (f"&nbsp;&nbsp;{_KIND_LABELS[n]}", self._change(n)) for n in _PSS_NAMES[2:]
                ]
        if self.file is not None:
            rows.append(
                (
                    f"page cache of {self.file.name}",
                    f"{self.cached_pages_before:,} → {self.cached_pages_after:,} "
                    f"of {self.file_pages:,} pages",
                )
            )
        body = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>" for k, v in rows
        )
        caption = f"<caption>{self.label}</caption>" if self.label else ""
        return f"<table>{caption}{body}</table>"


class measure:
    """Measure the code in a ``with`` block (or a decorated function).

    ``memory_kinds=True`` splits RSS into anonymous, file-backed and shmem memory (and PSS
    too, with ``uss_pss``); ``uss_pss=True`` adds USS and PSS (slow: they walk every mapped
    page, a tenth of a millisecond or more); ``file=`` counts that file's pages in the page
    cache before and after. For child processes (DataLoader workers), sample them while
    they run: ``RSSSampler(children=True)``.
    """

    def __init__(
        self,
        label: str = "",
        *,
        uss_pss: bool = False,
        memory_kinds: bool = False,
        file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.label = label
        self.uss_pss = uss_pss
        self.memory_kinds = memory_kinds
        self.file = None if file is None else Path(file)
        self.result: Measurement | None = None

    def _memory(self, m: Measurement, when: str) -> int | None:
        """Record memory by kind and USS/PSS as asked; RSS too when read with the split."""
        if self.memory_kinds:
            memory = memory_by_kind(uss_pss=self.uss_pss)
        elif self.uss_pss:
            memory = _uss_pss_psutil()
        else:
            return None
        for name in _KIND_NAMES[1:] + _PSS_NAMES:
            value = getattr(memory, name)
            if value is not None:
                setattr(m, f"{name}_{when}", value)
            elif name in memory.unavailable:
                m.unavailable[name] = memory.unavailable[name]
        return memory.rss

    def __enter__(self) -> Measurement:
        m = Measurement(label=self.label, file=self.file)
        self.result = m
        if self.file is not None:
            resident = pagecache.residency(self.file)
            m.cached_pages_before, m.file_pages = int(resident.sum()), len(resident)
        rss = self._memory(m, "before") if self.memory_kinds or self.uss_pss else None
        # The counters last and the clock at the very end, so that measure()'s own reads stay
        # out of what it measures. statm before io: reading io adds its own length to rchar.
        m.rss_before = rss_bytes() if rss is None else rss
        self._io = _IO.read()
        self._usage = usage = _rusage()
        self._cpu = time.process_time() if usage is None else None  # Windows
        self._wall = time.perf_counter()
        return m

    def __exit__(self, *exc_info: object) -> None:
        wall = time.perf_counter()
        usage = _rusage()
        m, start, io = self.result, self._usage, _IO.read()
        m.wall_s = wall - self._wall
        if usage is None:
            m.cpu_s = time.process_time() - self._cpu
            m.unavailable["minor_faults"] = m.unavailable["major_faults"] = _NO_RUSAGE
        else:
            # user + system time from getrusage is the process's CPU time, to the microsecond
            m.cpu_s = usage.ru_utime - start.ru_utime + usage.ru_stime - start.ru_stime
            m.minor_faults = usage.ru_minflt - start.ru_minflt
            m.major_faults = usage.ru_majflt - start.ru_majflt
        if io is None or self._io is None:
            m.unavailable.update(dict.fromkeys(_IO_NAMES, _IO.error))
        else:
            before, after = _io_fields(self._io), _io_fields(io)
            # Reading /proc/self/io on entry added its own length to rchar: take it back out.
            m.rchar_bytes = after[0] - before[0] - len(self._io)
            m.read_bytes = after[1] - before[1]
            m.write_bytes = after[2] - before[2]
            m.cancelled_write_bytes = after[3] - before[3]
        rss = self._memory(m, "after") if self.memory_kinds or self.uss_pss else None
        m.rss_after = rss_bytes() if rss is None else rss
        if self.file is not None:
            m.cached_pages_after = int(pagecache.residency(self.file).sum())

    def __call__(self, func: Callable) -> Callable:
        """Decorate ``func``: each call is measured; the latest result is ``func.measurement``."""

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with measure(
                self.label or func.__name__,
                uss_pss=self.uss_pss,
                memory_kinds=self.memory_kinds,
                file=self.file,
            ) as m:
                result = func(*args, **kwargs)
            wrapper.measurement = m
            return result

        wrapper.measurement = None
        return wrapper
