"""Two editions of the notebooks: the students' (worked solutions collapsed) and the
instructor's (every worked solution shown in full, and marked as such).

Each hands-on exercise ends with a worked solution: a code cell tagged ``solution`` whose
input and output JupyterLab keeps collapsed (cell metadata ``jupyter.source_hidden`` and
``jupyter.outputs_hidden``), so a student sees a "click to show" bar and tries first. The
committed notebooks are the students' edition. ``instructor`` expands every solution cell and
changes its first line from ``STUDENT_LINE`` to ``INSTRUCTOR_LINE``, so a projected notebook
or a printed page says what it is; ``student`` collapses them again and restores the line.
Nothing else in a notebook changes: cell ids, sources, outputs and metadata stay as they are,
so ``student(instructor(nb))`` is ``nb`` for a notebook in the students' edition.

    python -m mmlab.course.editions instructor notebooks OUTDIR
    python -m mmlab.course.editions student notebooks OUTDIR   (OUTDIR may be notebooks)
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "EDITIONS",
    "INSTRUCTOR_LINE",
    "SOLUTION_TAG",
    "STUDENT_LINE",
    "instructor",
    "is_solution",
    "main",
    "student",
    "write_edition",
]

SOLUTION_TAG = "solution"
STUDENT_LINE = "# Solution: click to show"
INSTRUCTOR_LINE = "# Solution (instructor edition: shown in full, collapsed for students)"
_HIDDEN = ("source_hidden", "outputs_hidden")
_ALONG = ("matplotlibrc",)  # files the notebooks need beside them to look the same


def is_solution(cell) -> bool:
    """A worked solution: a code cell tagged ``solution``."""
    return cell.get("cell_type") == "code" and SOLUTION_TAG in cell.get("metadata", {}).get(
        "tags", []
    )


def _first_line(source: str, line: str) -> str:
    """``source`` starting with ``line`` in place of either edition's marker line."""
    head, newline, rest = source.partition("\n")
    if head.strip() in (STUDENT_LINE, INSTRUCTOR_LINE):
        return line + newline + rest
    return f"{line}\n{source}"


def _edition(notebook, hidden: bool, line: str):
    result = copy.deepcopy(notebook)
    for cell in result["cells"]:
        if not is_solution(cell):
            continue
        jupyter = cell["metadata"].setdefault("jupyter", {})
        for key in _HIDDEN:
            jupyter[key] = hidden
        source = cell["source"]
        text = "".join(source) if isinstance(source, list) else source
        cell["source"] = _first_line(text, line)
    return result


def instructor(notebook):
    """A copy of ``notebook`` with every worked solution expanded and marked."""
    return _edition(notebook, False, INSTRUCTOR_LINE)


def student(notebook):
    """A copy of ``notebook`` with every worked solution collapsed, behind "click to show"."""
    return _edition(notebook, True, STUDENT_LINE)


EDITIONS = {"instructor": instructor, "student": student}


def write_edition(edition: str, folder: str | Path, out: str | Path) -> list[Path]:
    """Write ``edition`` of every notebook in ``folder`` to ``out`` (``out`` may be ``folder``:
    then in place); returns the notebooks written. ``matplotlibrc`` is copied along."""
    import nbformat

    make = EDITIONS[edition]
    folder, out = Path(folder), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(folder.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        target = out / path.name
        nbformat.write(make(notebook), target)
        written.append(target)
    if out.resolve() != folder.resolve():
        for name in _ALONG:
            if (folder / name).is_file():
                shutil.copy2(folder / name, out / name)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmlab.course.editions", description=__doc__)
    parser.add_argument("edition", choices=sorted(EDITIONS))
    parser.add_argument("folder", type=Path, help="the notebooks folder")
    parser.add_argument("out", type=Path, help="where to write the edition (may be FOLDER)")
    args = parser.parse_args(argv)
    written = write_edition(args.edition, args.folder, args.out)
    if not written:
        print(f"no notebooks in {args.folder}", file=sys.stderr)
        return 1
    import nbformat

    solutions = 0
    for path in written:
        solutions += sum(map(is_solution, nbformat.read(path, as_version=4).cells))
    shown = "solutions expanded" if args.edition == "instructor" else "solutions collapsed"
    print(f"{args.edition} edition: {len(written)} notebooks in {args.out}, {solutions} {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
