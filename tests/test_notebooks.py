"""The lab notebooks: committed clean, and each runs headless in quick mode with figures."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

FOLDER = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("[0-9][0-9]_*.ipynb"))  # the labs; class_results is tested below


def test_there_are_nine_lab_notebooks():
    assert [p.stem[:2] for p in NOTEBOOKS] == [f"{n:02d}" for n in range(1, 10)]


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


def test_class_results_runs_alone_in_a_fresh_clone_in_quick_mode(tmp_path):
    """No students' files and no lab run here: it says so and shows a SYNTHETIC class."""
    import os
    import shutil
    import time

    from nbclient import NotebookClient

    path = FOLDER / "class_results.ipynb"
    committed = json.loads(path.read_text())
    assert all(c["outputs"] == [] for c in committed["cells"] if c["cell_type"] == "code")
    shutil.copytree(FOLDER, tmp_path, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("data", "results"))  # fmt: skip
    notebook = nbformat.read(tmp_path / path.name, as_version=4)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}},
                   ).execute(env={**os.environ, "MMLAB_QUICK": "1"})  # fmt: skip
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "Nothing in results yet" in text and "SYNTHETIC" in text
    assert "5 machines from" in text  # the table, from the synthetic class
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
    assert time.perf_counter() - start < 60
