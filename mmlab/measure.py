"""Measure what a piece of code costs the machine: time, page faults, I/O and memory.

``with measure() as m: ...`` records, for the code inside, wall and CPU time, minor and
major page faults (``getrusage``), bytes read from storage and bytes passed through
``read()``-like calls (``/proc/self/io``), and resident memory before and after; optionally
USS and PSS (they read ``smaps``, which costs milliseconds), and, given a file, how many of
its pages entered the page cache.

Read the numbers together. On ext4 with large folios one minor fault can map many pages at
once, and with readahead one major fault can bring in hundreds of MiB. Fault counts alone
undercount I/O, so the result always shows storage bytes and the page-cache change beside
them. A value the OS cannot give is ``None`` and shown as "n/a".
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass
from pathlib import Path

from mmlab import pagecache

__all__ = [
    "Counters",
    "Measurement",
    "counters",
    "format_count",
    "measure",
    "proc_io",
    "rss_bytes",
]

try:
    import resource
except ImportError:  # Windows
    resource = None

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_HAS_PROC = sys.platform.startswith("linux")


def _read_proc(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def proc_io() -> dict[str, int] | None:
    """This process's I/O counters from ``/proc/self/io`` (Linux), or None."""
    raw = _read_proc("/proc/self/io") if _HAS_PROC else None
    if raw is None:
        return None
    pairs = (line.split(b": ") for line in raw.splitlines())
    return {key.decode(): int(value) for key, value in pairs}


def rss_bytes() -> int:
    """This process's resident set size, in bytes."""
    raw = _read_proc("/proc/self/statm") if _HAS_PROC else None
    if raw is not None:
        return int(raw.split()[1]) * _PAGE
    import psutil

    return psutil.Process().memory_info().rss


@dataclass(frozen=True)
class Counters:
    """This process's cumulative counters at one instant; subtract two to measure between."""

    wall_s: float
    cpu_s: float
    minor_faults: int | None
    major_faults: int | None
    read_bytes: int | None  # fetched from storage
    rchar_bytes: int | None  # passed through read()-like calls
    rss: int

    def __sub__(self, earlier: Counters) -> Counters:
        return Counters(
            *(_diff(now, then) for now, then in zip(astuple(self), astuple(earlier), strict=True))
        )


def counters() -> Counters:
    """Read time, page faults, I/O and RSS now (cheap: no smaps, no page-cache scan)."""
    minor = major = None
    if resource is not None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        minor, major = usage.ru_minflt, usage.ru_majflt
    io = proc_io() or {}
    return Counters(
        time.perf_counter(),
        time.process_time(),
        minor,
        major,
        io.get("read_bytes"),
        io.get("rchar"),
        rss_bytes(),
    )


def _uss_pss() -> tuple[int | None, int | None]:
    import psutil

    info = psutil.Process().memory_full_info()
    return getattr(info, "uss", None), getattr(info, "pss", None)


def _diff(after, before):
    return None if after is None or before is None else after - before


def _mib(n: int | None) -> str:
    if n is None:
        return "n/a"
    return f"{n / 2**20:,.1f} MiB" if abs(n) >= 2**20 or n == 0 else f"{n / 2**10:,.0f} KiB"


def format_count(n: int | None) -> str:
    """A count with thousands separators, or "n/a" where the OS gave none."""
    return "n/a" if n is None else f"{n:,}"


