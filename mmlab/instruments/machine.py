"""What decides the numbers a lab shows: this machine and a file system, read and measured.

Students' numbers differ from the instructor's for reasons that can be named: the page size,
the block device's readahead, large folios, tmpfs, a container's memory limit, a noisy
shared machine. ``report(path)`` gathers them for the machine and for the file system that
holds ``path`` (default: the notebooks' ``data`` folder, else the current directory):

* read from the system (``mmlab.sysinfo``): kernel, page size, CPUs, memory, cgroup limits,
  resource limits, transparent huge pages, ``vm.*`` settings, the file system and its block
  device, and which instruments work here;
* measured (``mmlab.probe``) with a probe file written next to ``path`` and removed: whether
  eviction works, what one touch of an evicted page faults, maps, caches and reads from
  storage, how long one read of an evicted page takes, how many pages one touch of a warm
  page maps (large folios), how long a write plus ``flush()`` of a mapping takes; and the
  memory-copy rate, as the median of interleaved rounds with their spread.

Each value is a ``Fact`` (with where it came from) or ``Unknown`` (with why): nothing is
filled in from defaults. ``mmlab.doctor`` turns the facts into advice per notebook section;
``mmlab doctor [PATH] [--json]`` prints it all. ``fingerprint()`` is a short JSON-able
summary to label saved results with.
"""

from __future__ import annotations

import errno
import mmap
import os
import platform
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from html import escape
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from mmlab.course import doctor
from mmlab.instruments import probe, sysinfo
from mmlab.instruments.sysinfo import Fact, Info, Unknown, format_size

__all__ = ["FACT_KEYS", "Fact", "MachineReport", "Unknown", "fingerprint", "report"]

_PAGE = mmap.PAGESIZE

# key, group, label: the order of the report
_LAYOUT = (
    ("kernel", "machine", "kernel"),
    ("page_size", "machine", "page size"),
    ("allocation_granularity", "machine", "mmap offset granularity"),
    ("cpu_count", "machine", "CPUs"),
    ("cpus_usable", "machine", "CPUs this process may use"),
    ("cpu_model", "machine", "CPU"),
    ("hypervisor", "machine", "virtual machine"),
    ("memory_total", "memory and limits", "memory"),
    ("memory_available", "memory and limits", "memory available"),
    ("cgroup_memory_limit", "memory and limits", "cgroup memory limit"),
    ("cgroup_cpu_limit", "memory and limits", "cgroup CPU limit"),
    ("rlimit_data", "memory and limits", "RLIMIT_DATA"),
    ("memory_limit_mechanism", "memory and limits", "memory limit for one child (lab 07)"),
    ("swap_total", "memory and limits", "swap"),
    ("lru_gen", "memory and limits", "MGLRU (multi-generational LRU)"),
    ("psi_memory", "memory and limits", "memory pressure (PSI)"),
    ("rlimit_nofile", "memory and limits", "RLIMIT_NOFILE (open files)"),
    ("thp_enabled", "kernel settings", "transparent huge pages"),
    ("thp_shmem_enabled", "kernel settings", "huge pages on tmpfs (shmem_enabled)"),
    ("max_map_count", "kernel settings", "vm.max_map_count"),
    ("dirty_ratio", "kernel settings", "vm.dirty_ratio"),
    ("dirty_background_ratio", "kernel settings", "vm.dirty_background_ratio"),
    ("dirty_expire_centisecs", "kernel settings", "vm.dirty_expire_centisecs"),
    ("dirty_writeback_centisecs", "kernel settings", "vm.dirty_writeback_centisecs"),
    ("fault_around_bytes", "kernel settings", "fault_around_bytes"),
    ("filesystem", "file system", "file system"),
    ("mount_point", "file system", "mount point"),
    ("block_device", "file system", "block device"),
    ("read_ahead_kb", "file system", "read_ahead_kb"),
    ("free_space", "file system", "free space"),
    ("journal", "file system", "journal"),
    ("eviction_works", "file system", "eviction works"),
    ("cold_touch", "file system", "touch one page after eviction"),
    ("cold_read", "file system", "read() one page after eviction"),
    ("warm_touch", "file system", "touch one page of a warm file"),
    ("large_folios", "file system", "large folios"),
    ("flush", "file system", "write one byte to a mapping, flush()"),
    ("mincore_trustworthy", "file system", "mincore trustworthy"),
    ("cachestat", "instruments", "cachestat system call"),
    ("proc_self_io", "instruments", "/proc/self/io"),
    ("smaps_rollup", "instruments", "/proc/self/smaps_rollup (USS, PSS)"),
    ("memory_copy", "memory copy", "memory-copy rate"),
)
FACT_KEYS = tuple(key for key, _, _ in _LAYOUT)


_PROBE_OUTCOMES = {"cold_touch", "warm_touch", "cold_read", "flush"}
_NO_WARNINGS = (
    "No warnings for this notebook here: every section should show its effect as its text "
    "says (`mmlab doctor` says what each will show)."
)


