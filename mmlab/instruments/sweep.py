"""Reading a sweep of races: which method won where, and why, computed from the rounds.

Notebook 04 races the ways of reading a file over block sizes, orders and cache states
(``bench.read_vs_mmap``, one ``BenchResult`` per case). This module turns that table into
what a student reads: a figure of every case (``plot_sweep``; ``plot_sweeps`` draws them
all), and each case's winner by its rounds, never by medians alone (``sweep_summary``).

A race run again can move a ratio by more than the spread of its own rounds, so the races'
verdicts ask every round to agree and the median to lie at least 5% from 1
(``BenchResult.rule``), and a case raced twice (notebook 04's section 2 and its sweep) is
judged on both races' rounds together (``ratio_of``, ``Pooled``), saying when they disagree.
Why the sweep came out as it did is ``mmlab.instruments.reasons``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmlab.instruments.stats import CLOSE, QUICK_NOTE, BenchResult, Spread

__all__ = [
    "REFERENCE",
    "Pooled",
    "case_of",
    "l3_bytes",
    "plot_sweep",
    "plot_sweeps",
    "ratio_of",
    "size_label",
    "sweep_summary",
]

REFERENCE = "memory copy"  # the name of the reference row in every race


def size_label(nbytes: int) -> str:
    """A block size as a reader says it: "4 KiB", "1,024 KiB", "100 B"."""
    return f"{nbytes // 1024:,} KiB" if nbytes % 1024 == 0 else f"{nbytes:,} B"


def plot_sweep(results: Mapping[int, BenchResult], ax=None, title: str = ""):
    """GB/s by block size: each method's median with its IQR; the reference's IQR as a grey
    box at each block size, from that race's own rounds (its copy ran between the methods).

    ``results`` maps block size in bytes to the ``read_vs_mmap`` result of that size.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    sizes = sorted(results)
    if not sizes:
        ax.set_title(title)
        return ax
    kib = np.array(sizes) / 1024
    for name in results[sizes[0]].names:
        spreads = [results[size][name].rate.scaled(1e-9) for size in sizes]
        medians = np.array([s.median for s in spreads])
        errors = [medians - [s.q1 for s in spreads], [s.q3 for s in spreads] - medians]
        ax.errorbar(kib, medians, yerr=errors, marker="o", capsize=3, label=name)
    for k, size in zip(kib, sizes, strict=True):
        ref = results[size].reference.rate.scaled(1e-9)
        label = f"{REFERENCE}: median (line), IQR of the race's rounds" if k == kib[0] else None
        # at least 4% tall, so that a steady copy's box does not shrink to a hairline
        low, high = min(ref.q1, ref.median / 1.02), max(ref.q3, ref.median * 1.02)
        ax.fill_between([k / 1.6, k * 1.6], low, high, color="0.5", alpha=0.35, label=label)
        ax.hlines(ref.median, k / 1.6, k * 1.6, color="0.3", linewidth=1.5)
    ax.set(xscale="log", yscale="log", xlabel="block (KiB)", ylabel="GB/s", title=title)
    ax.set_xlim(kib[0] / 2.5, kib[-1] * 2.5)
    ax.set_xticks(kib, [f"{k:,g}" for k in kib])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 0.1 0.2 0.5 1 2 5 10
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    return ax


def plot_sweeps(results: Mapping[tuple[str, str, int], BenchResult], runs, axes) -> None:
    """Every case of a sweep, one panel per ``(pattern, cache)`` of ``runs``, on ``axes``.

    The panels share their GB/s limits (so heights compare across panels) and one legend,
    below them, so that none covers a point; panels not run yet stay empty. Redraws from
    scratch, for ``LiveFigure``.
    """
    rows = [row for r in results.values() for row in [*r, r.reference]]
    rates = [s for row in rows for s in (row.rate.q1, row.rate.q3)]
    for ax, (pattern, cache) in zip(np.ravel(axes), runs, strict=True):
        ax.clear()
        done = {b: r for (p, c, b), r in results.items() if (p, c) == (pattern, cache)}
        plot_sweep(done, ax=ax, title=f"{pattern}, {cache}")
        if rates:
            ax.set_ylim(min(rates) * 1e-9 / 1.5, max(rates) * 1e-9 * 1.5)
    figure = np.ravel(axes)[0].figure
    for old in list(figure.legends):
        old.remove()
    handles, labels = np.ravel(axes)[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4))


