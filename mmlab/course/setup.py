"""Learner setup: is this machine ready for every notebook, and what to do where it is not.

``mmlab doctor`` says what each lab will *show* on a machine; ``mmlab doctor --setup`` asks
the question before it: will each notebook *run* here? It reads the notebooks themselves, so
what it checks follows them as they change:

* the packages each notebook needs: the lab's base (every notebook runs in JupyterLab with
  figures and widgets), the modules its code cells import (read with ``ast``), and the ones
  ``mmlab`` imports only inside the functions the notebook calls (QM9 from ``qm9pack``,
  RDKit for PyG's SMILES, PyTorch for the DataLoader), each against mmlab's requirements;
* the Python version mmlab requires, Linux (the instruments read ``/proc`` and ``/sys``),
  QM9 offline (qm9pack's CSV files, and whether the converted cache is built yet);
* the disk each notebook's data files take at full size, computed from the values its
  ``parameters`` cell sets, against the free space of ``notebooks/data``;
* the machine facts of ``mmlab.machine.report`` (eviction, ``/proc`` files, memory, cgroup
  limits, a hypervisor) and, per notebook, the sections ``mmlab.doctor`` says will not show
  as the text describes, with its reason.

A notebook is *not ready* when it cannot run to the end (a missing package, no QM9, too
little disk, not Linux); sections that will look different are notes, not failures.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mmlab.course.setupneeds import (
    LAB,
    Check,
    Problem,
    data_files,
    installed,
    notebook_needs,
    qm9_offline,
    requirement,
)
from mmlab.instruments.facts import format_size

__all__ = ["Check", "NotebookSetup", "Problem", "SetupReport", "check_setup", "find_notebooks"]


@dataclass(frozen=True)
class NotebookSetup:
    """Whether one notebook runs here; what stops it; what will look different."""

    notebook: str
    title: str
    problems: tuple[Problem, ...]
    notes: tuple[str, ...] = ()  # the doctor's sections that will not show as the text says
    data_files: str = ""
    disk_bytes: int | None = None  # its data files at full size
    packages: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return not self.problems

    def line(self) -> str:
        if self.ready:
            return f"{self.notebook} ready"
        return f"{self.notebook} not ready: " + "; ".join(str(p) for p in self.problems)

    def to_json(self) -> dict:
        return {
            "notebook": self.notebook,
            "title": self.title,
            "ready": self.ready,
            "problems": [{"what": p.what, "fix": p.fix} for p in self.problems],
            "notes": list(self.notes),
            "data_files": self.data_files,
            "disk_bytes": self.disk_bytes,
            "packages": list(self.packages),
        }


@dataclass(frozen=True)
class SetupReport:
    """The setup check: machine facts, one verdict per notebook, and a summary."""

    checks: tuple[Check, ...]
    notebooks: tuple[NotebookSetup, ...]
    extra: dict = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return bool(self.notebooks) and all(n.ready for n in self.notebooks)

    def summary(self) -> str:
        ready = [n.notebook for n in self.notebooks if n.ready]
        waiting = [n.notebook for n in self.notebooks if not n.ready]
        if not waiting:
            head = f"Ready: all {len(ready)} notebooks can run here"
        else:
            head = (
                f"Not ready: {len(ready)} of {len(self.notebooks)} notebooks can run here; "
                f"fix the lines above for {', '.join(waiting)}, then run `make check-setup` again"
            )
        noted = sum(bool(n.notes) for n in self.notebooks)
        if noted:
            head += (
                f". {noted} notebook(s) will show some sections differently on this machine "
                "(the indented notes; `mmlab doctor` explains every section)"
            )
        return head + "."

    def __str__(self) -> str:
        lines = ["mmlab doctor --setup: is this machine ready for every notebook?", ""]
        lines += ["This machine:", *(str(c) for c in self.checks), "", "Notebooks:"]
        for n in self.notebooks:
            lines.append(n.line())
            lines += [f"    - {note}" for note in (n.data_files, *n.notes) if note]
        return "\n".join([*lines, "", self.summary()])

    def to_json(self) -> dict:
        return {
            "ready": self.ready,
            "summary": self.summary(),
            "checks": [{"name": c.name, "ok": c.ok, "said": c.said} for c in self.checks],
            "notebooks": [n.to_json() for n in self.notebooks],
            **self.extra,
        }


def find_notebooks(path: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the numbered notebooks: ``path`` (or its parent, for
    ``notebooks/data``), else ``./notebooks``, the current folder, or the repository's."""
    here = Path.cwd()
    candidates = [] if path is None else [Path(path), Path(path).parent]
    candidates += [here / "notebooks", here, Path(__file__).resolve().parents[2] / "notebooks"]
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("[0-9][0-9]_*.ipynb")):
            return folder
    raise FileNotFoundError(
        "no notebooks (NN_*.ipynb) found: run `mmlab doctor --setup` from the repository's "
        "root, or give the notebooks folder as PATH"
    )


