"""The course's timed schedule, measured from the notebooks rather than estimated.

An instructor plans a session from three times per notebook, each computed here:

* **reading**: the words of its markdown cells at ``WORDS_PER_MINUTE`` (explaining prose to a
  class, or a learner reading it carefully, goes at about that pace);
* **running**: how long its kernel computed at full size, summed over its code cells from the
  timing nbclient records in each executed cell's metadata (``execution``:
  ``iopub.execute_input`` to ``shell.execute_reply``), in the executed copies that
  ``make claims`` leaves in ``build/notebooks``;
* **exercises**: the minutes each hands-on exercise's starter cell declares in its metadata
  (``mmlab.minutes`` on a cell whose ``mmlab.role`` is ``"starter"``), ``EXERCISE_MINUTES``
  where it declares none.

Teaching time is reading plus running: a class waits for the cells it runs. ``main`` rewrites
the table between ``BEGIN`` and ``END`` in ``notebooks/INSTRUCTORS.md``, as
``mmlab.course.claims`` does for the README's claims table, so no minute in it is typed in.

    python -m mmlab.course.schedule notebooks [--executed build/notebooks]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

__all__ = [
    "BEGIN",
    "END",
    "EXERCISE_MINUTES",
    "WORDS_PER_MINUTE",
    "Timing",
    "main",
    "render",
    "replace_table",
    "time_notebook",
]

BEGIN = "<!-- schedule:start -->"
END = "<!-- schedule:end -->"
WORDS_PER_MINUTE = 120
EXERCISE_MINUTES = 10  # a starter cell that declares no mmlab.minutes
_WORD = re.compile(r"[A-Za-z0-9][\w'’.-]*")
_LINK = re.compile(r"\]\([^)]*\)|https?://\S+|<[^>]+>")  # link targets and tags are not read
_SAYS = re.compile(r"About (\d+) minutes")


@dataclass(frozen=True)
class Timing:
    """One notebook's measured times; ``run_s`` is None (with ``run_why``) where unknown."""

    notebook: str
    words: int
    run_s: float | None
    run_why: str
    exercises: tuple[tuple[str, float], ...]  # (exercise, minutes)
    says: int | None  # the minutes its first cell states ("About 40 minutes")

    @property
    def reading_min(self) -> float:
        return self.words / WORDS_PER_MINUTE

    @property
    def teaching_min(self) -> float | None:
        return None if self.run_s is None else self.reading_min + self.run_s / 60

    @property
    def exercise_min(self) -> float:
        return sum(minutes for _, minutes in self.exercises)


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _words(markdown: str) -> int:
    text = re.sub(r"```.*?```", " ", markdown, flags=re.DOTALL)  # code blocks are not prose
    return len(_WORD.findall(_LINK.sub(" ", text)))


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _run_seconds(source_cells: list[dict], executed: Path | None) -> tuple[float | None, str]:
    """The kernel's seconds over the executed copy's code cells, or None and why."""
    if executed is None or not executed.is_file():
        return None, f"no executed copy ({executed}): run `make claims`"
    cells = json.loads(executed.read_text(encoding="utf-8"))["cells"]
    code = [c for c in cells if c.get("cell_type") == "code"]
    seconds, untimed = 0.0, 0
    for cell in code:
        timing = cell.get("metadata", {}).get("execution", {})
        start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        if start and end:
            seconds += (_when(end) - _when(start)).total_seconds()
        else:
            untimed += 1
    if code and untimed == len(code):
        return None, f"{executed} has no cell timing (run by a tool that does not record it)"
    ours = [_source(c) for c in source_cells if c.get("cell_type") == "code"]
    same = sum((Counter(ours) & Counter(_source(c) for c in code)).values())
    notes = []
    if untimed:
        notes.append(f"{untimed} of {len(code)} code cells untimed")
    if same < max(len(ours), len(code)):
        notes.append(
            f"the executed copy matches {same} of {len(ours)} code cells of the notebook: "
            "re-run `make claims` for current times"
        )
    return seconds, "; ".join(notes)


