"""The statistics of a comparison: medians over rounds, their spread, and the table.

``Spread`` (``mmlab.instruments.spread``, re-exported here) holds one quantity's samples,
one per round, with their median, interquartile range (IQR, the middle half) and min-max
range; ``Spread.verdict`` says whether the samples lie clearly above or below a value or not
clearly at all. A ratio taken round by round (each method against the reference of the
same round) cancels what the rounds share, so its spread is the honest one.

``Row`` is one callable's line of the table: its time, rate and speed against the
reference as ``Spread``s, and its page faults, bytes from storage and page-cache change.
``BenchResult`` is the table: text, HTML, records, pandas and a figure. ``mmlab.compare``
runs the interleaved rounds that fill it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from html import escape

from mmlab.instruments.measure import Measurement, format_count
from mmlab.instruments.spread import (
    CLOSE,
    FEW_ROUNDS,
    MARGIN,
    QUICK_NOTE,
    Spread,
    _num,
)

__all__ = [
    "CLOSE",
    "COUNTERS",
    "FEW_ROUNDS",
    "MARGIN",
    "QUICK_NOTE",
    "BenchResult",
    "Row",
    "Spread",
]

# The counters a Row holds per call, in the order of its table and records.
COUNTERS = ("minor_faults", "major_faults", "storage_bytes", "cached_pages_delta")


@dataclass(frozen=True)
class Row:
    """One callable's line of the table: its statistics over the rounds.

    ``rate`` (bytes per second, when ``nbytes`` is known) and ``of_reference`` (speed as a
    multiple of the reference's, one value per round) are ``Spread``s. The counters are per
    call, the median over the rounds (a value one round really had); ``None`` where the OS has
    no such counter, with the reason in ``unavailable``.
    """

    name: str
    seconds: Spread
    rate: Spread | None = None
    of_reference: Spread | None = None
    minor_faults: int | None = None
    major_faults: int | None = None
    storage_bytes: int | None = None
    cached_pages_delta: int | None = None
    nbytes: int | None = None
    checksum: int | None = None
    is_reference: bool = False
    user_s: Spread | None = None  # CPU time in user space per call (getrusage)
    system_s: Spread | None = None  # CPU time in the kernel per call
    unavailable: Mapping[str, str] = field(default_factory=dict)
    measurements: tuple[Measurement, ...] = field(default=(), repr=False, compare=False)

    @property
    def gb_s(self) -> float | None:
        """The median rate in GB/s (10^9 bytes per second)."""
        return None if self.rate is None else self.rate.median / 1e9

    def as_dict(self) -> dict:
        """A flat dict: each spread becomes its median and ``_q1``, ``_q3``, ``_min``, ``_max``."""
        out: dict = {"name": self.name, "reference": self.is_reference}
        spreads = {"seconds": self.seconds, "gb_s": self.rate and self.rate.scaled(1e-9)}
        spreads["of_reference"] = self.of_reference
        for key, spread in spreads.items():
            for stat in ("median", "q1", "q3", "min", "max"):
                name = key if stat == "median" else f"{key}_{stat}"
                out[name] = None if spread is None else getattr(spread, stat)
        out["rounds"] = len(self.seconds.samples)
        for key in (*COUNTERS, "nbytes", "checksum"):
            out[key] = getattr(self, key)
        out["unavailable"] = "; ".join(f"{k}: {v}" for k, v in self.unavailable.items())
        return out


@dataclass
class BenchResult:
    """The table of a ``compare`` (or ``read_vs_mmap``) run.

    Iterating gives the rows of the callables compared (``Row``), ``result["name"]`` one row
    (the reference's too), ``result.reference`` the reference row. ``to_records()`` and
    ``to_pandas()`` give the rows and then the reference, flagged in column ``reference``.
    ``order`` lists every timed call as ``(round, name)`` in the order they ran.
    """

    rows: list[Row]
    reference: Row | None
    rounds: int
    order: list[tuple[int, str]]
    title: str = ""
    notes: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    quick: bool = False
    # None: a verdict needs the IQR on one side; a number (MARGIN): every round, and a median
    # at least that far from 1 (read_vs_mmap sets it)
    margin: float | None = None

    @property
    def rule(self) -> dict:
        """The keywords of ``Spread.side``/``verdict`` this result's verdicts use."""
        return {} if self.margin is None else {"margin": self.margin, "every": True}

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> Row:
        for row in self._all_rows():
            if row.name == name:
                return row
        raise KeyError(f"no row {name!r}; rows: {[r.name for r in self._all_rows()]}")

    @property
    def names(self) -> list[str]:
        return [row.name for row in self.rows]

    def _all_rows(self) -> list[Row]:
        return self.rows + ([self.reference] if self.reference is not None else [])

    def relative(self, a: str, b: str) -> Spread:
        """``a``'s speed as a multiple of ``b``'s, one value per round (> 1: ``a`` is faster)."""
        ra, rb = self[a], self[b]
        return Spread.of(
            _speed_ratio(sa, ra.nbytes, sb, rb.nbytes)
            for sa, sb in zip(ra.seconds.samples, rb.seconds.samples, strict=True)
        )

    def ranked(self) -> list[Row]:
        """The rows by median rate, fastest first (by median time without sizes)."""
        if all(row.rate is not None for row in self.rows):
            return sorted(self.rows, key=lambda row: -row.rate.median)
        return sorted(self.rows, key=lambda row: row.seconds.median)

    def lead(self, a: str, b: str) -> str:
        """``a`` against ``b`` round by round, in words that agree with the medians.

        ``"ahead of b in 5 of 5 rounds (1.12x [1.10–1.13])"``, ``"behind b ..."`` or ``"no
        clear difference from b (...)"``. Where the per-round ratio points one way and the
        median speeds the other (possible: medians of separate rows are not the median of
        their ratio), the text says so instead of leaving a contradiction.
        """
        ratio = self.relative(a, b)
        n, k = len(ratio.samples), ratio.count_above(1.0)
        shown = ratio.text(".2f", "x", than=1.0)
        side = ratio.side(1.0, **self.rule)
        if side > 0:
            text = f"ahead of {b} in {k} of {n} rounds ({shown})"
        elif side < 0:
            text = f"behind {b} in {n - k} of {n} rounds ({shown})"
        else:
            if self.margin is not None and n < 2:
                return f"one round cannot tell it from {b} ({shown})"
            near = self.margin and ratio.side(1.0, 0.0, True)
            why = f"within {self.margin:.0%}, " if near else ""
            return f"no clear difference from {b} ({why}ahead in {k} of {n} rounds, {shown})"
        ra, rb = self[a], self[b]
        if ra.rate is not None and rb.rate is not None:
            higher = ra.rate.median > rb.rate.median
            if higher != (side > 0):
                owner = "its" if higher else f"{b}'s"
                text += (
                    f", though {owner} median speed is the higher: the rounds and the "
                    "medians disagree, so neither is clearly faster"
                )
        return text

    def podium(self) -> str:
        """This run's fastest and slowest rows, each against its neighbour round by round."""
        ranked = self.ranked()
        if len(ranked) < 2:
            return f"only {ranked[0].name} ran" if ranked else "nothing ran"
        first, second, before, last = ranked[0], ranked[1], ranked[-2], ranked[-1]
        return (
            f"fastest here (highest median): {first.name}, {self._speed(first)}, "
            f"{self.lead(first.name, second.name)}\n"
            f"slowest here (lowest median): {last.name}, {self._speed(last)}, "
            f"{self.lead(last.name, before.name)}"
        )

    @staticmethod
    def _speed(row: Row) -> str:
        if row.rate is None:
            return f"{row.seconds.median * 1e3:.3g} ms"
        return f"{row.rate.scaled(1e-9).median:.2f} GB/s"

    def fastest(self) -> Row:
        """The row with the highest median rate (or the lowest median time, without sizes)."""
        if all(row.rate is not None for row in self.rows):
            return max(self.rows, key=lambda row: row.rate.median)
        return min(self.rows, key=lambda row: row.seconds.median)

    def summary(self) -> str:
        """Each row against the reference, and whether every row saw the same checksum."""
        lines = []
        ref = self.reference
        if len(self.rows) >= 2:
            lines.append(self.podium())
        for row in self.rows:
            if row.of_reference is not None:
                speed = row.of_reference.verdict(above="faster", below="slower", **self.rule)
                ratio = row.of_reference.text(".2f", "x", than=1.0)
                lines.append(f"{row.name}: {ratio} the speed of {ref.name}: {speed}")
        if self.quick and ref is not None:
            lines.append(QUICK_NOTE)
        sums = {row.checksum for row in self.rows if row.checksum is not None}
        if sums:
            same = len(sums) == 1 and all(row.checksum is not None for row in self.rows)
            lines.append(
                "checksums: every method saw the same bytes"
                if same
                else "checksums DIFFER: the methods did not see the same bytes"
            )
        return "\n".join(lines)

    # The table, as text, HTML, records, pandas and a figure.

    def _columns(self) -> list[tuple[str, Callable[[Row], str]]]:
        unit, scale = _time_unit(min(row.seconds.median for row in self._all_rows()))
        columns = [("name", lambda r: r.name)]
        columns.append((f"{unit} [IQR]", lambda r: _spread(r.seconds, scale)))
        if all(row.rate is not None for row in self._all_rows()):
            columns.append(("GB/s [IQR]", lambda r: _spread(r.rate, 1e-9)))
        if self.reference is not None:
            columns.append(
                (
                    f"x {self.reference.name} [IQR]",
                    lambda r: "1" if r.is_reference else _spread(r.of_reference, 1.0, 1.0),
                )
            )
        columns += [
            ("minor faults", lambda r: format_count(r.minor_faults)),
            ("major faults", lambda r: format_count(r.major_faults)),
            ("storage MiB", lambda r: _mib(r.storage_bytes)),
        ]
        if any(row.cached_pages_delta is not None for row in self._all_rows()):
            columns.append(("cached pages", lambda r: _signed(r.cached_pages_delta)))
        if any(row.checksum is not None for row in self._all_rows()):
            columns.append(("checksum", lambda r: _hex(r.checksum)))
        return columns

    def _caption(self) -> str:
        return "; ".join(filter(None, [self.title, f"{_rounds(self.rounds)}, interleaved"]))

    def _footnotes(self) -> list[str]:
        notes = list(self.notes)
        notes.append("medians of the rounds, [interquartile range]; counters: median per call")
        for row in self._all_rows():
            notes += [f"{row.name} {key}: n/a, {why}" for key, why in row.unavailable.items()]
        return notes

    def table(self) -> str:
        columns = self._columns()
        cells = [[head for head, _ in columns]]
        cells += [[cell(row) for _, cell in columns] for row in self._all_rows()]
        widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
        lines = [
            "  ".join(
                text.ljust(width) if i == 0 else text.rjust(width)
                for i, (text, width) in enumerate(zip(line, widths, strict=True))
            )
            for line in cells
        ]
        return "\n".join(lines + [f"  ({note})" for note in self._footnotes()])

    def __repr__(self) -> str:
        return f"<BenchResult: {self._caption()}>\n{self.table()}"

    def _repr_html_(self) -> str:
        columns = self._columns()
        head = "".join(f"<th>{escape(name)}</th>" for name, _ in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(cell(row))}</td>" for _, cell in columns) + "</tr>"
            for row in self._all_rows()
        )
        notes = "".join(f"<li>{escape(note)}</li>" for note in self._footnotes())
        return (
            f"<table><caption>{escape(self._caption())}</caption><tr>{head}</tr>{body}</table>"
            f"<ul style='font-size:smaller'>{notes}</ul>"
        )

    def to_records(self, reference: bool = True) -> list[dict]:
        """A list of flat dicts (``Row.as_dict``), the reference last unless ``reference=False``."""
        rows = self._all_rows() if reference else self.rows
        return [row.as_dict() for row in rows]

    def to_pandas(self, reference: bool = True):
        """A ``pandas.DataFrame`` of ``to_records()``, indexed by name (pandas is optional)."""
        try:
            import pandas as pd
        except ImportError as error:
            raise ImportError(
                "BenchResult.to_pandas() needs pandas, which is not installed "
                "(pip install pandas); to_records() gives the same table as a list of dicts"
            ) from error
        return pd.DataFrame.from_records(self.to_records(reference)).set_index("name")

    def plot(self, ax=None):
        """Medians as bars with the IQR as error bars; the reference's IQR as a band."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 1.5 + 0.4 * len(self.rows)), layout="constrained")
        rates = all(row.rate is not None for row in self._all_rows())
        unit, scale = ("GB/s", 1e-9) if rates else _time_unit(self.rows[0].seconds.median)

        def spread(row: Row) -> Spread:
            return (row.rate if rates else row.seconds).scaled(scale)

        spreads = [spread(row) for row in self.rows]
        medians = [s.median for s in spreads]
        errors = [[m - s.q1 for m, s in zip(medians, spreads, strict=True)]]
        errors.append([s.q3 - m for m, s in zip(medians, spreads, strict=True)])
        ax.barh(self.names, medians, xerr=errors, capsize=3, color="#1f77b4", label="median, IQR")
        if self.reference is not None:
            ref = spread(self.reference)
            name = self.reference.name
            ax.axvspan(ref.q1, ref.q3, color="#d62728", alpha=0.2, label=f"{name}, IQR")
            ax.axvline(ref.median, color="#d62728", linestyle="--", label=f"{name}, median")
        ax.invert_yaxis()
        ax.set_xlabel(unit)
        ax.set_title(self._caption(), fontsize=9)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8)
        return ax


def _speed_ratio(seconds: float, nbytes, ref_seconds: float, ref_nbytes) -> float:
    """Speed of one call as a multiple of another's: a rate ratio, or a time ratio without sizes."""
    if seconds <= 0:
        return math.inf
    if nbytes and ref_nbytes:
        return (nbytes / seconds) / (ref_nbytes / ref_seconds)
    return ref_seconds / seconds


def _rounds(n: int) -> str:
    return f"{n} round" if n == 1 else f"{n} rounds"


def _time_unit(seconds: float) -> tuple[str, float]:
    if seconds >= 1:
        return "s", 1.0
    if seconds >= 1e-3:
        return "ms", 1e3
    return "µs", 1e6


def _spread(spread: Spread | None, scale: float, than: float | None = None) -> str:
    if spread is None:
        return "n/a"
    s = spread.scaled(scale)
    return f"{_num(s.median, than)} [{_num(s.q1, than)}–{_num(s.q3, than)}]"


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.1f}"


def _hex(value: int | None) -> str:
    return "" if value is None else f"{value:08x}"


def _signed(value: int | None) -> str:
    return "n/a" if value is None else f"{value:+,}"
