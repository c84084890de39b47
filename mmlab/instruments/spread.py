"""A quantity measured once per round: its median, its spread, and whether it clearly differs.

``Spread`` holds one quantity's samples, one per round, with their median, interquartile
range (IQR, the middle half) and min-max range. ``Spread.side`` says whether the samples lie
clearly above or below a value: by default when the whole IQR lies on one side (every sample,
with fewer than ``FEW_ROUNDS``); by the strict rule (``margin=MARGIN, every=True``, what
``read_vs_mmap``'s races use) only when every round does and the median lies at least 5%
away, since a race run again can move a ratio by more than the spread of its own rounds.
Numbers are printed with as many digits as it takes to keep them on their side of 1.

``mmlab.instruments.stats`` builds the comparison's table on it and re-exports it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

__all__ = ["CLOSE", "FEW_ROUNDS", "MARGIN", "QUICK_NOTE", "Spread"]

# What quick mode (a small file, few rounds) cannot promise, said wherever it prints verdicts.
QUICK_NOTE = (
    "quick mode (MMLAB_QUICK=1: a small file, few rounds): a speed against the memory copy, "
    "and a ratio within 15% of 1, can come out the other way in a full-size run"
)
CLOSE = 0.15  # a ratio within this of 1 is a close call
# Below this many rounds an IQR is too rough to trust: a verdict then needs every round to agree.
FEW_ROUNDS = 5
# The strict rule (``Spread.side(margin=MARGIN, every=True)``, read_vs_mmap's races): a race
# run again can move a ratio by more than its spread inside one race, so a verdict needs
# every round on one side and a median at least 5% away.
MARGIN = 0.05


@dataclass(frozen=True)
class Spread:
    """Median and spread of samples (kept in round order): IQR ``q1``-``q3``, range min-max.

    ``f"{spread:.2f}"`` formats as ``median [q1–q3]``; ``spread.text(".2f", "x")`` adds a unit.
    """

    samples: tuple[float, ...]
    median: float
    q1: float
    q3: float
    min: float
    max: float

    @classmethod
    def of(cls, samples) -> Spread:
        values = tuple(float(v) for v in samples)
        if not values:
            raise ValueError("a spread needs at least one sample")
        q1, median, q3 = (float(q) for q in np.percentile(values, [25, 50, 75]))
        return cls(values, median, q1, q3, min(values), max(values))

    def scaled(self, factor: float) -> Spread:
        """The same spread in other units (``rate.scaled(1e-9)``: GB/s)."""
        return Spread.of(v * factor for v in self.samples)

    def count_above(self, value: float) -> int:
        return sum(v > value for v in self.samples)

    def side(self, than: float = 1.0, margin: float = 0.0, every: bool = False) -> int:
        """1 if the samples lie clearly above ``than``, -1 if clearly below, else 0.

        Clearly: the whole IQR on one side; with fewer than ``FEW_ROUNDS`` samples, or with
        ``every``, every one. ``margin`` (0.05: 5%) also asks the median to lie at least that
        far from ``than`` (as a factor); with ``every``, one sample never decides.
        """
        strict = every or len(self.samples) < FEW_ROUNDS
        if every and len(self.samples) < 2:
            return 0
        low, high = (self.min, self.max) if strict else (self.q1, self.q3)
        if low > than and self.median >= than * (1 + margin):
            return 1
        if high < than and self.median <= than / (1 + margin):
            return -1
        return 0

    def verdict(
        self,
        than: float = 1.0,
        above: str = "higher",
        below: str = "lower",
        margin: float = 0.0,
        every: bool = False,
    ) -> str:
        """Whether the samples lie clearly above or below ``than`` (``side``).

        ``"faster in 7 of 7 rounds"``, or ``"no clear difference (faster in 4 of 7 rounds)"``;
        with ``every``, one round: ``"one round cannot tell"``.
        """
        n, k = len(self.samples), self.count_above(than)
        side = self.side(than, margin, every)
        if side > 0:
            return f"{above} in {k} of {n} rounds"
        if side < 0:
            return f"{below} in {n - k} of {n} rounds"
        if every and n < 2:
            return "one round cannot tell"
        # every round on one side, yet not clear: the median lies within the margin
        near = f"within {margin:.0%}, " if margin and self.side(than, 0.0, every) else ""
        return f"no clear difference ({near}{above} in {k} of {n} rounds)"

    def text(self, spec: str = ".3g", unit: str = "", than: float | None = None) -> str:
        """``median[unit] [q1–q3]``: ``spread.text(".2f", "x")`` gives ``1.25x [1.20–1.31]``.

        With ``than`` (1 for a ratio), digits are added until no value rounds onto or across
        it: an IQR wholly below 1 never reads ``[0.96–1.00]`` but ``[0.965–0.999]``.
        """
        values = (self.median, self.q1, self.q3)
        spec = _side_spec(spec, values, than)
        return f"{self.median:{spec}}{unit} [{self.q1:{spec}}–{self.q3:{spec}}]"

    def __format__(self, spec: str) -> str:
        return self.text(spec or ".3g")

    def __str__(self) -> str:
        return format(self, "")


def _num(x: float, than: float | None = None) -> str:
    """Three significant digits, no exponent: 0.0123, 1.23, 123, 12,300.

    With ``than``, more digits where three would round ``x`` onto or across it.
    """
    if not math.isfinite(x) or x == 0:
        return f"{x:g}"
    digits = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"{x:{_side_spec(f',.{digits}f', (x,), than)}}"


def _side_spec(spec: str, values, than: float | None, most: int = 6) -> str:
    """``spec`` with more decimals (up to ``most`` more) until each value keeps its side.

    A value below ``than`` must not print as ``than`` or above it, nor one above as below.
    Only specs ending in ``.Nf`` or ``.Ng`` are widened; others are returned as they are.
    """
    match = re.fullmatch(r"(.*\.)(\d+)([fg])", spec)
    if than is None or match is None:
        return spec
    head, digits, kind = match.group(1), int(match.group(2)), match.group(3)
    for extra in range(most + 1):
        candidate = f"{head}{digits + extra}{kind}"
        if all(_same_side(v, float(f"{v:{candidate}}".replace(",", "")), than) for v in values):
            return candidate
    return candidate


def _same_side(value: float, shown: float, than: float) -> bool:
    if not math.isfinite(value):
        return True
    return (value > than) == (shown > than) and (value < than) == (shown < than)
