"""Class-wide results: every student's machine side by side, so the class can ask why.

Each lab ends with ``results.save("NN")``, which writes that notebook's measured values, with
the machine's fingerprint, to ``results/NN-<machine id>.jsonl``. The instructor gathers the
class's files in one folder; ``collect(folder)`` reads them (``results.load``) into one
``ClassTable``: a row per machine, its facts (page size, ``read_ahead_kb``, VM or not, file
system) beside the headline measurements of each lab. The plots put each machine on one
figure per headline, labelled, so a difference between two students' numbers can be traced to
the machine fact behind it: one cold fault caches what ``read_ahead_kb`` allows; the block
size where ``read()`` and an mmap slice swap places depends on what a system call costs there.

A machine that saved no file for a notebook, or a value an older version of a lab did not
record, is left out of that figure with a note, never filled in. Before any student has sent
a file, ``mmlab.course.classexample`` writes a SYNTHETIC class (so marked in every line, in the
table and on every figure) to show their shape.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmlab.course import results

__all__ = [
    "HEADLINES",
    "SHAPES",
    "ClassTable",
    "Machine",
    "Point",
    "cached_per_fault",
    "collect",
    "crossover",
    "plot_read_vs_mmap",
    "plot_readahead",
    "plot_workers",
    "read_vs_mmap_curves",
    "readahead_points",
    "warm_ratios",
    "window_pages",
    "worker_points",
]

MiB = 2**20


@dataclass
class Machine:
    """One student's machine: its fingerprint and what it saved, by notebook."""

    id: str
    fingerprint: dict[str, Any]
    values: dict[str, dict[str, Any]] = field(default_factory=dict)  # notebook -> name -> value
    claims: dict[str, dict[str, dict]] = field(default_factory=dict)  # notebook -> key -> row
    predictions: dict[str, dict[str, dict]] = field(default_factory=dict)
    saved_at: dict[str, str] = field(default_factory=dict)  # notebook -> UTC time of its save
    quick: dict[str, bool] = field(default_factory=dict)  # notebook -> saved from a quick run

    @property
    def synthetic(self) -> bool:
        return self.fingerprint.get("synthetic") is True

    @property
    def label(self) -> str:
        """What a figure calls it: its id, page size, read_ahead_kb, and whether a quick run."""
        page, ra = self.fingerprint.get("page_size"), self.fingerprint.get("read_ahead_kb")
        page_text = f"{page // 1024} KiB" if isinstance(page, int) else "?"
        quick = ", quick run" if any(self.quick.values()) else ""
        return f"{self.id} ({page_text}, ra {ra if ra is not None else '?'}{quick})"

    def value(self, notebook: str, name: str) -> Any:
        """The value ``name`` saved from ``notebook``, or None when it was not."""
        return self.values.get(notebook, {}).get(name)

    def where(self) -> str:
        """The facts that most often explain a difference: file system, VM, container, CPU."""
        f = self.fingerprint
        parts = [f.get("filesystem") or "file system ?", f.get("machine") or "?"]
        parts.append({True: "VM", False: "no VM", None: "VM ?"}.get(f.get("hypervisor"), "VM ?"))
        if f.get("cgroup_memory_limit") not in (None, "unlimited"):
            parts.append("memory-limited container")
        return ", ".join(parts)


def cached_per_fault(m: Machine) -> float | None:
    """Pages one cold fault left in the page cache (notebook 03), None if not a cold fault."""
    cached, faults = m.value("03", "cold_cached_pages"), m.value("03", "cold_major_faults")
    if cached is None or not faults:  # no major fault: the page was cached, nothing to divide
        return None
    return cached / faults


def window_pages(m: Machine) -> float | None:
    """The readahead window in pages: read_ahead_kb over the page size."""
    ra, page = m.fingerprint.get("read_ahead_kb"), m.fingerprint.get("page_size")
    return ra * 1024 / page if isinstance(ra, int) and isinstance(page, int) else None


def warm_ratios(m: Machine) -> dict[int, float]:
    """Notebook 04: median speed of an mmap slice over read(), warm, in order, by block size."""
    samples = m.value("04", "warm_slice_over_read") or {}
    return {int(b): statistics.median(s) for b, s in sorted(samples.items(), key=_block) if s}


def _block(item: tuple[str, Any]) -> int:
    return int(item[0])


