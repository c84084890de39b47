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

The notebook's predictions are revealed from this run's races: ``fastest`` and
``why_fastest`` (section 2), ``read_block_gain`` and ``why_block_gain`` (how much larger
blocks speed ``read()`` up, warm), ``cold_random_winner`` and ``why_cold_random`` (4 KiB
blocks in random order from a cold cache, against the disk's ``read_ahead_kb``). Each "why"
says when the rounds give no verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path

from mmlab.course import results
from mmlab.instruments.reasons import cache_fit
from mmlab.instruments.stats import BenchResult
from mmlab.instruments.sweep import Pooled, case_of, ratio_of, size_label

__all__ = [
    "cache_fit",
    "cold_random_winner",
    "fastest",
    "race_lines",
    "read_block_gain",
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
        r = read_vs_mmap(
            path, pattern, block_kib * 1024, cache, rounds, madvise, copy_bytes=copy_bytes
        )
        print(r.title, r.table(), r.summary(), race_lines(r, again=False), sep="\n")
        r.plot()
        plt.show()

    widgets.interact_manual(
        race,
        block_kib=widgets.Dropdown(options=[4, 16, 64, 256, 1024, 4096], value=64),
        pattern=widgets.Dropdown(options=["sequential", "random"]),
        cache=widgets.Dropdown(options=["warm", "cold"]),
        madvise=widgets.Dropdown(options=[None, "random", "sequential", "willneed", "populate"]),
        rounds=widgets.IntSlider(value=rounds, min=1, max=9),
    )
    return race


# -- the predictions' reveals ---------------------------------------------------------------

# What each method does per block, warm: the mechanism behind its place in the ranking.
_PER_BLOCK = {
    "read": "an lseek and a read() per block, which copies the block into a new bytes object",
    "readinto": "an lseek and a readinto() per block, which copies it into one buffer used "
    "again block after block (so it stays in the CPU's cache)",
    "pread": "one pread() per block (the offset is in the call), copying into a new bytes object",
    "mmap slice": "no system call per block: the slice copies from the mapping with the C "
    "library's memcpy, after a few page faults that map the file",
    "numpy.memmap sum": "no copy at all: it reads the page cache in place and adds it up, but "
    "each block is numpy work driven from Python",
}


def fastest(result: BenchResult) -> str:
    """The method with the highest median speed in ``result``."""
    return result.ranked()[0].name


def why_fastest(result: BenchResult) -> str:
    """Why ``fastest(result)`` came first, and whether its rounds separate it from the next."""
    ranked = result.ranked()
    best, second, before, last = ranked[0], ranked[1], ranked[-2], ranked[-1]
    block = result.params["block_size"]
    blocks = math.ceil(result.params["size"] / block)
    tie = result.relative(best.name, second.name).side(1.0, **result.rule) == 0
    text = (
        f"{best.name} had the highest median speed, {best.gb_s:.2f} GB/s, "
        f"{result.lead(best.name, second.name)}"
    )
    if tie:
        text += (
            f": the rounds do not separate {best.name} from {second.name} in this run, so "
            f"either answer was as good, and a rerun may swap them"
        )
    text += (
        f". Per block, {best.name} does {_PER_BLOCK.get(best.name, 'its own work')}. With "
        f"{size_label(block)} blocks there are only {blocks:,} blocks in "
        f"{result.params['size'] / 2**20:,.0f} MiB, so per-block costs are small and the race "
        "is mostly moving bytes: every method but the memmap sum copies each byte once out "
        "of the page cache, and the memmap sum reads each byte once and writes none. "
        f"Slowest here (lowest median): {last.name}, {last.gb_s:.2f} GB/s, "
        f"{result.lead(last.name, before.name)}: {_PER_BLOCK.get(last.name, '')}"
    )
    if result.quick:
        text += "; quick mode: a small file that may sit in the CPU's cache, few rounds"
    return text


def _warm_in_order(table: Mapping) -> tuple[BenchResult, BenchResult, int, int] | None:
    sizes = sorted(b for p, c, b in table if (p, c) == ("sequential", "warm"))
    if len(sizes) < 2:
        return None
    small, large = sizes[0], sizes[-1]
    return table["sequential", "warm", small], table["sequential", "warm", large], small, large


def read_block_gain(table: Mapping) -> float | None:
    """read()'s median speed with the sweep's largest warm in-order blocks over its smallest."""
    found = _warm_in_order(table)
    if found is None:
        return None
    small, large, _, _ = found
    return large[READ].rate.median / small[READ].rate.median


def why_block_gain(table: Mapping) -> str:
    """What one block costs read() beyond its bytes, warm, from the sweep's two extremes."""
    found = _warm_in_order(table)
    if found is None:
        return "the sweep has fewer than two warm in-order block sizes: nothing to compare"
    small, large, bs, bl = found
    n_small, n_large = (math.ceil(small.params["size"] / b) for b in (bs, bl))

    def cost(name: str) -> float:  # seconds per block beyond its bytes
        return (small[name].seconds.median - large[name].seconds.median) / (n_small - n_large)

    read_cost = cost(READ)
    share = max(read_cost, 0) * n_small / small[READ].seconds.median
    speeds = (
        f"{small[READ].rate.scaled(1e-9).text('.2f', ' GB/s')} with {size_label(bs)} blocks, "
        f"{large[READ].rate.scaled(1e-9).text('.2f', ' GB/s')} with {size_label(bl)}"
    )
    if read_cost <= 0:
        return (
            f"read(): {speeds}; its cost per block did not rise above this run's noise, so "
            "these block sizes do not show it (the two sizes ran in separate races: a ratio "
            "of medians, with no per-round spread)"
        )
    large_share = max(read_cost, 0) * n_large / large[READ].seconds.median
    text = (
        f"read(): {speeds}. Each block costs it {read_cost * 1e6:.2f} µs beyond its bytes "
        f"(two system calls, lseek and read, and a new bytes object): x {n_small:,} blocks "
        f"that is {share:.0%} of the {size_label(bs)} pass; x {n_large:,} blocks of "
        f"{size_label(bl)}, {large_share:.1%} of that pass"
    )
    if SLICE in small.names:
        slice_cost = cost(SLICE)
        won = small.relative(SLICE, READ).side(1.0, **small.rule) > 0
        text += (
            f"; mmap slice pays {slice_cost * 1e6:.2f} µs per block (no system call)"
            if slice_cost > 0
            else "; mmap slice's cost per block did not rise above this run's noise"
        ) + (
            f", and it clearly won with {size_label(bs)} blocks here"
            if won
            else f", yet it did not clearly win with {size_label(bs)} blocks here"
        )
    return text + (
        ". The two sizes ran in separate races, so this is a ratio of medians, with no "
        "per-round spread: a rerun moves it by about the width of the two IQRs above"
    )


def _cold_random(table: Mapping) -> BenchResult | None:
    return table.get(("random", "cold", min((b for _, _, b in table), default=0)))


def cold_random_winner(table: Mapping) -> str:
    """ "mmap slice", "read", or "no clear difference": the smallest blocks, cold, random."""
    race = _cold_random(table)
    if race is None:
        return "not raced"
    side = race.relative(SLICE, READ).side(1.0, **race.rule)
    return {1: SLICE, -1: READ, 0: "no clear difference"}[side]


def why_cold_random(table: Mapping, report) -> str:
    """Read-around against one read per block, from the race's counters and ``report``."""
    race = _cold_random(table)
    if race is None:
        return "the sweep did not race random blocks from a cold cache"
    block = race.params["block_size"]
    blocks = math.ceil(race.params["size"] / block)
    ratio = race.relative(SLICE, READ)
    said = ratio.verdict(above="mmap slice faster", below="read faster", **race.rule)
    head = f"mmap slice / read {ratio.text('.2f', 'x', than=1.0)}, {said}. "
    if report.eviction_works.value is False:
        return head + (
            "Eviction does not work here, so this 'cold' race read from the page cache and "
            "says nothing about storage"
        )
    read, mapped = race[READ], race[SLICE]
    if read.storage_bytes is None or mapped.major_faults is None:
        return head + "Bytes from storage or page faults are not counted here: no reason to give"
    ra = report.read_ahead_kb
    window = (
        f"this disk's read_ahead_kb is {ra.value:,} KiB, a window of "
        f"{ra.value * 1024 // block:,} blocks"
        if ra.known
        else f"this disk's read_ahead_kb is unknown ({ra.reason})"
    )
    text = head + (
        f"read() asked for {blocks:,} blocks of {size_label(block)} in random order: the "
        f"kernel saw no sequence and fetched {read.storage_bytes / blocks / 1024:,.1f} KiB "
        f"per call, {read.storage_bytes / 2**20:,.0f} MiB in all. A fault in the mapping reads "
        f"around the touched page instead ({window}): mmap slice took "
        f"{mapped.major_faults:,} major faults for {blocks:,} blocks and fetched "
        f"{mapped.storage_bytes / 2**20:,.0f} MiB, so most blocks found their pages already "
        "cached. That pays only because this race reads every block once: read a few random "
        "blocks of a large file and read-around fetches pages nobody uses"
    )
    if mapped.major_faults >= blocks / 2:
        text = head + (
            f"mmap slice took {mapped.major_faults:,} major faults for {blocks:,} blocks: "
            f"read-around did not help here ({window}), so each block cost a trip to storage "
            "as for read()"
        )
    laptop = 128 * 1024 // block  # the common default read_ahead_kb
    return text + f"; with read_ahead_kb 128, common on laptops, a window holds {laptop:,} blocks"
