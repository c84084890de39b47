"""Recorded results: what a notebook records comes back from its executed outputs."""

from __future__ import annotations

import math

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from mmlab.course import results


def _run(*sources: str):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    NotebookClient(notebook, timeout=60, kernel_name="python3").execute()
    return notebook


def test_values_and_claims_come_back_from_an_executed_notebook():
    notebook = _run(
        "from mmlab import results\nimport numpy as np\n"
        "results.record('06', growth=np.float64(45.5), workers=2, kind='list')",
        "results.claim('06', 'sharing', claim='Sharing', shown_in='06 §2', measured='350 MiB',"
        " verdict='true')",
    )
    found = results.from_notebook(notebook)
    assert found["growth"] == 45.5 and found["workers"] == 2 and found["kind"] == "list"
    assert found.claims == [
        {
            "key": "sharing",
            "claim": "Sharing",
            "shown_in": "06 §2",
            "measured": "350 MiB",
            "verdict": "true",
            "notebook": "06",
        }
    ]
    text = notebook.cells[0].outputs[0]["data"]["text/plain"]
    assert "growth" in text  # the student sees what was recorded


def test_a_missing_value_names_what_was_recorded():
    found = results.Results({"a": 1}, [])
    with pytest.raises(KeyError, match=r"'b'.*\['a'\]"):
        found["b"]


def test_only_plain_values_are_recorded():
    assert results._jsonable({"x": (np.int64(3), math.nan)}) == {"x": [3, None]}
    with pytest.raises(TypeError, match="cannot record"):
        results._jsonable(object())
