"""What a check says about a student's code: what was right, what was off, and a hint.

A check runs the student's function with ``attempt`` (so a mistake in it becomes a verdict,
never a traceback that stops a "Run All"), measures it beside this machine's reference, and
returns a ``Verdict``. A verdict is true when the exercise is solved; shown in a notebook it
prints itself, so a check cell ends with the call, without a semicolon. Besides what was right
and what was off, it may carry neutral notes (what was not measured, and why): they neither
pass nor fail the exercise.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Attempt", "Verdict", "attempt"]


@dataclass
class Verdict:
    """The judgement of one exercise. ``measured`` holds the numbers it was made from."""

    exercise: str
    right: list[str] = field(default_factory=list)
    off: list[str] = field(default_factory=list)
    hint: str = ""
    measured: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # neither right nor off: not judged

    @property
    def passed(self) -> bool:
        return bool(self.right) and not self.off

    def __bool__(self) -> bool:
        return self.passed

    def text(self) -> str:
        head = "solved" if self.passed else "not yet"
        lines = [f"{self.exercise}: {head}."]
        lines += [f"  right: {line}" for line in self.right]
        lines += [f"  off:   {line}" for line in self.off]
        lines += [f"  note:  {line}" for line in self.notes]
        if self.hint and not self.passed:
            lines.append(f"  hint:  {self.hint}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()


@dataclass(frozen=True)
class Attempt:
    """What running the student's function gave: its result, or the error it raised."""

    result: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def attempt(function: Callable, *args: Any, **kwargs: Any) -> Attempt:
    """Call ``function``; an exception becomes ``Attempt.error`` (its last lines), not a crash."""
    if not callable(function):
        return Attempt(error=f"expected a function, got {type(function).__name__}")
    try:
        return Attempt(result=function(*args, **kwargs))
    except Exception as error:  # the student's code may raise anything: report it
        lines = traceback.format_exception(error)
        return Attempt(error="".join(lines[-3:]).strip())
