"""Notebook 04's bookkeeping: the race's verdicts, the recorded claim, and the try-it widget.

Notebook 04 races ``read()`` against ``mmap`` (``mmlab.bench.read_vs_mmap``): once in its
section 2 (warm, in order, 1 MiB blocks), then over a sweep of block sizes, orders and cache
states that races the same case again. Two races of one case can disagree by more than the
spread of either's rounds, so every verdict here is taken on the rounds of both races
together (``mmlab.instruments.sweep.ratio_of``), by the races' rule: every round on one side
of 1 and the median at least 5% from it (``BenchResult.rule``).

``race_lines(result)`` prints section 2's ratios that the summary does not; ``weigh_claim``
records the numbers behind the course's claim "No copy between kernel and user space" and
the claim row itself, worded from those verdicts (provisional in quick mode, saying where
the two races disagree); ``try_races`` builds section 6's widget and returns its ``race`` function.

The notebook's reveals (``fastest``, ``why_fastest``, ``read_block_gain``,
``why_block_gain``, ``cold_random_winner``, ``why_cold_random``, ``cache_fit``) live in
``mmlab.course.readreveal`` and are exported here too, so the notebook reaches them all as
``readrace.<name>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from mmlab.course import results
from mmlab.course.readreveal import (
    cache_fit,
    cold_random_winner,
    fastest,
    read_block_gain,
    sweep_explained,
    why_block_gain,
    why_cold_random,
    why_fastest,
)
from mmlab.instruments.stats import BenchResult
from mmlab.instruments.sweep import Pooled, case_of, ratio_of, size_label

__all__ = [
    "cache_fit",
    "cold_random_winner",
    "fastest",
    "race_lines",
    "read_block_gain",
    "sweep_explained",
    "try_races",
    "weigh_claim",
    "why_block_gain",
    "why_cold_random",
    "why_fastest",
]

SLICE, READ, SUM = "mmap slice", "read", "numpy.memmap sum"


def race_lines(result: BenchResult, again: bool = True) -> str:
    """``mmap slice`` and the memmap sum against ``read``, round by round; with ``again``,
    a note that section 3 races the case again."""
    lines = []
    for name, above in ((SLICE, "mmap faster"), (SUM, "sum faster")):
        if {name, READ} <= set(result.names):
            ratio = result.relative(name, READ)
            verdict = ratio.verdict(above=above, below="read faster", **result.rule)
            lines.append(f"{name} / read: {ratio.text('.2f', 'x', than=1.0)}: {verdict}")
    if again:
        lines.append(
            "(section 3 races this case again; section 4 judges it on the rounds of both races)"
        )
    return "\n".join(lines)


def _pooled(table: Mapping, first: BenchResult, name: str) -> Pooled:
    key = case_of(first)
    if key in table:
        return ratio_of(table, key, name, READ, first)
    return Pooled(first.relative(name, READ), None, first.rule)


def weigh_claim(
    first: BenchResult, table: Mapping[tuple[str, str, int], BenchResult], report, path: Path
) -> dict:
    """Record section 2's race and the sweep for the tests, then the claim row; returns it.

    ``first`` is section 2's race, ``table`` the sweep, ``report`` the notebook's
    ``machine.report`` (whether eviction works, ``read_ahead_kb``), ``path`` the raced file.
    """
    blocks = sorted(b for p, c, b in table if (p, c) == ("sequential", "warm"))
    warm = {b: ratio_of(table, ("sequential", "warm", b), SLICE, READ, first) for b in blocks}
    groups = {
        side: [size_label(b) for b, r in warm.items() if r.side() == side] for side in (1, -1, 0)
    }
    in_place = _pooled(table, first, SUM)
    disagree = [size_label(b) for b, r in warm.items() if r.disagree] + (
        ["the memmap sum"] if in_place.disagree else []
    )
    cold = table.get(("random", "cold", 4096))
    ra = report.read_ahead_kb
    results.record(
        "04",
        race={row.name: row.rate.samples for row in first},
        copy=first.reference.rate.samples,
        race_slice_over_read=first.relative(SLICE, READ).samples,
        warm_slice_over_read={str(b): r.here.samples for b, r in warm.items()},
        warm_slice_side={str(b): r.side() for b, r in warm.items()},
        slice_wins=groups[1],
        read_wins=groups[-1],
        ties=groups[0],
        disagree=disagree,
        in_place_over_read=first.relative(SUM, READ).samples,
        in_place_sweep=None if in_place.before is None else in_place.here.samples,
        in_place_side=in_place.side(),
        margin=first.margin,
        race_case=list(case_of(first)),
        cold_random_4k=cold and {row.name: [row.major_faults, row.storage_bytes] for row in cold},
        blocks_4k=path.stat().st_size // 4096,
        eviction_works=report.eviction_works.value,
        read_ahead_kb=ra.value if ra.known else None,
    )
    return results.claim(
        "04",
        "no_copy",
        claim="No copy between kernel and user space",
        shown_in="04 §2 to §4",
        measured=_measured(first, warm, in_place),
        verdict=_verdict(first, groups, in_place, disagree),
    )


def _measured(first: BenchResult, warm: Mapping[int, Pooled], in_place: Pooled) -> str:
    p = first.params
    speeds = ", ".join(f"{row.name} {row.rate.median / 1e9:.3g}" for row in first)
    ratios = "; ".join(
        f"{size_label(b)} {r.here.text('.2f', 'x', than=1.0)}"
        + (f" (section 2: {r.before.text('.2f', 'x', than=1.0)})" if r.before else "")
        for b, r in warm.items()
    )
    return (
        f"warm, in order, {size_label(p['block_size'])} blocks, {p['size'] / 2**20:,.0f} MiB "
        f"file, medians of {first.rounds} interleaved rounds: {speeds} GB/s; memory copy "
        f"{first.reference.rate.median / 1e9:.3g}; memmap sum / read "
        f"{in_place.text('sum faster', 'read faster')}; sweep, warm mmap slice / read by "
        f"block size: {ratios}"
    )


def _verdict(first: BenchResult, groups: dict, in_place: Pooled, disagree: list[str]) -> str:
    word = {1: "faster than", -1: "slower than", 0: "not clearly different from"}[in_place.side()]
    won = [
        f"mmap slice ahead of read() at {', '.join(groups[1])}" if groups[1] else "",
        f"read() ahead at {', '.join(groups[-1])}" if groups[-1] else "",
        f"no clear difference (or the two races disagree) at {', '.join(groups[0])}"
        if groups[0]
        else "",
    ]
    text = (
        f"only in-place access avoids the copy: the memmap sum was {word} read() here; "
        f"slicing an mmap copies as read() does, and warm, in order: "
        + "; ".join(w for w in won if w)
    )
    if first.quick:
        # a small file that may sit in the CPU's cache: warm verdicts can reverse at full size
        split = f"; sections 2 and 3 disagree on {', '.join(disagree)}" if disagree else ""
        text += f" (quick mode, provisional{split}: a full-size run decides)"
    return text


def try_races(path: Path, copy_bytes: int, rounds: int) -> Callable[..., None]:
    """Show section 6's widget; returns ``race(block_kib, pattern, cache, madvise, rounds)``,
    which prints one race's table and summary and draws it (exercise 4.2 calls it)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from mmlab.instruments.bench import read_vs_mmap

    def race(block_kib=64, pattern="sequential", cache="warm", madvise=None, rounds=rounds):
        advice = None if madvise == "none" else madvise  # the dropdown's word for no advice
        r = read_vs_mmap(
            path, pattern, block_kib * 1024, cache, rounds, advice, copy_bytes=copy_bytes
        )
        print(r.title, r.table(), r.summary(), race_lines(r, again=False), sep="\n")
        r.plot()
        plt.show()

    widgets.interact_manual(
        race,
        block_kib=widgets.Dropdown(options=[4, 16, 64, 256, 1024, 4096], value=64),
        pattern=widgets.Dropdown(options=["sequential", "random"]),
        cache=widgets.Dropdown(options=["warm", "cold"]),
        madvise=widgets.Dropdown(options=["none", "random", "sequential", "willneed", "populate"]),
        rounds=widgets.IntSlider(value=rounds, min=1, max=9),
    )
    return race