@dataclass(frozen=True)
class Pooled:
    """One ratio of a sweep case (``a``'s speed over ``b``'s, per round), with the same ratio
    from an earlier race of the same case (notebook 04's section 2) when there is one.

    A race run again can move a ratio by more than its spread inside one race, so the verdict
    is taken on the rounds of both races together, by the race's rule (``BenchResult.rule``),
    and ``disagree`` says when the two races alone would give different verdicts.
    """

    here: Spread
    before: Spread | None = None
    rule: Mapping = field(default_factory=dict)

    @property
    def pooled(self) -> Spread:
        if self.before is None:
            return self.here
        return Spread.of(self.here.samples + self.before.samples)

    def side(self) -> int:
        return self.pooled.side(1.0, **self.rule)

    @property
    def disagree(self) -> bool:
        if self.before is None:
            return False
        return self.here.side(1.0, **self.rule) != self.before.side(1.0, **self.rule)

    def text(self, above: str, below: str) -> str:
        """``1.14x [1.13–1.15]: mmap faster in 5 of 5 rounds``, or both races and the pool."""
        here = self.here.text(".2f", "x", than=1.0)
        if self.before is None:
            return f"{here}: {self.here.verdict(above=above, below=below, **self.rule)}"
        pooled = self.pooled
        both = f"{here} here, {self.before.text('.2f', 'x', than=1.0)} in section 2's race"
        if self.disagree and self.side() == 0:
            k, n = pooled.count_above(1.0), len(pooled.samples)
            return (
                f"{both}: one race alone gives a verdict and the other does not (or the "
                f"opposite one), and pooled, {above} in {k} of {n} rounds: this run cannot tell"
            )
        verdict = pooled.verdict(above=above, below=below, **self.rule)
        flag = "; the two races alone would give different verdicts" if self.disagree else ""
        return f"{both}; both races pooled: {verdict}{flag}"


def ratio_of(results, key, a: str, b: str, first: BenchResult | None = None) -> Pooled:
    """``a`` over ``b`` in the sweep case ``key``, pooled with ``first`` (section 2's race)
    if that raced the same case: same pattern, cache state, block size and file size."""
    r = results[key]
    same = (
        first is not None
        and {a, b} <= set(first.names)
        and case_of(first) == key
        and first.params.get("size") == r.params.get("size")
        and not first.params.get("madvise")
    )
    before = first.relative(a, b) if same else None
    return Pooled(r.relative(a, b), before, r.rule)


def case_of(result: BenchResult) -> tuple[str, str, int] | None:
    """The sweep key ``(pattern, cache, block size)`` of a ``read_vs_mmap`` result."""
    p = result.params
    return (p["pattern"], p["cache"], p["block_size"]) if "pattern" in p else None


