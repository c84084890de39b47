"""Read the course's conventions back out of the notebooks: predictions and exercises.

- A prediction: a code cell calling ``predict.lock("NN", "key", ...)`` and, in a later cell,
  ``predict.reveal("NN", "key", ...)``.
- A hands-on exercise ``name``: a *starter* cell the student edits (metadata
  ``mmlab.exercise = name``, ``mmlab.role = "starter"``, ``mmlab.defines`` = the function it
  defines), a cell calling ``check.name(...)``, and a *solution* cell (tag ``solution``,
  ``mmlab.exercise = name``, ``mmlab.role = "solution"``, same ``mmlab.defines``) whose input
  and output JupyterLab keeps collapsed (``jupyter.source_hidden``/``outputs_hidden``). Both
  the starter and the solution import what they use, so each runs on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
LOCK = re.compile(r"predict\.lock\(\s*\"(\d\d)\",\s*\"(\w+)\"")
REVEAL = re.compile(r"predict\.reveal\(\s*\"(\d\d)\",\s*\"(\w+)\"")


@dataclass
class Exercise:
    notebook: str
    name: str
    defines: str
    starter: str
    solution: str
    solution_cell: dict
    check_cells: int


def notebook(number: str):
    (path,) = NOTEBOOKS.glob(f"{number}_*.ipynb")
    return nbformat.read(path, as_version=4)


def predictions(number: str) -> tuple[dict[str, int], dict[str, int]]:
    """Each key locked and each key revealed, with the index of the first cell that does so."""
    locks: dict[str, int] = {}
    reveals: dict[str, int] = {}
    for index, cell in enumerate(notebook(number).cells):
        if cell.cell_type == "code":
            for nb, key in LOCK.findall(cell.source):
                if nb == number:
                    locks.setdefault(key, index)
            for nb, key in REVEAL.findall(cell.source):
                if nb == number:
                    reveals.setdefault(key, index)
    return locks, reveals


def exercises(number: str) -> list[Exercise]:
    cells = notebook(number).cells
    found: dict[str, dict] = {}
    for cell in cells:
        meta = cell.metadata.get("mmlab", {})
        if cell.cell_type == "code" and "exercise" in meta:
            entry = found.setdefault(meta["exercise"], {})
            entry[meta.get("role")] = cell
    result = []
    for name, roles in found.items():
        starter, solution = roles.get("starter"), roles.get("solution")
        assert starter is not None and solution is not None, f"{number} {name}: {sorted(roles)}"
        calls = sum(f"check.{name}(" in c.source for c in cells if c.cell_type == "code")
        result.append(
            Exercise(
                number,
                name,
                starter.metadata["mmlab"]["defines"],
                starter.source,
                solution.source,
                solution,
                calls,
            )
        )
    return result


def define(source: str, name: str):
    """Run a cell's source on its own and return the function it defines."""
    namespace: dict = {"__name__": "__exercise__"}
    exec(compile(source, f"<cell defining {name}>", "exec"), namespace)
    return namespace[name]
