"""What each notebook needs from a learner's machine, read from the notebook itself.

``mmlab doctor --setup`` (``mmlab.course.setup``) checks a machine against these needs, so
they follow the notebooks as they change instead of a list typed beside them:

* the modules: the lab's base (every notebook runs in JupyterLab, draws with matplotlib and
  shows widgets), every third-party module its code cells import (``ast`` on each cell, with
  IPython's ``%`` and ``!`` lines left out), and those ``mmlab`` imports only inside the
  functions the notebook calls (found by the calls in its cells);
* the full-size parameters: its ``parameters`` cell run with ``MMLAB_QUICK`` unset, and from
  them the size of each large data file it writes to ``notebooks/data``.

``qm9_offline()`` checks QM9 without building anything: qm9pack's CSV files, and whether the
converted store and PyG's SMILES counts are cached yet. ``requirement(module)`` is mmlab's own
requirement for a module (its version range and the
extra that brings it), read from the installed package's metadata.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import mmap
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mmlab.instruments.facts import format_size

__all__ = [
    "BASE_MODULES",
    "LAB",
    "Check",
    "Needs",
    "Problem",
    "data_files",
    "installed",
    "notebook_needs",
    "qm9_offline",
    "requirement",
]

LAB = "run `make lab` (it installs the course into .venv)"

# Every notebook runs in JupyterLab (ipykernel), with figures (matplotlib) and widgets
# (ipywidgets: live views, predictions); mmlab itself needs numpy, psutil and tqdm.
BASE_MODULES = ("numpy", "psutil", "tqdm", "matplotlib", "ipywidgets", "jupyterlab", "ipykernel")

# mmlab functions that import a package only when called: (calls in a cell, the module, why)
_LAZY = (
    (re.compile(r"\bqm9\.(records|to_store)\(|\bpeers\.qm9_columns\("), "qm9pack", "QM9 offline"),
    (re.compile(r"\bprepare_pyg_root\(|\bblogsize\.pyg_counts\("), "rdkit", "PyG's SMILES"),
    (re.compile(r"\b(workers|epochs)\.\w+\(|\bDataLoader\b"), "torch", "DataLoader workers"),
    (re.compile(r"\btorch_geometric\b"), "torch", "PyG runs on PyTorch, and does not require it"),
    (re.compile(r"\b(practice|loadermatrix)\.\w+\("), "torch", "DataLoader workers"),
    (re.compile(r"\b(peers|practice)\.\w+\("), "pyarrow", "the Arrow IPC peer"),
    (re.compile(r"\b(peers|practice)\.\w+\("), "lmdb", "the LMDB peer"),
    (re.compile(r"\btraps\.\w+\("), "h5py", "the HDF5 trap"),
    (re.compile(r"\bscale\.\w+\("), "distributed", "Dask's LocalCluster"),
)
_TITLE = re.compile(r"^#\s+(.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Problem:
    """Why a notebook cannot run here, and what to do about it."""

    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what}: {self.fix}"


@dataclass(frozen=True)
class Check:
    """One fact about this machine: fine (True), a problem (False) or a note (None)."""

    name: str
    ok: bool | None
    said: str

    def __str__(self) -> str:
        mark = {True: "ok  ", False: "FIX ", None: "note"}[self.ok]
        return f"  {mark} {self.name}: {self.said}"


@dataclass(frozen=True)
class Needs:
    """One notebook's modules and full-size parameters (or why they could not be read)."""

    number: str
    title: str
    modules: tuple[str, ...]
    params: dict = field(default_factory=dict)
    params_error: str | None = None


def _cells(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)["cells"]


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _imports(source: str) -> set[str]:
    """Top-level names of the absolute imports in a cell (magics left out)."""
    code = "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )
    try:
        tree = ast.parse(code)
    except SyntaxError:  # a student's half-edited cell: its imports are not the notebook's
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _full_size_parameters(cells: list[dict]) -> tuple[dict, str | None]:
    """The variables the ``parameters`` cell sets at full size (``MMLAB_QUICK`` unset)."""
    for cell in cells:
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get(
            "tags", []
        ):
            saved = os.environ.pop("MMLAB_QUICK", None)
            namespace: dict = {}
            try:
                exec(compile(_source(cell), "<parameters>", "exec"), namespace)
            except Exception as exc:  # any failure of the cell is reported, with its text
                return {}, f"its parameters cell failed: {exc!r}"
            finally:
                if saved is not None:
                    os.environ["MMLAB_QUICK"] = saved
            return {k: v for k, v in namespace.items() if k.isupper()}, None
    return {}, "it has no cell tagged 'parameters'"


def notebook_needs(path: str | os.PathLike[str]) -> Needs:
    """Read one notebook: its number, title, modules and full-size parameters."""
    path = Path(path)
    cells = _cells(path)
    first = next((_source(c) for c in cells if c.get("cell_type") == "markdown"), "")
    title = _TITLE.search(first)
    code = [_source(c) for c in cells if c.get("cell_type") == "code"]
    modules = set(BASE_MODULES)
    for source in code:
        modules |= _imports(source)
        modules |= {module for pattern, module, _ in _LAZY if pattern.search(source)}
    modules = {m for m in modules if m not in sys.stdlib_module_names and m != "mmlab"}
    params, error = _full_size_parameters(cells)
    return Needs(
        path.name[:2], title.group(1).strip() if title else path.stem, tuple(sorted(modules)),
        params, error,
    )  # fmt: skip


