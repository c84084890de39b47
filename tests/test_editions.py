"""The two editions: the instructor's expands and marks every worked solution, the students'
collapses them, and nothing else in a notebook changes."""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest

from mmlab.course import editions

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
HIDDEN = {"source_hidden": True, "outputs_hidden": True}


def _lab():
    """A students' notebook: a task, a starter, a check, a hidden solution with an output,
    and a collapsed cell that is not a solution (the editions leave it alone)."""
    nb = nbformat.v4.new_notebook()
    solution = nbformat.v4.new_code_cell(
        "# Solution: click to show\nimport mmap\n\n\ndef touch(mm, stride):\n    return 1\n",
        metadata={
            "tags": ["solution"],
            "mmlab": {"exercise": "touch", "role": "solution", "defines": "touch"},
            "jupyter": dict(HIDDEN),
        },
    )
    solution.outputs = [nbformat.v4.new_output("stream", text="right: the faults\n")]
    nb.cells = [
        nbformat.v4.new_markdown_cell("Write `touch(mm, stride)`."),
        nbformat.v4.new_code_cell(
            "def touch(mm, stride):\n    return None",
            metadata={"mmlab": {"exercise": "touch", "role": "starter", "defines": "touch"}},
        ),
        nbformat.v4.new_code_cell("check.touch(touch)"),
        solution,
        nbformat.v4.new_code_cell("setup()", metadata={"jupyter": dict(HIDDEN)}),
    ]
    return nb


def _without_solutions(nb):
    return [c for c in nb.cells if not editions.is_solution(c)]


def test_instructor_expands_and_marks_every_solution_and_changes_nothing_else():
    nb = _lab()
    before = copy.deepcopy(nb)
    shown = editions.instructor(nb)
    assert nb == before  # the input is not changed
    (cell,) = [c for c in shown.cells if editions.is_solution(c)]
    assert cell.metadata["jupyter"] == {"source_hidden": False, "outputs_hidden": False}
    assert cell.source.splitlines()[0] == editions.INSTRUCTOR_LINE
    assert cell.source.splitlines()[1:] == nb.cells[3].source.splitlines()[1:]
    assert cell.outputs == nb.cells[3].outputs and cell.id == nb.cells[3].id
    rest = {k: v for k, v in cell.metadata.items() if k != "jupyter"}
    assert rest == {k: v for k, v in nb.cells[3].metadata.items() if k != "jupyter"}
    assert _without_solutions(shown) == _without_solutions(nb)
    assert shown.metadata == nb.metadata


def test_student_collapses_and_undoes_the_instructor_edition():
    nb = _lab()
    assert editions.student(editions.instructor(nb)) == nb
    assert editions.student(nb) == nb  # already the students' edition
    opened = copy.deepcopy(nb)
    opened.cells[3].metadata.pop("jupyter")  # a solution someone expanded in JupyterLab
    opened.cells[3].source = "import mmap\n\n\ndef touch(mm, stride):\n    return 1\n"
    closed = editions.student(opened)
    assert closed.cells[3].metadata["jupyter"] == HIDDEN
    assert closed.cells[3].source.startswith(editions.STUDENT_LINE + "\nimport mmap")
    assert _without_solutions(closed) == _without_solutions(opened)


def test_the_command_writes_both_editions(tmp_path, capsys):
    source = tmp_path / "notebooks"
    source.mkdir()
    nbformat.write(_lab(), source / "07_lab.ipynb")
    (source / "matplotlibrc").write_text("figure.dpi: 100\n")
    out = tmp_path / "instructor"
    assert editions.main(["instructor", str(source), str(out)]) == 0
    assert "1 notebooks" in capsys.readouterr().out and (out / "matplotlibrc").is_file()
    shown = nbformat.read(out / "07_lab.ipynb", as_version=4)
    assert shown.cells[3].metadata["jupyter"]["source_hidden"] is False
    assert editions.main(["student", str(out), str(out)]) == 0  # in place
    assert nbformat.read(out / "07_lab.ipynb", as_version=4) == _lab_as_written(source)
    assert editions.main(["student", str(tmp_path / "empty"), str(out)]) == 1


def _lab_as_written(folder: Path):
    return nbformat.read(folder / "07_lab.ipynb", as_version=4)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_the_committed_notebooks_are_the_students_edition(path):
    nb = nbformat.read(path, as_version=4)
    assert editions.student(nb) == nb
