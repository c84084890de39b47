"""The lab notebooks: committed clean, and each runs headless in quick mode with figures."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_six_lab_notebooks():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_opens_as_a_lab_session(path):
    notebook = nbformat.read(path, as_version=4)
    opening = notebook.cells[0].source
    for heading in ("What you'll do", "What you'll learn", "What you'll need"):
        assert heading in opening
    parameters = notebook.cells[1]
    assert "parameters" in parameters.metadata.get("tags", [])
    assert "MMLAB_QUICK" in parameters.source
    sources = "\n".join(c.source for c in notebook.cells)
    assert "## Key points" in sources and "check.exercise_" in sources
    assert "%matplotlib inline" in sources


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_alone_in_a_fresh_clone_in_quick_mode(path, executed):
    notebook, seconds, _ = executed(path.stem[:2])
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    tagged = [c for c in notebook.cells if "raises-exception" in c.metadata.get("tags", [])]
    assert len(errors) == len(tagged)  # only the cells meant to fail did
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert pngs, "no figure"
    assert seconds < 120, f"{path.name} took {seconds:.0f} s in quick mode"