@dataclass
class Measurement:
    """What ``measure`` recorded. Byte counts are bytes; None where the OS has no counter."""

    label: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    minor_faults: int | None = None
    major_faults: int | None = None
    read_bytes: int | None = None  # fetched from storage (page-cache misses)
    rchar_bytes: int | None = None  # passed through read(), pread(), readinto() ...
    rss_before: int = 0
    rss_after: int = 0
    uss_before: int | None = None
    uss_after: int | None = None
    pss_before: int | None = None
    pss_after: int | None = None
    file: Path | None = None
    cached_pages_before: int | None = None
    cached_pages_after: int | None = None
    file_pages: int | None = None

    @property
    def rss_delta(self) -> int:
        return self.rss_after - self.rss_before

    @property
    def cached_pages_delta(self) -> int | None:
        return _diff(self.cached_pages_after, self.cached_pages_before)

    def __repr__(self) -> str:
        parts = [
            f"wall {self.wall_s * 1e3:,.3f} ms",
            f"cpu {self.cpu_s * 1e3:,.3f} ms",
            f"faults {format_count(self.minor_faults)} minor"
            f" / {format_count(self.major_faults)} major",
            f"storage read {_mib(self.read_bytes)}",
            f"read() {_mib(self.rchar_bytes)}",
            f"RSS {self.rss_delta / 2**20:+,.1f} MiB",
        ]
        if self.uss_after is not None:
            parts.append(f"USS {_diff(self.uss_after, self.uss_before) / 2**20:+,.1f} MiB")
            parts.append(f"PSS {_diff(self.pss_after, self.pss_before) / 2**20:+,.1f} MiB")
        if self.file is not None:
            parts.append(
                f"page cache {self.cached_pages_before:,} -> {self.cached_pages_after:,} "
                f"of {self.file_pages:,} pages"
            )
        label = f"{self.label}: " if self.label else ""
        return f"<Measurement {label}{', '.join(parts)}>"

    def _repr_html_(self) -> str:
        rows = [
            ("wall time", f"{self.wall_s * 1e3:,.3f} ms"),
            ("CPU time", f"{self.cpu_s * 1e3:,.3f} ms"),
            ("minor page faults", format_count(self.minor_faults)),
            ("major page faults", format_count(self.major_faults)),
            ("read from storage", _mib(self.read_bytes)),
            ("read through read() calls", _mib(self.rchar_bytes)),
            ("RSS before → after", f"{_mib(self.rss_before)} → {_mib(self.rss_after)}"),
        ]
        if self.uss_after is not None:
            rows.append(("USS before → after", f"{_mib(self.uss_before)} → {_mib(self.uss_after)}"))
            rows.append(("PSS before → after", f"{_mib(self.pss_before)} → {_mib(self.pss_after)}"))
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

    ``uss_pss=True`` adds USS and PSS (slow: milliseconds); ``file=`` counts that file's
    pages in the page cache before and after.
    """

    def __init__(
        self, label: str = "", *, uss_pss: bool = False, file: str | os.PathLike[str] | None = None
    ) -> None:
        self.label = label
        self.uss_pss = uss_pss
        self.file = None if file is None else Path(file)
        self.result: Measurement | None = None

    def __enter__(self) -> Measurement:
        m = Measurement(label=self.label, file=self.file)
        if self.file is not None:
            resident = pagecache.residency(self.file)
            m.cached_pages_before, m.file_pages = int(resident.sum()), len(resident)
        if self.uss_pss:
            m.uss_before, m.pss_before = _uss_pss()
        self._start = counters()
        m.rss_before = self._start.rss
        self.result = m
        return m

    def __exit__(self, *exc_info: object) -> None:
        m = self.result
        now = counters()
        change = now - self._start
        m.wall_s, m.cpu_s = change.wall_s, change.cpu_s
        m.minor_faults, m.major_faults = change.minor_faults, change.major_faults
        m.read_bytes, m.rchar_bytes = change.read_bytes, change.rchar_bytes
        m.rss_after = now.rss
        if self.uss_pss:
            m.uss_after, m.pss_after = _uss_pss()
        if self.file is not None:
            m.cached_pages_after = int(pagecache.residency(self.file).sum())

    def __call__(self, func: Callable) -> Callable:
        """Decorate ``func``: each call is measured; the latest result is ``func.measurement``."""

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with measure(self.label or func.__name__, uss_pss=self.uss_pss, file=self.file) as m:
                result = func(*args, **kwargs)
            wrapper.measurement = m
            return result

        wrapper.measurement = None
        return wrapper
