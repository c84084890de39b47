"""Predict, then measure: a student's prediction locked in before the run, revealed after.

A lab asks for a prediction before each measurement. Writing it down is what makes the
measurement teach: the student finds out not only what happened but how far their model of
the machine was from it. A notebook asks in a cell the student edits::

    prediction = None  # your number of pages, then run this cell
    predict.lock("03", "pages_cached", prediction, unit="pages")

and, after the measurement, shows the comparison and the reason::

    predict.reveal("03", "pages_cached", measured=cached, why=explanation)

``lock`` keeps the prediction with the time it was made; ``reveal`` says how far off it was
(as a ratio for numbers, right or wrong for a choice) and why, from this run and the machine
facts the notebook passes in ``why``. Without a prediction the reveal still explains the
result; a measurement this machine cannot make is passed as ``None`` and judges nothing.
A prediction changed after its reveal is shown as such: it no longer predicted anything.
``locked()`` and ``revealed()`` list this kernel's predictions and reveals, for
``results.save``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Prediction", "Reveal", "lock", "locked", "reveal", "revealed"]


@dataclass(frozen=True)
class Prediction:
    """What a student predicted for one measurement, and when."""

    notebook: str
    key: str
    value: Any
    unit: str
    at: float  # time.time() when it was locked in
    after_reveal: bool  # locked again after the result was shown


@dataclass(frozen=True)
class Reveal:
    """A measurement beside its prediction: how far off, and why."""

    prediction: Prediction | None
    measured: Any
    unit: str
    why: str

    @property
    def ratio(self) -> float | None:
        """measured / predicted for numbers (None for choices or without a prediction)."""
        p = self.prediction
        if p is None or not _is_number(p.value) or not _is_number(self.measured):
            return None
        if p.value == 0:
            return None if self.measured else 1.0
        return float(self.measured) / float(p.value)

    @property
    def right(self) -> bool | None:
        """For a choice, whether it was right; for a number, whether within 10% (so 2 pages
        against 3 is not: an off-by-one in a small count is the very mistake to see)."""
        p = self.prediction
        if p is None or p.value is None or self.measured is None:
            return None
        if _is_number(p.value) and _is_number(self.measured):
            ratio = self.ratio
            exact = float(p.value) == float(self.measured)
            return exact or (ratio is not None and abs(ratio - 1) <= CLOSE)
        return _same_choice(p.value, self.measured)

    def text(self) -> str:
        unit = _unit(self.unit)
        measured = f"{_show(self.measured)}{unit}"
        p = self.prediction
        if self.measured is None:
            head = "This run could not measure it (see why), so no prediction is judged."
        elif p is None or p.value is None:
            head = f"Measured: {measured}. (No prediction was locked in: fill it in next time.)"
        elif _is_number(p.value) and _is_number(self.measured):
            head = f"You predicted {_show(p.value)}{unit}; measured: {measured}: {_how_far(self)}."
        else:
            verdict = "right" if self.right else "not what happened"
            head = f"You predicted {_show(p.value)}; this run: {measured} ({verdict})."
        if p is not None and p.after_reveal:
            head += " (That prediction was changed after the result was shown.)"
        return f"{head}\nWhy: {self.why}" if self.why else head

    def __repr__(self) -> str:  # short: reveal() has printed the text already
        guess = None if self.prediction is None else self.prediction.value
        return f"Reveal(predicted={guess!r}, measured={self.measured!r}, right={self.right})"


CLOSE = 0.1  # a number within 10% of the measurement counts as right
_LOCKED: dict[tuple[str, str], Prediction] = {}
_REVEALED: dict[tuple[str, str], Reveal] = {}


def lock(notebook: str, key: str, value: Any, *, unit: str = "") -> Prediction:
    """Keep ``value`` as the prediction for ``key`` and say so; ``None`` means none made."""
    earlier = _LOCKED.get((notebook, key))
    changed = (notebook, key) in _REVEALED and (earlier is None or earlier.value != value)
    after = changed or (earlier is not None and earlier.after_reveal)  # the cell run again
    prediction = Prediction(notebook, key, value, unit, time.time(), after_reveal=after)
    _LOCKED[notebook, key] = prediction
    if value is None:
        print("No prediction yet: replace None with yours and run this cell again.")
    else:
        shown = f"{_show(value)}{_unit(unit)}"
        print(f"Prediction locked in: {shown}. Now run the measurement.")
    return prediction


def reveal(notebook: str, key: str, measured: Any, *, why: str = "", unit: str = "") -> Reveal:
    """Print the measurement beside the prediction locked for ``key``, and why."""
    prediction = _LOCKED.get((notebook, key))
    result = Reveal(prediction, measured, unit or (prediction.unit if prediction else ""), why)
    _REVEALED[notebook, key] = result
    print(result.text())
    return result


def revealed() -> dict[tuple[str, str], Reveal]:
    """The last reveal of each ``(notebook, key)`` in this kernel, for ``results.save``."""
    return dict(_REVEALED)


def locked() -> list[Prediction]:
    """The predictions locked in this kernel, in the order they were made."""
    return sorted(_LOCKED.values(), key=lambda p: p.at)


def _unit(unit: str) -> str:
    """How a unit follows its number: "4x" and "12%", but "4 pages"."""
    return unit if unit in ("x", "%") else f" {unit}" if unit else ""


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _same_choice(predicted: Any, measured: Any) -> bool:
    def word(x: Any) -> str:  # "MADV_RANDOM", "madv random" and "random" are one choice
        text = str(x).strip().lower().replace("_", " ")
        return text.removeprefix("madv ").removeprefix("map ")

    return word(predicted) == word(measured)


def _show(value: Any) -> str:
    if _is_number(value) and not isinstance(value, str):
        number = float(value)
        if number.is_integer() or abs(number) >= 1000:
            return f"{number:,.0f}"
        return f"{number:.4g}"  # as precise as the printouts beside it: 124.6, 0.1103
    return str(value)


def _how_far(r: Reveal) -> str:
    ratio = r.ratio
    if ratio is None:
        return "your prediction was 0" if r.measured else "exactly right"
    if float(r.measured) == float(r.prediction.value):
        return "exactly right"
    if ratio == 0:
        return "none at all"
    if ratio < 0:
        off = abs(float(r.measured) - float(r.prediction.value))
        return f"the opposite sign, off by {_show(off)}"
    if abs(ratio - 1) <= CLOSE:
        return f"close ({ratio:.3g}x your prediction)"
    far = f"{ratio:,.3g}x your prediction" if ratio > 1 else f"{1 / ratio:,.3g}x below it"
    counts = all(float(v).is_integer() for v in (r.measured, r.prediction.value))
    return (
        f"{far}, off by {abs(float(r.measured) - float(r.prediction.value)):,.0f}"
        if counts
        else far
    )