def crossover(m: Machine) -> str | None:
    """Who won by block size (warm, in order), as a phrase: "mmap at 4 KiB, read from 1 MiB"."""
    sides = m.value("04", "warm_slice_side")
    if not sides:
        return None
    word = {1: "mmap", -1: "read", 0: "tie"}
    runs: list[tuple[str, list[int]]] = []
    for block, side in sorted(sides.items(), key=_block):
        if runs and runs[-1][0] == word.get(side, "?"):
            runs[-1][1].append(int(block))
        else:
            runs.append((word.get(side, "?"), [int(block)]))
    return ", ".join(
        f"{w} {_size(b[0])}" + (f"-{_size(b[-1])}" if len(b) > 1 else "") for w, b in runs
    )


def _kib(nbytes: Any) -> int | None:
    return nbytes // 1024 if isinstance(nbytes, int) else None


def _in_mib(value: float | None) -> float | None:
    return None if value is None else value / MiB


def _size(nbytes: int) -> str:
    return f"{nbytes // MiB} MiB" if nbytes % MiB == 0 else f"{nbytes // 1024} KiB"


# The table's headline columns: (heading, how to compute it from one machine).
HEADLINES: list[tuple[str, Any]] = [
    ("machine", lambda m: m.id),
    ("page (KiB)", lambda m: _kib(m.fingerprint.get("page_size"))),
    ("read_ahead_kb", lambda m: m.fingerprint.get("read_ahead_kb")),
    ("where", Machine.where),
    ("notebooks", lambda m: " ".join(sorted(m.saved_at))),
    ("03 window (pages)", window_pages),
    ("03 cached per cold fault (pages)", cached_per_fault),
    ("04 warm winner by block", crossover),
    ("02 map+unmap one page (µs)", lambda m: m.value("02", "one_page_us")),
    ("06 list worker growth (MiB)", lambda m: _in_mib(m.value("06", "list_worker_growth"))),
    ("06 store worker growth (MiB)", lambda m: _in_mib(m.value("06", "store_worker_growth"))),
]


