"""Notebook 04's reveals: each prediction's answer and its "why", from this run's races.

A reveal tells the student what happened and why, from this run's numbers, in words that
stay true on a large-readahead server and on a laptop. ``fastest`` and ``why_fastest``
(section 2: where the rounds do not separate the fastest method from others, a prediction of
any of them counts as right), ``read_block_gain`` and ``why_block_gain`` (how much larger
blocks speed ``read()`` up, warm, with per-block costs below the run's noise called so),
``cold_random_winner`` and ``why_cold_random`` (4 KiB blocks in random order from a cold
cache, against the disk's ``read_ahead_kb``, and what a laptop's 128 KiB changes), and
``cache_fit`` (whether the warm races' working set can sit in the CPU's last-level cache, and
that a virtual machine cannot tell); ``sweep_explained`` prints section 4's reasons with that
cache statement and with pages per fault called the averages they are. Each "why" says
when the rounds give no verdict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from mmlab.instruments.stats import BenchResult
from mmlab.instruments.sweep import l3_bytes, size_label

__all__ = [
    "cache_fit",
    "cold_random_winner",
    "fastest",
    "read_block_gain",
    "sweep_explained",
    "why_block_gain",
    "why_cold_random",
    "why_fastest",
]

SLICE, READ, SUM = "mmap slice", "read", "numpy.memmap sum"

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


def cache_fit(file_bytes: int, copy_bytes: int, report) -> str:
    """Whether the warm races' working set (the file, and the memory copy's source and
    destination) can sit in this CPU's last-level cache, and what this machine lets us say."""
    l3 = l3_bytes()
    total = file_bytes + 2 * copy_bytes
    touched = (
        f"a warm race touches the file ({file_bytes / 2**20:,.0f} MiB) and the memory copy's "
        f"source and destination (2 x {copy_bytes / 2**20:,.0f} MiB): {total / 2**20:,.0f} MiB"
    )
    if l3 is None:
        return f"{touched}; this CPU's cache size is unknown (no /sys cache entry)"
    reported = f"the {l3 / 2**20:,.0f} MiB last-level (L3) cache this CPU reports"
    if getattr(report, "hypervisor", None) is not None and report.hypervisor.value is True:
        return (
            f"{touched}, against {reported}; this is a virtual machine, so that is the host's "
            "cache, shared with other guests: how much of it this guest gets is unknown, so "
            "this notebook cannot say whether anything stays cached. Only a speed well above "
            "the memory copy's would show it"
        )
    if total > l3:
        return (
            f"{touched}, more than {reported}: warm races stream from main memory, not from "
            "the CPU's cache"
        )
    return (
        f"{touched}, within {reported}: warm races may read from that cache (a cache shared "
        "by every core keeps only part of it for this process); a speed well above the "
        "memory copy's would show it"
    )


def _tied_with_best(result: BenchResult) -> list[str]:
    """The fastest method and the ones right below it in the ranking that its rounds do not
    separate from it (down to the first one they do: a lower-ranked method with a wider
    spread is not called a tie once a faster one was clearly behind)."""
    ranked = result.ranked()
    tied = [ranked[0].name]
    for row in ranked[1:]:
        if result.relative(tied[0], row.name).side(1.0, **result.rule) != 0:
            break
        tied.append(row.name)
    return tied


def fastest(result: BenchResult, predicted: str | None = None) -> str:
    """The method with the highest median speed in ``result``. Where the rounds do not
    separate it from others, a ``predicted`` one of those is as right, so it is returned;
    any other prediction gets the tied names ("pread or read")."""
    tied = _tied_with_best(result)
    if len(tied) == 1:
        return tied[0]
    if predicted is not None and str(predicted).strip().lower() in tied:
        return str(predicted).strip().lower()
    return " or ".join(tied)


def why_fastest(result: BenchResult) -> str:
    """Why ``fastest(result)`` came first, whether its rounds separate it from the others,
    and why the slowest came last."""
    ranked = result.ranked()
    best, second, before, last = ranked[0], ranked[1], ranked[-2], ranked[-1]
    block = result.params["block_size"]
    blocks = math.ceil(result.params["size"] / block)
    tied = _tied_with_best(result)
    text = (
        f"{best.name} had the highest median speed, {best.gb_s:.2f} GB/s, "
        f"{result.lead(best.name, second.name)}"
    )
    if len(tied) > 1:
        text += (
            f": the rounds do not separate {' and '.join(tied)} in this run, so any of them "
            "was as good an answer, and a rerun may swap them"
        )
    text += (
        f". Per block, {best.name} does {_PER_BLOCK.get(best.name, 'its own work')}. With "
        f"{size_label(block)} blocks there are only {blocks:,} blocks in "
        f"{result.params['size'] / 2**20:,.0f} MiB, so per-block costs are small and the race "
        "is mostly moving bytes: every method but the memmap sum copies each byte once out "
        "of the page cache, and the memmap sum reads each byte once and writes none. "
        f"Slowest here (lowest median): {last.name}, {last.gb_s:.2f} GB/s, "
        f"{result.lead(last.name, before.name)}: {_why_last(result, last.name)}."
    )
    if result.quick:
        text += " Quick mode: a small file that may sit in the CPU's cache, few rounds."
    return text