# ---------------------------------------------------------------- packages and Python


def _package_problem(module: str) -> Problem | None:
    """None where ``module`` is importable and its version meets mmlab's requirement."""
    wanted, extra = requirement(module)
    fix = LAB if extra is None else f"{LAB}, or `pip install -e '.[{extra}]'`"
    if not installed(module):
        return Problem(f"{module} missing", fix)
    if wanted is None:
        return None
    try:
        version = importlib.metadata.version(wanted.name)
    except importlib.metadata.PackageNotFoundError:
        return None  # importable but installed another way (a system package): trust it
    if not wanted.specifier.contains(version, prereleases=True):
        return Problem(f"{module} {version} installed, the course needs {wanted}", fix)
    return None


def _widgets_extension() -> Problem | None:
    """JupyterLab draws ipywidgets only with the @jupyter-widgets/jupyterlab-manager extension."""
    try:
        from jupyter_core.paths import jupyter_path
    except ImportError:
        return Problem("jupyter_core missing (JupyterLab is not installed)", LAB)
    for folder in jupyter_path("labextensions"):
        if (Path(folder) / "@jupyter-widgets" / "jupyterlab-manager").is_dir():
            return None
    return Problem(
        "the JupyterLab widgets extension is missing (widgets would show as text)",
        "`pip install jupyterlab_widgets` in the environment JupyterLab runs from, then "
        "restart JupyterLab",
    )


def _python_check() -> tuple[Check, Problem | None]:
    try:
        wanted = importlib.metadata.metadata("mmlab")["Requires-Python"]
    except importlib.metadata.PackageNotFoundError:
        wanted = None
    have = ".".join(map(str, sys.version_info[:3]))
    if not wanted:
        return Check("Python", None, f"{have} (mmlab is not installed: requirement unknown)"), None
    from packaging.specifiers import SpecifierSet

    if SpecifierSet(wanted).contains(have, prereleases=True):
        return Check("Python", True, f"{have} ({sys.executable}); mmlab needs {wanted}"), None
    problem = Problem(
        f"Python {have}, mmlab needs {wanted}", f"install Python {wanted}, then {LAB}"
    )
    return Check("Python", False, str(problem)), problem


# ---------------------------------------------------------------- the machine


def _machine_checks(report) -> list[Check]:
    """The facts of ``mmlab.machine.report`` a learner's setup turns on, in plain words."""
    f = report.facts
    checks = []
    works = f["eviction_works"]
    if works.value is True:
        checks.append(
            Check("page-cache eviction", True, "works (posix_fadvise DONTNEED, no root needed)")
        )
    else:
        why = works.source if works.known else works.reason
        checks.append(
            Check("page-cache eviction", None, f"does not work here ({why}): cold runs are warm")
        )
    for key, name, counts in (
        ("proc_self_io", "/proc/self/io", "bytes read from storage are counted"),
        ("smaps_rollup", "/proc/self/smaps_rollup", "USS and PSS are measured (06)"),
    ):
        info = f[key]
        said = f"readable: {counts}" if info.value is True else (info.source or "")
        checks.append(Check(name, info.value is True, said if info.known else info.reason))
    root = "yes" if os.geteuid() == 0 else "no"
    around = f["fault_around_bytes"]
    checks.append(
        Check(
            "root",
            None,
            f"{root}; /proc/kpageflags (folio sizes) {_readable('/proc/kpageflags')}; "
            + (
                f"fault_around_bytes {around.value:,}"
                if around.known
                else "fault_around_bytes unknown (debugfs)"
            )
            + ": where unknown, the notebooks say so and print pages mapped per fault",
        )
    )
    memory, limit = f["memory_available"], f["cgroup_memory_limit"]
    said = f"{format_size(memory.value)} available" if memory.known else memory.reason
    if isinstance(limit.value, int):
        said += f"; cgroup limit {format_size(limit.value)} (a container or a JupyterHub)"
    checks.append(Check("memory", None, said))
    hints = _container_hints(f["hypervisor"])
    if hints:
        checks.append(Check("container or VM", None, "; ".join(hints)))
    return checks