@dataclass
class ClassTable:
    """A class's machines (one row each) and what could not be read from its folder."""

    machines: list[Machine]
    problems: list[str]
    folder: Path

    @property
    def synthetic(self) -> bool:
        return any(m.synthetic for m in self.machines)

    @property
    def columns(self) -> list[str]:
        return [heading for heading, _ in HEADLINES]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per machine, a key per column; None where that machine has no value."""
        return [{h: compute(m) for h, compute in HEADLINES} for m in self.machines]

    def notes(self) -> list[str]:
        notes = []
        if self.synthetic:
            notes.append("SYNTHETIC EXAMPLE: these rows are invented to show the table's shape; "
                         "they were measured on no machine.")  # fmt: skip
        if any(any(m.quick.values()) for m in self.machines):
            quick = [m.id for m in self.machines if any(m.quick.values())]
            notes.append(
                f"saved from quick runs (MMLAB_QUICK=1, smaller files): {', '.join(quick)}"
            )
        notes += [f"skipped {p}" for p in self.problems]
        return notes

    def __str__(self) -> str:
        shown = [[_cell(v) for v in row.values()] for row in self.rows()]
        widths = [max(len(c) for c in col) for col in zip(self.columns, *shown, strict=True)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in shown]
        head = "  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))
        title = f"{len(self.machines)} machines from {self.folder}"
        return "\n".join([title, head, *lines, *self.notes()])

    def _repr_html_(self) -> str:
        from html import escape

        head = "".join(f"<th>{escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(_cell(v))}</td>" for v in row.values()) + "</tr>"
            for row in self.rows()
        )
        notes = "".join(f"<p>{escape(n)}</p>" for n in self.notes())
        caption = f"{len(self.machines)} machines from {escape(str(self.folder))}"
        return f"<table><caption>{caption}</caption><tr>{head}</tr>{body}</table>{notes}"

    def __repr__(self) -> str:
        return str(self)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _by_block(v: Any, each) -> bool:
    return isinstance(v, dict) and all(k.isdigit() and each(x) for k, x in v.items())


# The shape of each value the table and figures use; a hand-edited or foreign value of
# another shape is left out (and reported) rather than crash a figure in front of the class.
SHAPES = {
    "cold_cached_pages": _number,
    "cold_major_faults": _number,
    "one_page_us": _number,
    "list_worker_growth": _number,
    "store_worker_growth": _number,
    "warm_slice_over_read": lambda v: _by_block(v, lambda s: isinstance(s, list) and all(
        _number(x) for x in s)),
    "warm_slice_side": lambda v: _by_block(v, lambda x: x in (-1, 0, 1)),
}  # fmt: skip


def _checked_fingerprint(fingerprint: dict, problems: list[str], where: str) -> dict:
    for key in ("page_size", "read_ahead_kb"):
        value = fingerprint.get(key)
        if value is not None and not (isinstance(value, int) and value > 0):
            problems.append(f"{where}: {key} {value!r} is not a size, left out")
            fingerprint = fingerprint | {key: None}
    return fingerprint


def collect(folder: str | Path) -> ClassTable:
    """Every student's file in ``folder``, one row per machine (the latest save of each
    value wins when a machine saved a notebook twice)."""
    problems: list[str] = []
    machines: dict[str, Machine] = {}
    lines = results.load(folder, problems=problems)
    for line in sorted(lines, key=lambda row: row["saved_at"]):
        m = machines.setdefault(line["machine_id"], Machine(line["machine_id"], {}))
        # the latest save describes the machine
        m.fingerprint = _checked_fingerprint(line["fingerprint"], problems, line["file"])
        nb, name, value = line["notebook"], line["name"], line.get("value")
        m.saved_at[nb], m.quick[nb] = line["saved_at"], bool(line.get("quick"))
        if (
            line["kind"] == "value"
            and value is not None
            and not SHAPES.get(name, lambda v: True)(value)
        ):
            shown = repr(value)[:40]
            problems.append(f"{line['file']}: {name} = {shown} is not what {nb} saves, left out")
        elif line["kind"] == "value":
            m.values.setdefault(nb, {})[name] = value
        elif line["kind"] == "claim":
            m.claims.setdefault(nb, {})[name] = value
        elif line["kind"] == "prediction":
            m.predictions.setdefault(nb, {})[name] = line
    unique = list(dict.fromkeys(problems))  # a fingerprint's problem once, not once a line
    return ClassTable(sorted(machines.values(), key=lambda m: m.id), unique, Path(folder))


@dataclass(frozen=True)
class Point:
    """One machine on one figure."""

    label: str
    x: float
    y: float


def _absent(m: Machine, notebook: str, names: Iterable[str]) -> str | None:
    """Why ``m`` has no point on a figure from ``notebook``, or None if it has the values."""
    if notebook not in m.saved_at:
        return f"{m.id}: no file from notebook {notebook}"
    lacking = [n for n in names if m.value(notebook, n) is None]
    if lacking:
        return f"{m.id}: notebook {notebook} saved no {', '.join(lacking)}"
    return None


def readahead_points(table: ClassTable) -> tuple[list[Point], list[str]]:
    """Notebook 03 per machine: x read_ahead_kb, y KiB one cold fault left cached."""
    points, missing = [], []
    for m in table.machines:
        why = _absent(m, "03", ["cold_cached_pages", "cold_major_faults"])
        ra, page, per_fault = (
            m.fingerprint.get("read_ahead_kb"),
            m.fingerprint.get("page_size"),
            0.0,
        )
        if why is None:
            per_fault = cached_per_fault(m)
            why = None if per_fault else f"{m.id}: no major fault (the page was cached)"
        if why is None and not (isinstance(ra, int) and isinstance(page, int)):
            why = f"{m.id}: read_ahead_kb not known there ({m.fingerprint.get('filesystem')})"
        if why:
            missing.append(why)
        else:
            points.append(Point(m.label, float(ra), per_fault * page / 1024))
    return points, missing


def read_vs_mmap_curves(table: ClassTable) -> tuple[dict[str, list[Point]], list[str]]:
    """Notebook 04 per machine: mmap slice speed over read()'s (x block bytes), warm, in order."""
    curves, missing = {}, []
    for m in table.machines:
        why = _absent(m, "04", ["warm_slice_over_read"])
        if why:
            missing.append(why)
        else:
            curves[m.label] = [Point(m.label, b, r) for b, r in warm_ratios(m).items()]
    return curves, missing