def time_notebook(path: str | Path, executed: str | Path | None = None) -> Timing:
    """Measure one notebook: its source ``path``, its executed copy ``executed``."""
    path = Path(path)
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    words = sum(_words(_source(c)) for c in cells if c.get("cell_type") == "markdown")
    run_s, why = _run_seconds(cells, None if executed is None else Path(executed))
    exercises = []
    for cell in cells:
        meta = cell.get("metadata", {}).get("mmlab", {})
        if cell.get("cell_type") == "code" and meta.get("role") == "starter":
            minutes = meta.get("minutes", EXERCISE_MINUTES)
            exercises.append((str(meta.get("exercise", "?")), float(minutes)))
    first = next((_source(c) for c in cells if c.get("cell_type") == "markdown"), "")
    says = _SAYS.search(first)
    return Timing(
        path.name[:2], words, run_s, why, tuple(exercises), int(says.group(1)) if says else None
    )


def _min(value: float | None) -> str:
    return "unknown" if value is None else f"{math.ceil(value)}"


def render(timings: Sequence[Timing], executed: Path | None) -> str:
    """The Markdown between the markers: how it was measured, then one row per notebook."""
    stamp = ""
    if executed is not None and executed.is_dir():
        copies = list(executed.glob("*.ipynb"))
        if copies:
            newest = max(p.stat().st_mtime for p in copies)
            stamp = f" (executed {time.strftime('%Y-%m-%d', time.gmtime(newest))})"
    lines = [
        BEGIN,
        "",
        f"Measured by `python -m mmlab.course.schedule` on {time.strftime('%Y-%m-%d')}: "
        f"reading is the notebook's markdown at {WORDS_PER_MINUTE} words a minute; running is "
        f"the kernel's time at full size, summed over the code cells of the executed copies "
        f"in `{executed}`{stamp}, from the cell timing nbclient records; exercises are the "
        f"`mmlab.minutes` of each starter cell ({EXERCISE_MINUTES} where it declares none). "
        "Teaching = reading + running. Minutes are rounded up.",
        "",
        "| notebook | words | reading | running | teaching | exercises | exercise min | "
        "total | the notebook says |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for t in timings:
        run = "unknown" if t.run_s is None else f"{t.run_s / 60:.1f} ({t.run_s:.0f} s)"
        total = None if t.teaching_min is None else t.teaching_min + t.exercise_min
        lines.append(
            f"| {t.notebook} | {t.words:,} | {_min(t.reading_min)} | {run} | "
            f"{_min(t.teaching_min)} | {len(t.exercises)} | {_min(t.exercise_min)} | "
            f"{_min(total)} | {t.says if t.says is not None else '-'} |"
        )
        if t.run_why:
            notes.append(f"- {t.notebook}: {t.run_why}")
    known = [t for t in timings if t.teaching_min is not None]
    if known:
        teach = sum(math.ceil(t.teaching_min) for t in known)
        ex = sum(math.ceil(t.exercise_min) for t in known)
        lines.append(
            f"| all{'' if len(known) == len(timings) else ' known'} | | | | {teach} | "
            f"{sum(len(t.exercises) for t in known)} | {ex} | {teach + ex} | |"
        )
    return "\n".join([*lines, *(["", *notes] if notes else []), "", END])


def replace_table(guide: str, table: str) -> str:
    """``guide`` with the text between the markers (inclusive) replaced by ``table``."""
    start, end = guide.find(BEGIN), guide.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the guide has no schedule markers: add {BEGIN!r} and {END!r}")
    return guide[:start] + table + guide[end + len(END) :]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmlab.course.schedule", description=__doc__)
    parser.add_argument("folder", type=Path, help="the notebooks folder")
    parser.add_argument(
        "--executed",
        type=Path,
        default=Path("build/notebooks"),
        help="the executed copies `make claims` keeps (default: build/notebooks)",
    )
    parser.add_argument(
        "--guide", type=Path, help="the guide to update (default: FOLDER/INSTRUCTORS.md)"
    )
    args = parser.parse_args(argv)
    guide = args.guide or args.folder / "INSTRUCTORS.md"
    timings = [
        time_notebook(path, args.executed / path.name)
        for path in sorted(args.folder.glob("[0-9][0-9]_*.ipynb"))
    ]
    if not timings:
        print(f"no notebooks (NN_*.ipynb) in {args.folder}", file=sys.stderr)
        return 1
    table = render(timings, args.executed)
    guide.write_text(replace_table(guide.read_text(encoding="utf-8"), table), encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