@dataclass(frozen=True)
class MachineReport:
    """Facts about this machine and ``path``'s file system, and what they mean for each lab.

    ``report.read_ahead_kb.value``: every fact is an attribute (a ``Fact`` or ``Unknown``);
    ``report.advice`` says per notebook section what will show clearly here and why;
    ``report.to_dict()`` is the JSON of ``mmlab doctor --json``.
    """

    path: str
    facts: Mapping[str, Info]
    advice: tuple = ()
    seconds: float = 0.0
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    shown: tuple[str, ...] = FACT_KEYS  # the facts str() and the HTML table show

    def for_notebook(self, notebook: str, *, outcomes: bool = False) -> MachineReport:
        """The same report, showing only what decides ``notebook``'s results (e.g. "03"):
        the facts its sections' advice names, with the kernel and page size.

        A notebook opens with this before it asks its predictions, so the advice it shows
        is only the warnings (sections that will look different here, or cannot be judged,
        and why); ``outcomes=True`` shows every section's advice, with what it will show.
        """
        advice = tuple(a for a in self.advice if a.notebook in (notebook, "all"))
        named = {"kernel", "page_size", "cpus_usable"} | {f for a in advice for f in a.facts}
        if not outcomes:  # the probe's own touches would answer the notebook's predictions
            named -= _PROBE_OUTCOMES
        shown = tuple(key for key in FACT_KEYS if key in named)
        if not outcomes:
            advice = tuple(
                replace(a, reasons=a.warnings) for a in advice if a.verdict != doctor.CLEAR
            )
        return replace(self, advice=advice, shown=shown)

    def __getattr__(self, name: str) -> Info:
        facts = self.__dict__.get("facts", {})
        if name in facts:
            return facts[name]
        raise AttributeError(name)

    def __dir__(self):
        return [*super().__dir__(), *FACT_KEYS]

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "created": self.created,
            "seconds": round(self.seconds, 3),
            "facts": {key: self.facts[key].to_json() for key in FACT_KEYS},
            "advice": [a.to_json() for a in self.advice],
        }

    def rows(self):
        """(group, label, shown value, source or reason, known) for every fact, in order."""
        for key, group, label in _LAYOUT:
            if key not in self.shown:
                continue
            info = self.facts[key]
            shown = _show(key, info.value) if info.known else "unknown"
            yield group, label, shown, info.source if info.known else info.reason, info.known

    def __str__(self) -> str:
        lines = [f"mmlab doctor: this machine, and the file system of {self.path}"]
        group, width = None, max(len(label) for _, _, label in _LAYOUT)
        for g, label, shown, note, known in self.rows():
            if g != group:
                group = g
                lines.append(f"{g}:")
            line = f"  {label:<{width}} {shown}"
            lines.append(line if known else f"{line}: {note}")
        if self.advice:
            lines.append("")
            lines.append("What the labs will show here (full size; see mmlab.doctor):")
            for a in self.advice:
                lines.append(str(a))
        elif self.shown != FACT_KEYS:
            lines += ["", _NO_WARNINGS]
        lines.append(
            f"(gathered in {self.seconds:.2f} s; where each value came from: mmlab doctor "
            "--json, or report.to_dict() and the HTML table in a notebook)"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<MachineReport {self.path}: {len(self.facts)} facts, {len(self.advice)} sections>"

    def _repr_html_(self) -> str:
        body, group = [], None
        for g, label, shown, note, known in self.rows():
            if g != group:
                group = g
                body.append(f"<tr><th colspan='3' style='text-align:left'>{escape(g)}</th></tr>")
            style = "" if known else " style='color:#888;font-style:italic'"
            body.append(
                f"<tr{style}><td style='text-align:left'>{escape(label)}</td>"
                f"<td style='text-align:left'>{escape(shown)}</td>"
                f"<td style='text-align:left;font-size:smaller'>{escape(note)}</td></tr>"
            )
        facts = (
            f"<table><caption>this machine, and the file system of <code>{escape(self.path)}"
            f"</code></caption><tr><th>fact</th><th>value</th><th>from, or why unknown</th></tr>"
            + "".join(body)
            + "</table>"
        )
        if not self.advice:
            return facts + f"<p>{escape(_NO_WARNINGS)}</p>"
        return facts + doctor.advice_html(self.advice)


def _show(key: str, value: Any) -> str:
    """A value as a person reads it."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key in (
        "memory_total",
        "memory_available",
        "free_space",
        "cgroup_memory_limit",
        "swap_total",
    ):
        return value if isinstance(value, str) else format_size(value)
    if key in ("page_size", "allocation_granularity", "fault_around_bytes"):
        return f"{value:,} bytes"
    if key in ("rlimit_data", "rlimit_nofile"):
        amount = format_size if key == "rlimit_data" else "{:,}".format
        return ", ".join(f"{k} {v if isinstance(v, str) else amount(v)}" for k, v in value.items())
    if key == "cgroup_cpu_limit":
        return value if isinstance(value, str) else f"{value:g} CPUs"
    if key == "block_device":
        extra = f", {value['detail']}" if value.get("detail") else ""
        return f"{value['name']} ({value['kind']}, {value['dev']}{extra})"
    if key == "cold_touch":
        storage = "n/a" if value["storage_bytes"] is None else format_size(value["storage_bytes"])
        return (
            f"{_faults(value['major_faults'], 'major')} + {_faults(value['minor_faults'], 'minor')}"
            f"; {value['pages_mapped']:,} pages mapped; {storage} read from storage; "
            f"{value['pages_cached_at_once']:,} pages cached at once, "
            f"{value['pages_cached']:,} ({format_size(value['pages_cached'] * _PAGE)}) "
            "once the reads finished"
        )
    if key == "warm_touch":
        pages = value["folio_pages"]
        folio = f"; its folio: {pages:,} page{'' if pages == 1 else 's'}" if pages else ""
        return (
            f"{value['pages_mapped']:,} pages mapped by "
            f"{_faults(value['minor_faults'], 'minor')}{folio}"
        )
    if key in ("cold_read", "flush"):
        return (
            f"{_ms(value['median'])} median of {value['rounds']} "
            f"({_ms(value['min'])} to {_ms(value['max'])})"
        )
    if key == "memory_copy":
        return (
            f"{value['median'] / 1e9:.1f} GB/s median of {value['rounds']} rounds "
            f"(min-max {value['min'] / 1e9:.1f}-{value['max'] / 1e9:.1f}, "
            f"IQR {value['q1'] / 1e9:.1f}-{value['q3'] / 1e9:.1f})"
        )
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _faults(n: int, kind: str) -> str:
    return f"{n:,} {kind} fault{'' if n == 1 else 's'}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


# ---------------------------------------------------------------- the report


def report(path: str | os.PathLike[str] | None = None, *, measure: bool = True) -> MachineReport:
    """Gather every fact about this machine and ``path``'s file system, then the advice.

    ``path`` (a file or folder; default ``sysinfo.default_path()``) chooses the file system.
    The probe writes a 32 MiB file beside it (more where readahead is larger) and removes
    it; ``measure=False`` skips the probe and the memory-copy rounds (their facts are then
    ``Unknown``) and only reads the system. Takes well under a second on a local disk.
    """
    if not sys.platform.startswith("linux"):
        raise OSError(
            errno.ENOSYS, f"mmlab.machine reads Linux's /proc and /sys; this is {sys.platform}"
        )
    start = time.perf_counter()
    path = Path(sysinfo.default_path() if path is None else path).absolute()
    os.stat(path)  # a missing path is an error, not a report about its parent
    facts = sysinfo.machine_facts()
    fs_facts, fstype = sysinfo.file_system_facts(path)
    facts |= fs_facts
    facts["mincore_trustworthy"] = sysinfo.mincore_trust(path)
    ra = facts["read_ahead_kb"].value
    if measure:
        facts |= probe.probe(path, fstype, ra)
    else:
        facts |= probe.unknown("not measured: report(measure=False)", fstype)
    facts["memory_copy"] = (
        probe.memory_copy() if measure else Unknown("not measured: report(measure=False)")
    )

    facts = {key: facts[key] for key in FACT_KEYS}
    advice = doctor.advise(facts)
    return MachineReport(
        str(path), MappingProxyType(facts), tuple(advice), time.perf_counter() - start
    )


def fingerprint(path: str | os.PathLike[str] | None = None, *, bandwidth: bool = True) -> dict:
    """A short JSON-able summary of what decides a result, to store beside it.

    Only what stays put between runs, plus (unless ``bandwidth=False``) the memory-copy
    median of this moment, ``memory_copy_gb_s``. No probe file is written; ``None`` marks
    a value this machine would not give.
    """
    import mmlab

    path = Path(sysinfo.default_path() if path is None else path).absolute()
    facts = sysinfo.machine_facts()
    fs_facts, _ = sysinfo.file_system_facts(path)
    facts |= fs_facts
    keep = (
        "kernel", "page_size", "cpu_count", "cpus_usable", "cpu_model", "hypervisor",
        "memory_total", "cgroup_memory_limit", "cgroup_cpu_limit", "thp_enabled",
        "filesystem", "read_ahead_kb", "cachestat",
    )  # fmt: skip
    summary = {key: facts[key].value for key in keep}
    summary["block_device"] = facts["block_device"].value and facts["block_device"].value["name"]
    summary |= {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "mmlab": mmlab.__version__,
    }
    if bandwidth:
        summary["memory_copy_gb_s"] = round(probe.memory_copy().value["median"] / 1e9, 2)
    return summary