def _why_last(result: BenchResult, name: str) -> str:
    """Why ``name`` came last when per-block costs are small: its copy, not its calls."""
    if name == SLICE:
        faults = result[SLICE].minor_faults
        faults_text = "" if faults is None else f" and took {faults:,} minor faults per call"
        behind = READ in result.names and result.relative(SLICE, READ).side(**result.rule) < 0
        outcome = (
            "here the kernel's copy ran faster in every round (why one copy routine beats "
            "another on this CPU, this notebook does not measure)"
            if behind
            else "here the rounds do not separate the two copies clearly"
        )
        return (
            "per-block costs barely count at this size, so the race was one copy routine "
            "against another: the slice copies in user space with the C library's memcpy"
            f"{faults_text} to map the file, read() in the kernel with copy_to_user, and " + outcome
        )
    if name == SUM:
        return (
            "it copies nothing, but adding up every byte, block by block from Python, cost "
            "more here than the other methods' copies"
        )
    return (
        "per-block costs barely count at this size, so its place comes from how fast its "
        "copy ran on this CPU (into a new bytes object for read and pread, into one buffer "
        "used again for readinto), which this notebook does not measure apart"
    )


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

    def noise(name: str) -> float:  # the same difference taken across the two IQRs' widths
        widths = sum(r[name].seconds.q3 - r[name].seconds.q1 for r in (small, large))
        return widths / (n_small - n_large)

    read_cost = cost(READ)
    speeds = (
        f"{small[READ].rate.scaled(1e-9).text('.2f', ' GB/s')} with {size_label(bs)} blocks, "
        f"{large[READ].rate.scaled(1e-9).text('.2f', ' GB/s')} with {size_label(bl)}"
    )
    if read_cost <= noise(READ):
        return (
            f"read(): {speeds}; its cost per block did not rise above this run's noise (the "
            "two passes' interquartile ranges), so these block sizes do not show it (the two "
            "sizes ran in separate races: a ratio of medians, with no per-round spread). "
            "Section 4's costs per block are the same differences of medians, just as "
            "uncertain in this run"
        )
    share = read_cost * n_small / small[READ].seconds.median
    large_share = read_cost * n_large / large[READ].seconds.median
    text = (
        f"read(): {speeds}. Per block, a {size_label(bs)} pass took about "
        f"{read_cost * 1e6:.2g} µs longer than its bytes took in {size_label(bl)} blocks (two "
        f"system calls, lseek and read, and a new bytes object; a lower bound, since a small "
        f"block's copy also runs faster, in the CPU's cache): x {n_small:,} blocks that is "
        f"{share:.0%} of the {size_label(bs)} pass; x {n_large:,} blocks of {size_label(bl)}, "
        f"{large_share:.1%} of that pass"
    )
    if SLICE in small.names:
        slice_cost = cost(SLICE)
        won = small.relative(SLICE, READ).side(1.0, **small.rule) > 0
        text += (
            f"; mmap slice's difference per block was about {slice_cost * 1e6:.2g} µs (no "
            "system call)"
            if slice_cost > noise(SLICE)
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
    read, mapped = race[READ], race[SLICE]
    if report.eviction_works.value is not True and not read.storage_bytes:
        known = "does not work" if report.eviction_works.value is False else "was not confirmed"
        return head + (
            f"Eviction {known} here and read() fetched nothing from storage, so this 'cold' "
            "race read from the page cache and says nothing about storage"
        )
    if None in (read.storage_bytes, mapped.storage_bytes, mapped.major_faults):
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
    return text + (
        f". With read_ahead_kb 128, common on laptops, a window holds {laptop:,} blocks, a "
        "large file needs many windows, and early random faults mostly miss: after about a "
        "hundred misses (mmap_miss) the kernel stops reading around for the file, each fault "
        "then reads one page, and mmap can lose its lead there."
    )


def sweep_explained(
    table: Mapping, report, copy_bytes: int, first: BenchResult | None = None
) -> str:
    """``mmlab.bench.sweep_explained`` for notebook 04, worded as this notebook's text: its
    cache line is ``cache_fit``'s (the file and the copy's two arrays; a virtual machine
    cannot tell), and its pages per minor fault are called averages (one fault of a 2 MiB
    folio maps 512 pages of 4 KiB, one of fault-around's window 16; a case's average lies
    between). A line whose wording has changed is left as it is."""
    from mmlab.instruments.reasons import sweep_explained as explained

    ra = report.read_ahead_kb
    text = explained(table, ra.value if ra.known else None, first=first)
    size = max((r.params["size"] for r in table.values()), default=0)
    fit = cache_fit(size, copy_bytes, report)
    text = re.sub(
        r"^Caches: the file is .*?(?=; transparent huge pages|$)",
        lambda _: f"Caches: {fit}",
        text,
        count=1,
        flags=re.M,
    )
    return re.sub(
        r"^  at most ([\d,]+) pages per fault here:",
        r"  \1 pages per fault on average, in the case that mapped the most (single faults "
        r"map more or fewer):",
        text,
        count=1,
        flags=re.M,
    )
