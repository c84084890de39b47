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
Memory by kind (``memory_kinds=True``, read by ``mmlab.proc``): *anonymous* pages belong to
the process and can only go to swap, *file-backed* pages are page cache the kernel can drop
and read again, *shmem* pages are shared memory (``MAP_SHARED`` anonymous mappings,
``/dev/shm``, tmpfs files). With USS/PSS the same split of PSS adds up across processes.

A value the OS cannot give is ``None``, shown as "n/a", and ``Measurement.unavailable``
says why; nothing is estimated.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mmlab.instruments import pagecache
from mmlab.instruments.proc import (
    _IO,
    _KIND_NAMES,
    _PSS_NAMES,
    Counters,
    MemoryByKind,
    _diff,
    _io_fields,
    _rusage,
    _uss_pss_psutil,
    counters,
    memory_by_kind,
    proc_io,
    rss_bytes,
)

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

_NO_RUSAGE = f"{sys.platform} has no getrusage"


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
