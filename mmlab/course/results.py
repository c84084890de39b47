"""What a notebook measured, recorded so that tests and the claims table can read it back.

A notebook prints its findings for the student; it also *records* the numbers behind each
claim with ``results.record("06", list_uss_growth=..., store_uss_growth=...)``, and the
sentence the course's claims table shows with ``results.claim(...)``. Both become an output of
the cell: a short text the student sees, and the same values as JSON under the MIME type
``application/vnd.mmlab.results+json``, which JupyterLab does not render (it shows the text).

``from_notebook(nb)`` gathers them from an executed notebook: the notebook tests check the
key claims against them, and ``notebooks/claims.py`` writes ``notebooks/README.md``'s table
from a full run, so no figure in the course's documentation is ever typed in by hand.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["MIME", "Results", "claim", "from_notebook", "record"]

MIME = "application/vnd.mmlab.results+json"


def _jsonable(value: Any) -> Any:
    """Numbers, strings, booleans, None, and lists or dicts of them (numpy scalars too)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot record {type(value).__name__} {value!r}: use numbers or strings")


def _show(payload: dict, text: str) -> None:
    from IPython.display import display

    display({"text/plain": text, MIME: payload}, raw=True)


def record(notebook: str, /, **values: Any) -> dict:
    """Record measured values under ``notebook`` (e.g. ``"06"``); returns them as stored."""
    stored = {name: _jsonable(v) for name, v in values.items()}
    names = ", ".join(sorted(stored))
    _show({"notebook": notebook, "values": stored}, f"(recorded for the course's tests: {names})")
    return stored


def claim(
    notebook: str, /, key: str, *, claim: str, shown_in: str, measured: str, verdict: str
) -> dict:
    """Record one row of the claims table: the blog's claim, where it is shown, what this run
    measured (a sentence built from the numbers) and the verdict this run supports."""
    row = {"key": key, "claim": claim, "shown_in": shown_in, "measured": measured}
    row["verdict"] = verdict
    _show({"notebook": notebook, "claim": row}, f"Claim checked here: {claim} -> {verdict}")
    return row


class Results:
    """Everything one executed notebook recorded: ``values`` by name, ``claims`` in order."""

    def __init__(self, values: dict[str, Any], claims: list[dict]) -> None:
        self.values = values
        self.claims = claims

    def __getitem__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise KeyError(
                f"the notebook recorded no {name!r}; it has {sorted(self.values)}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self.values


def _outputs(notebook: Any) -> Iterable[Mapping]:
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            yield from cell.get("outputs", [])


def from_notebook(notebook: Any) -> Results:
    """The values and claims an executed notebook (nbformat node or its JSON) recorded."""
    values: dict[str, Any] = {}
    claims: list[dict] = []
    for output in _outputs(notebook):
        payload = output.get("data", {}).get(MIME)
        if payload is None:
            continue
        if isinstance(payload, str):  # some writers store JSON outputs as text
            payload = json.loads(payload)
        values.update(payload.get("values", {}))
        if "claim" in payload:
            claims.append(dict(payload["claim"], notebook=payload["notebook"]))
    return Results(values, claims)