def requirement(module: str):
    """mmlab's requirement for ``module`` (a ``packaging`` Requirement or None) and the extra
    of pyproject.toml that installs it (None for a base dependency or one mmlab does not name)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    try:
        listed = importlib.metadata.requires("mmlab") or []
    except importlib.metadata.PackageNotFoundError:
        return None, None
    wanted = canonicalize_name(module)
    for text in listed:
        req = Requirement(text)
        if canonicalize_name(req.name) != wanted:
            continue
        extra = re.search(r"extra\s*==\s*['\"](\w+)['\"]", str(req.marker or ""))
        return req, extra.group(1) if extra else None
    return None, None


# ---------------------------------------------------------------- data files at full size


def _store(store_bytes: int | None, limit, copies: int = 1) -> tuple[int | None, str]:
    """A QM9 RecordStore's size, from the converted cache's: the same store of all of QM9."""
    if store_bytes is None:
        return None, "the QM9 cache is not built yet: its size gives the store's"
    from mmlab.data.qm9 import QM9_MOLECULES

    share = 1.0 if limit is None else min(limit, QM9_MOLECULES) / QM9_MOLECULES
    return int(store_bytes * share * copies), ""


def data_files(needs: Needs, report, store_bytes: int | None) -> list[tuple[str, int | None, str]]:
    """The large files the notebook writes to ``notebooks/data`` at full size: (name, bytes or
    None, why unknown). Files of a few KiB, and PyG's raw folder for a few thousand molecules
    (notebook 05), are left out."""
    p = needs.params
    if needs.params_error:
        return [("its data files", None, needs.params_error)]
    page = mmap.PAGESIZE
    try:
        if needs.number == "01":
            return [("page_path.bin", p["FILE_MIB"] * 2**20, "")]
        if needs.number == "02":
            return [
                ("pages.bin", p["MAPPINGS"] * page, ""),
                ("qm9_align.mms", *_store(store_bytes, p["QM9_LIMIT"])),
            ]
        if needs.number == "03":
            return [("lazy.bin", *_lazy_file(p["FILE_MIB"], report))]
        if needs.number == "04":
            return [("race.bin", p["FILE_MIB"] * 2**20, "")]
        if needs.number == "05":
            from mmlab.data.blog import BLOG_SIZE

            return [
                ("flush_100mb.dat", BLOG_SIZE, ""),  # the blog's 100 MB file, flushed
                ("qm9.mms", *_store(store_bytes, p["QM9_LIMIT"])),
            ]
        if needs.number == "06":
            return [("shared.mms", *_store(store_bytes, p["QM9_LIMIT"], p["COPIES"]))]
        if needs.number == "07":
            return [("bigger.mms", *_store(store_bytes, None, p["COPIES"]))]
        if needs.number == "09":  # every format of QM9, exports and shards: about 15 stores
            return [("peers/", *_store(store_bytes, p["LIMIT"], 15))]
        if needs.number == "08":
            return [
                ("dirty_life.bin", p["LIFE_MIB"] * 2**20, ""),
                ("flush_race.bin", p["RACE_MIB"] * 2**20, ""),
                ("killed_writer.bin", p["LIFE_MIB"] * 2**20, ""),
            ]
    except KeyError as exc:
        return [("its data files", None, f"its parameters cell no longer sets {exc}")]
    return []


def _lazy_file(file_mib: int, report) -> tuple[int | None, str]:
    """Notebook 03's file: FILE_MIB, or 40 readahead windows where that is larger."""
    if report is None:
        return file_mib * 2**20, ""
    from mmlab.course import lazy

    nbytes, _ = lazy.file_bytes(file_mib, lazy.Sizes.of(report))
    return nbytes, ""


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (found without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken parent package, or a half-removed one
        return False


# ---------------------------------------------------------------- QM9 offline


def qm9_offline() -> tuple[list[Check], Problem | None, int | None]:
    """qm9pack's CSV files; whether the converted store and PyG's SMILES counts are cached;
    the converted store's size (the size of every QM9 store the notebooks write)."""
    from mmlab.data import qm9

    if not installed("qm9pack"):
        fix = f"{LAB}, or `pip install qm9pack` (QM9 as CSV, read offline)"
        return (
            [Check("QM9 offline", False, f"qm9pack missing: {fix}")],
            Problem("qm9pack missing (QM9 offline)", fix),
            None,
        )
    data = qm9._qm9pack_data()
    missing = [n for n in qm9._QM9PACK_FILES if not (data / n).is_file()]
    if missing:
        problem = Problem(f"qm9pack's {', '.join(missing)} missing in {data}", "reinstall qm9pack")
        return [Check("QM9 offline", False, str(problem))], problem, None
    checks = [Check("QM9 offline", True, f"qm9pack's CSV files are in {data}")]
    cache, size = qm9._cache_path(), None
    from mmlab.store import RecordStore, StoreError

    try:
        with RecordStore.open(cache) as store:
            built = len(store) == qm9.QM9_MOLECULES and store.fields == qm9.FIELDS
        size = cache.stat().st_size if built else None
    except (OSError, ValueError, StoreError):  # damaged, old or locked: not built here
        built = False
    checks.append(
        Check("QM9 cache", True, f"built: {cache} ({format_size(size)})")
        if built
        else Check(
            "QM9 cache",
            None,
            f"not built yet ({cache}): the first notebook that reads all of QM9 converts "
            "qm9pack's CSV once (a few seconds of CPU); to do it now: "
            "`mmlab build-qm9 notebooks/data/qm9.mms`",
        )
    )
    from mmlab.data import blogsize

    counted = blogsize.cached_counts() is not None
    checks.append(
        Check("PyG SMILES cache", True, "built (notebook 05 reuses it)")
        if counted
        else Check(
            "PyG SMILES cache",
            None,
            "not built yet: notebook 05 computes PyG's SMILES for all of QM9 once (RDKit, "
            "about a minute on two cores); to do it now: `python -c 'from mmlab.data "
            "import blogsize; blogsize.pyg_counts()'`",
        )
    )
    return checks, None, size
