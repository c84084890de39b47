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
from pathlib import Path
from typing import Any

__all__ = ["MIME", "SCHEMA", "Results", "claim", "from_notebook", "load", "record", "save"]

MIME = "application/vnd.mmlab.results+json"
SCHEMA = "mmlab.results/1"  # in every saved line, so a later format can tell old files apart

# What this kernel recorded, in order: {"notebook", "kind": "value" | "claim", "name", "value"}.
_KEPT: list[dict] = []


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
    _KEPT.extend(
        {"notebook": notebook, "kind": "value", "name": name, "value": value}
        for name, value in stored.items()
    )
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
    _KEPT.append({"notebook": notebook, "kind": "claim", "name": key, "value": dict(row)})
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


def _machine_id(fingerprint: Mapping[str, Any]) -> str:
    """A short id for one student's machine, stable from run to run.

    Hashed from the machine's lasting facts and from who runs it where (host name, user,
    ``/etc/machine-id``): sixty identical lab PCs or JupyterHub containers share every fact of
    the fingerprint, and their students must still not overwrite each other's files. Only the
    hash leaves the machine.
    """
    import contextlib
    import getpass
    import hashlib
    import platform

    lasting = ("cpu_model", "cpu_count", "page_size", "memory_total", "machine", "block_device")
    parts = [str(fingerprint.get(key)) for key in lasting] + [platform.node()]
    try:
        parts.append(getpass.getuser())
    except (OSError, KeyError):  # a container user without a passwd entry
        parts.append("?")
    with contextlib.suppress(OSError):  # no /etc/machine-id on macOS, in some containers
        parts.append(Path("/etc/machine-id").read_text().strip())
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]


def _latest(notebook: str) -> list[dict]:
    """This kernel's values and claims of ``notebook``, the last of each name (a cell run
    twice records twice; its second run is what the student saw last)."""
    latest: dict[tuple[str, str], dict] = {}
    for kept in _KEPT:
        if kept["notebook"] == notebook:
            latest.pop((kept["kind"], kept["name"]), None)
            latest[kept["kind"], kept["name"]] = kept
    return list(latest.values())


def _predictions(notebook: str) -> list[dict]:
    """The predictions locked in this kernel for ``notebook``, with the measured value of
    their reveal where ``mmlab.course.predict`` keeps it."""
    from datetime import UTC, datetime

    from mmlab.course import predict

    reveals = predict.revealed()
    rows = []
    for p in predict.locked():
        if p.notebook != notebook or p.value is None:  # None: no prediction was made
            continue
        row = {"kind": "prediction", "name": p.key, "value": _jsonable_or_text(p.value)}
        row |= {"unit": p.unit, "after_reveal": p.after_reveal}
        row["locked_at"] = datetime.fromtimestamp(p.at, UTC).isoformat()
        if (notebook, p.key) in reveals:
            shown = reveals[notebook, p.key]
            row |= {"measured": _jsonable_or_text(shown.measured), "right": shown.right}
        rows.append(row)
    return rows


def _jsonable_or_text(value: Any) -> Any:
    try:
        return _jsonable(value)
    except TypeError:  # a student may predict anything; keep what they typed, as text
        return repr(value)


def save(notebook: str, folder: str | Path = "results") -> Path:
    """Write this kernel's values, claims and predictions of ``notebook`` as JSON lines, each
    with this machine's fingerprint, to ``<folder>/<notebook>-<machine id>.jsonl``; return it.

    Saving again replaces the same student's file; if nothing was recorded in this kernel
    (restarted, cells not run) an earlier file is kept rather than emptied.
    """
    import os
    from datetime import UTC, datetime

    from mmlab.instruments import machine

    fingerprint = _jsonable(machine.fingerprint())
    ident = _machine_id(fingerprint)
    path = Path(folder) / f"{notebook}-{ident}.jsonl"
    found = _latest(notebook) + _predictions(notebook)
    if not found and path.exists():
        print(f"Nothing recorded for notebook {notebook} in this kernel (restarted, or its cells "
              f"not run yet): kept the file saved earlier, {path}. Run the notebook, then this "
              "cell again.")  # fmt: skip
        return path
    common = {"schema": SCHEMA, "notebook": notebook, "machine_id": ident}
    common |= {"saved_at": datetime.now(UTC).isoformat(timespec="seconds")}
    common |= {"quick": os.environ.get("MMLAB_QUICK") == "1", "fingerprint": fingerprint}
    lines = [common | row for row in found] or [common | {"kind": "machine", "name": None}]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text("".join(json.dumps(line) + "\n" for line in lines))
    partial.replace(path)  # a half-written file never replaces a whole one
    counts = {k: sum(row["kind"] == k for row in found) for k in ("value", "claim", "prediction")}
    if found:
        what = ", ".join(f"{n} {kind}{'' if n == 1 else 's'}" for kind, n in counts.items())
        print(f"Saved notebook {notebook}'s {what} with your machine's facts to {path.absolute()}")
    else:
        print(f"Nothing recorded for notebook {notebook} in this kernel yet: run its cells, then "
              f"this one again. Saved only your machine's facts to {path.absolute()}")  # fmt: skip
    print("Send this file to your instructor, or drop it in the class's shared folder: the "
          "class results notebook puts every machine's numbers side by side. Saving again "
          "replaces it.")  # fmt: skip
    return path


_REQUIRED = {"schema", "notebook", "kind", "name", "machine_id", "saved_at", "fingerprint"}


def load(folder: str | Path, *, problems: list[str] | None = None) -> list[dict]:
    """Every result line of every ``*.jsonl`` in ``folder``, each with its ``file``.

    A line or file that is not a readable result is skipped, never fatal: it is described in
    ``problems`` if a list is given, else printed.
    """
    found: list[dict] = []
    said = problems if problems is not None else []
    folder = Path(folder)
    if not folder.is_dir():
        said.append(f"{folder}: no such folder")
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            said.append(f"{path.name}: skipped, unreadable ({exc.__class__.__name__})")
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                said.append(f"{path.name} line {number}: skipped, not JSON ({exc.msg})")
                continue
            missing = _REQUIRED - set(row) if isinstance(row, dict) else _REQUIRED
            texts = ("notebook", "kind", "machine_id", "saved_at")
            if (
                missing
                or row["schema"] != SCHEMA
                or not isinstance(row["fingerprint"], dict)
                or (not all(isinstance(row[key], str) for key in texts))
            ):
                why = f"missing {sorted(missing)}" if missing else f"not a {SCHEMA} line"
                said.append(f"{path.name} line {number}: skipped, {why}")
                continue
            found.append(row | {"file": path.name})
    if problems is None:
        for problem in said:
            print(problem)
    return found