def worker_points(table: ClassTable) -> tuple[list[Point], list[str]]:
    """Notebook 06 per machine: x a worker's growth over a Python list, y over the store (MiB)."""
    points, missing = [], []
    for m in table.machines:
        why = _absent(m, "06", ["list_worker_growth", "store_worker_growth"])
        if why:
            missing.append(why)
        else:
            lst, sto = m.value("06", "list_worker_growth"), m.value("06", "store_worker_growth")
            points.append(Point(m.label, lst / MiB, sto / MiB))
    return points, missing


def _figure(table: ClassTable, title: str, missing: list[str], what: str):
    """A figure with the class's title, SYNTHETIC on it if so, and who is not on it."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    banner = "SYNTHETIC EXAMPLE: invented, not measurements\n" if table.synthetic else ""
    ax.set_title(banner + title, color="crimson" if table.synthetic else "black")
    if missing:
        text = f"Not shown ({what}): " + "; ".join(missing)
        fig.text(0.01, 0.01, text, fontsize=7, wrap=True, va="bottom")
        fig.subplots_adjust(bottom=0.22)
    return fig, ax


def _label(ax, points: list[Point]) -> None:
    """Each machine a point, labelled; machines on the same spot share one label."""
    spots: dict[tuple[float, float], list[str]] = {}
    for p in points:
        spots.setdefault((p.x, p.y), []).append(p.label)
    middle = sorted(x for x, _ in spots)[len(spots) // 2]
    for (x, y), labels in spots.items():
        ax.scatter(x, y, s=40, zorder=3)
        right = x > middle  # labels of the right-hand points go to their left, inside the axes
        ax.annotate("\n".join(labels), (x, y), xytext=(-6 if right else 6, 4), fontsize=8,
                    textcoords="offset points", ha="right" if right else "left")  # fmt: skip


def _nothing(what: str, missing: list[str]) -> None:
    print(f"No machine has {what} yet, so no figure:", *missing, sep="\n  ")


def plot_readahead(table: ClassTable):
    """Each machine's one cold fault against its read_ahead_kb; the diagonal is one window."""
    points, missing = readahead_points(table)
    if not points:
        return _nothing("notebook 03's cold fault", missing)
    fig, ax = _figure(table, "One cold fault: what it cached, against read_ahead_kb", missing, "03")
    _label(ax, points)
    ends = [min(p.x for p in points) / 2, max(p.x for p in points) * 2]
    ax.plot(ends, ends, color="grey", linestyle="--", label="exactly one readahead window")
    ax.set(xscale="log", yscale="log", xlabel="read_ahead_kb of the disk under data/ (KiB)")
    ax.set_ylabel("KiB in the page cache after one cold fault (03)")
    ax.legend(loc="upper left")
    return fig


def plot_read_vs_mmap(table: ClassTable):
    """Each machine's mmap-slice / read() speed by block size, warm; above 1 mmap was faster."""
    curves, missing = read_vs_mmap_curves(table)
    if not curves:
        return _nothing("notebook 04's warm race", missing)
    fig, ax = _figure(table, "Warm, in order: mmap slice speed / read() speed", missing, "04")
    for label, points in curves.items():
        ax.plot([p.x for p in points], [p.y for p in points], marker="o", label=label)
    blocks = sorted({p.x for points in curves.values() for p in points})
    ax.set_xscale("log")
    ax.set_xticks(blocks, [_size(int(b)) for b in blocks])
    ax.minorticks_off()
    ax.axhline(1.0, color="grey", linestyle="--")
    ax.set(xlabel="block size", ylabel="mmap slice / read() (above 1: mmap faster)")
    ax.legend(fontsize=8)
    return fig


def plot_workers(table: ClassTable):
    """Each machine a row: a DataLoader worker's growth over a Python list and over the store."""
    points, missing = worker_points(table)
    if not points:
        return _nothing("notebook 06's workers", missing)
    fig, ax = _figure(table, "Private memory one worker gained in one epoch", missing, "06")
    rows = range(len(points))
    ax.scatter([p.x for p in points], rows, marker="o", s=50, label="over a Python list")
    ax.scatter([p.y for p in points], rows, marker="s", s=50, label="over the mapped store")
    ax.set_yticks(rows, [p.label for p in points])
    ax.axvline(0, color="grey", linewidth=0.8)  # growth can be negative: memory given back
    ax.set(xlabel="MiB of private memory gained per worker (06)")
    ax.legend(loc="best")
    return fig