def sweep_summary(
    results: Mapping[tuple[str, str, int], BenchResult], first: BenchResult | None = None
) -> str:
    """One line per (pattern, cache, block size): who won, by how much, and what it cost.

    Every comparison is per round (medians of ratios, [IQR]), with whether it is clear; the
    fastest is the highest median, and its lead is worded so the two never contradict. The
    case ``first`` (section 2's race) also ran is judged on both races' rounds.
    """
    lines = []
    for key, r in results.items():
        ranked = r.ranked()
        best = ranked[0]
        line = (
            f"{_label(key)}: fastest (highest median) {best.name}, "
            f"{best.rate.scaled(1e-9).text('.2f', ' GB/s')}"
        )
        if len(ranked) > 1:
            line += f"; {r.lead(best.name, ranked[1].name)}"
        copy = best.of_reference.verdict(above="faster", below="slower", **r.rule)
        ratio = best.of_reference.text(".2f", "x", than=1.0)
        lines.append(f"{line}; {ratio} the speed of {REFERENCE}: {copy}")
        if {"read", "mmap slice"} <= set(r.names):
            pooled = ratio_of(results, key, "mmap slice", "read", first)
            lines.append(f"    mmap slice / read: {pooled.text('mmap faster', 'read faster')}")
        faults = ", ".join(
            f"{row.name} {_count(row.major_faults)}/{_mib(row.storage_bytes)}" for row in r
        )
        lines.append(f"    per call, major faults/MiB from storage: {faults}")
    lines += _block_size_lines(results)
    if any(r.quick for r in results.values()):
        close = [
            f"{_label(key)} mmap slice / read {ratio.median:.2f}x"
            for key, r in results.items()
            if key[1] != "warm"
            and {"read", "mmap slice"} <= set(r.names)
            and abs((ratio := r.relative("mmap slice", "read")).median - 1) < CLOSE
        ]
        lines.append(
            f"{QUICK_NOTE}; close calls here (cold): {', '.join(close) if close else 'none'}; "
            "the block-size lines above compare medians of separate races of few rounds, so "
            "in quick mode they can point the other way from a full-size run (cold, in order, "
            "most of all); the large effects (small blocks warm, the memmap sum's cost per "
            "block, cold random blocks) are the ones to read in quick mode"
        )
        lines += _quick_warm_caveat(results)
    return "\n".join(lines)


def l3_bytes() -> int | None:
    """The largest CPU cache of CPU 0, from /sys (Linux); None where it cannot be read."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip().upper()
            level = int((index / "level").read_text())
        except (OSError, ValueError):
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        if level >= 3 and text.rstrip("KMG").isdigit():
            sizes.append(int(text.rstrip("KMG")) * scale)
    return max(sizes, default=None)


def _quick_warm_caveat(results) -> list[str]:
    """Quick mode: every warm mmap slice / read verdict, and why a full run may reverse it."""
    warm = [
        (key, r)
        for key, r in results.items()
        if key[1] == "warm" and r.quick
        if {"read", "mmap slice"} <= set(r.names)
    ]
    if not warm:
        return []
    size = max(r.params["size"] for _, r in warm)
    l3 = l3_bytes()
    if l3 is None:
        where = "this CPU's cache size is unknown, so the file may sit in it"
    elif size <= l3:
        where = f"it fits in this CPU's {l3 / 2**20:,.0f} MiB L3 cache"
    else:
        where = f"it is larger than this CPU's {l3 / 2**20:,.0f} MiB L3 cache"
    verdicts = []
    for key, r in warm:
        ratio = r.relative("mmap slice", "read")
        verdict = ratio.verdict(above="mmap faster", below="read faster", **r.rule)
        verdicts.append(f"{_label(key)} {ratio.median:.2f}x, {verdict}")
    return [
        f"quick mode, warm races: the file is {size / 2**20:,.0f} MiB and {where}; warm, "
        "each method copies out of the page cache, so how fast copies run with the data in "
        "the CPU's cache decides these races (the large-block ones most), and a full-size "
        "run (a larger file and copy, more rounds) may reverse any warm mmap slice / read "
        f"verdict here: {'; '.join(verdicts)}"
    ]


def _block_size_lines(results: Mapping[tuple[str, str, int], BenchResult]) -> list[str]:
    """Per situation, each method's speed with the smallest blocks against the largest."""
    lines = []
    situations = dict.fromkeys((pattern, cache) for pattern, cache, _ in results)
    for pattern, cache in situations:
        sizes = sorted(b for p, c, b in results if (p, c) == (pattern, cache))
        if len(sizes) < 2:
            continue
        small, large = results[pattern, cache, sizes[0]], results[pattern, cache, sizes[-1]]
        ratios = ", ".join(
            f"{row.name} {row.rate.median / large[row.name].rate.median:.2f}x" for row in small
        )
        lines.append(
            f"{cache} {pattern}, {sizes[0] // 1024:,} KiB blocks against {sizes[-1] // 1024:,} "
            f"KiB (ratio of medians): {ratios}"
        )
    return lines


def _label(key: tuple[str, str, int]) -> str:
    pattern, cache, block = key
    return f"{cache} {pattern} {size_label(block)}"


def _count(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f}"