def _readable(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.read(8)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    return "readable"


def _container_hints(hypervisor) -> list[str]:
    hints = []
    if hypervisor.known and hypervisor.value:
        hints.append("a virtual machine (the CPU's 'hypervisor' flag is set)")
    if Path("/.dockerenv").exists() or Path("/run/.containerenv").exists():
        hints.append("a container (/.dockerenv or /run/.containerenv)")
    if os.environ.get("JUPYTERHUB_USER"):
        hints.append(f"a JupyterHub server of {os.environ['JUPYTERHUB_USER']}")
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        hints.append("a Kubernetes pod")
    return hints


def _disk_problem(files: list, free: int | None, data: Path) -> tuple:
    """(bytes at full size, bytes still to write, a Problem or None, a note) for one
    notebook's data files; a file already in ``data`` is rewritten in place."""
    unknown = [name for name, size, _ in files if size is None]
    full = sum(size for _, size, _ in files if size)
    new = sum(max(0, size - _size_of(data / name)) for name, size, _ in files if size)
    what = ", ".join(f"{name} {format_size(size)}" for name, size, _ in files if size)
    note = f"data files at full size: {what or 'none large'}"
    if unknown:
        why = "; ".join(f"{name}: {reason}" for name, size, reason in files if size is None)
        note += f" (and {', '.join(unknown)}, size unknown: {why})"
    if free is not None and new > free:
        fix = f"free {format_size(new - free)} on the file system of {data}"
        problem = Problem(
            f"{format_size(new)} of data files to write, {format_size(free)} free", fix
        )
        return full, new, problem, note
    return full, new, None, note


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# ---------------------------------------------------------------- everything


def check_setup(
    notebooks: str | os.PathLike[str] | None = None, *, measure: bool = True
) -> SetupReport:
    """Check this machine for every notebook in ``notebooks`` (found by ``find_notebooks``).

    ``measure`` runs ``mmlab.machine.report``'s probe (a file of 32 MiB or more is written in
    ``notebooks/data`` and removed; well under a second on a local disk).
    """
    folder = find_notebooks(notebooks)
    data = folder / "data"
    python, python_problem = _python_check()
    checks = [python]
    report, linux_problem = None, None
    if sys.platform.startswith("linux"):
        from mmlab.instruments import machine

        report = machine.report(data if data.is_dir() else folder, measure=measure)
        kernel = report.facts["kernel"].value
        checks.append(Check("Linux", True, f"{kernel}; notebooks/data is on {_fs(report)}"))
        checks += _machine_checks(report)
    else:
        linux_problem = Problem(
            f"this is {sys.platform}, not Linux: the instruments read /proc and /sys",
            "use a Linux VM, a container (repo2docker) or the course's JupyterHub",
        )
        checks.append(Check("Linux", False, str(linux_problem)))
    qm9_checks, qm9_problem, store_bytes = qm9_offline()
    checks += qm9_checks
    widgets = _widgets_extension()
    if widgets is not None:
        checks.append(Check("JupyterLab widgets", False, str(widgets)))
    free = report.facts["free_space"].value if report is not None else None
    results, total, largest = [], 0, (0, "")
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        needs = notebook_needs(path)
        problems = [p for p in (python_problem, linux_problem) if p is not None]
        problems += [p for m in needs.modules if (p := _package_problem(m)) is not None]
        if "qm9pack" in needs.modules and qm9_problem is not None and installed("qm9pack"):
            problems.append(qm9_problem)
        if "ipywidgets" in needs.modules and widgets is not None:
            problems.append(widgets)
        files = data_files(needs, report, store_bytes)
        full, new, disk, note = _disk_problem(files, free, data)
        total, largest = total + new, max(largest, (full, needs.number))
        problems += [disk] if disk else []
        notes = tuple(_advice_notes(report, needs.number))
        results.append(
            NotebookSetup(
                needs.number, needs.title, tuple(problems), notes, note, full, needs.modules
            )
        )
    if free is not None:
        enough = free >= total
        checks.append(
            Check(
                "disk",
                True if enough else None,
                f"{format_size(free)} free for notebooks/data; the largest notebook, "
                f"{largest[1]}, writes {format_size(largest[0])} at full size; all notebooks' "
                f"data files not yet written: {format_size(total)}"
                + ("" if enough else ": delete a finished notebook's files from data/"),
            )
        )
    return SetupReport(tuple(checks), tuple(results), {"notebooks_folder": str(folder)})


def _fs(report) -> str:
    fs = report.facts["filesystem"]
    return str(fs.value) if fs.known else f"an unknown file system ({fs.reason})"


def _advice_notes(report, number: str) -> list[str]:
    """The doctor's sections of this notebook that will not show as its text says, and why."""
    if report is None:
        return []
    from mmlab.course.advice import VERDICTS

    return [
        f"§{a.section} {a.title}: {VERDICTS[a.verdict]}: {a.warnings[0]}"
        for a in report.advice
        if a.notebook == number and a.warnings
    ]
