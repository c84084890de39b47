"""Reading a sweep of races: which method won where, and why, computed from the rounds.

Notebook 04 races the ways of reading a file over block sizes, orders and cache states
(``bench.read_vs_mmap``, one ``BenchResult`` per case). This module turns that table into
what a student reads: a figure of every case (``plot_sweep``; ``plot_sweeps`` draws them
all), each case's winner by its rounds, never by medians alone (``sweep_summary``), and the
machine facts behind the results (``sweep_explained``): what each block costs beyond its
bytes, how many pages one fault maps, and how much one read-around window brings in on this
machine's readahead.
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mmlab.instruments.stats import CLOSE, FEW_ROUNDS, QUICK_NOTE, BenchResult, _side_spec

__all__ = [
    "REFERENCE",
    "plot_sweep",
    "plot_sweeps",
    "size_label",
    "sweep_explained",
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
        label = f"{REFERENCE}, IQR of each race's rounds" if k == kib[0] else None
        ax.fill_between([k / 1.6, k * 1.6], ref.q1, ref.q3, color="0.5", alpha=0.35, label=label)
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


def sweep_summary(results: Mapping[tuple[str, str, int], BenchResult]) -> str:
    """One line per (pattern, cache, block size): who won, by how much, and what it cost.

    Every comparison is per round (medians of ratios, [IQR]), with whether it is clear; the
    fastest is the highest median, and its lead is worded so the two never contradict.
    """
    lines = []
    for (pattern, cache, block), r in results.items():
        ranked = r.ranked()
        best = ranked[0]
        line = (
            f"{cache} {pattern} {size_label(block)}: fastest (highest median) {best.name}, "
            f"{best.rate.scaled(1e-9).text('.2f', ' GB/s')}"
        )
        if len(ranked) > 1:
            line += f"; {r.lead(best.name, ranked[1].name)}"
        copy = best.of_reference.verdict(above="faster", below="slower")
        ratio = best.of_reference.text(".2f", "x", than=1.0)
        lines.append(f"{line}; {ratio} the speed of {REFERENCE}: {copy}")
        if {"read", "mmap slice"} <= set(r.names):
            ratio = r.relative("mmap slice", "read")
            verdict = ratio.verdict(above="mmap faster", below="read faster")
            lines.append(f"    mmap slice / read: {ratio.text('.2f', 'x', than=1.0)}: {verdict}")
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
            "the large effects (small blocks, the memmap sum's cost per block, cold random "
            "blocks) are the ones to read in quick mode"
        )
        lines += _quick_warm_caveat(results)
    return "\n".join(lines)


def _l3_bytes() -> int | None:
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
    l3 = _l3_bytes()
    if l3 is None:
        where = "this CPU's cache size is unknown, so the file may sit in it"
    elif size <= l3:
        where = f"it fits in this CPU's {l3 / 2**20:,.0f} MiB L3 cache"
    else:
        where = f"it is larger than this CPU's {l3 / 2**20:,.0f} MiB L3 cache"
    verdicts = []
    for key, r in warm:
        ratio = r.relative("mmap slice", "read")
        verdict = ratio.verdict(above="mmap faster", below="read faster").split(" (")[0]
        verdicts.append(f"{_label(key)} {ratio.median:.2f}x ({verdict})")
    return [
        f"quick mode, warm races: the file is {size / 2**20:,.0f} MiB and {where}; warm, "
        "each method copies out of the page cache, so how fast copies run with the data in "
        "the CPU's cache decides these races (the large-block ones most), and a full-size "
        "run (a larger file and copy, more rounds) may reverse any warm mmap slice / read "
        f"verdict here: {', '.join(verdicts)}"
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


def sweep_explained(
    results: Mapping[tuple[str, str, int], BenchResult], read_ahead_kb: int | None = None
) -> str:
    """Why the sweep came out as it did, each reason computed from its own numbers.

    Where ``read`` and ``mmap slice`` each won; what one block costs beyond its bytes (from
    the smallest and largest blocks, warm); how many pages one minor fault mapped (large
    folios); and, cold and random, how much each major fault brought in from storage
    against the device's ``read_ahead_kb`` (``mmlab.machine.report(path).read_ahead_kb``).
    """
    sections = [_winners(results), _per_block(results), _cold_sequential(results)]
    sections.append(_per_fault(results))
    sections.append(_read_around(results, read_ahead_kb))
    return "\n\n".join(s for s in sections if s)


def _label(key: tuple[str, str, int]) -> str:
    pattern, cache, block = key
    return f"{cache} {pattern} {size_label(block)}"


def _winners(results) -> str:
    sides: dict[str, list[str]] = {"mmap slice": [], "read": [], "neither": []}
    for key, r in results.items():
        if {"read", "mmap slice"} <= set(r.names):
            ratio = r.relative("mmap slice", "read")
            side = {1: "mmap slice", -1: "read", 0: "neither"}[ratio.side(1.0)]
            spec = _side_spec(".2f", [ratio.median], 1.0)
            sides[side].append(f"{_label(key)} ({ratio.median:{spec}}x)")
    if not any(sides.values()):
        return ""
    shown = {k: ", ".join(v) if v else "nowhere in this sweep" for k, v in sides.items()}
    text = (
        "mmap slice against read, round by round (whole IQR of mmap/read on one side of 1; "
        f"with fewer than {FEW_ROUNDS} rounds, every round):\n"
        f"  mmap slice faster: {shown['mmap slice']}\n"
        f"  read faster: {shown['read']}\n"
        f"  no clear difference: {shown['neither']}"
    )
    return "\n".join([text, *_quick_warm_caveat(results)])


def _block_costs(results) -> dict[str, dict[str, float]]:
    """Warm, per pattern: (time with small blocks - time with large) / extra blocks, per method."""
    costs = {}
    for pattern, cache in dict.fromkeys((p, c) for p, c, _ in results):
        sizes = sorted(b for p, c, b in results if (p, c) == (pattern, cache))
        if cache != "warm" or len(sizes) < 2:
            continue
        small, large = results[pattern, cache, sizes[0]], results[pattern, cache, sizes[-1]]
        extra = _nblocks(small, sizes[0]) - _nblocks(large, sizes[-1])
        costs[pattern] = {
            row.name: (row.seconds.median - large[row.name].seconds.median) / extra for row in small
        }
    return costs


def _per_block(results) -> str:
    """Warm: what one block costs beyond its bytes, per method and pattern."""
    lines, costs = [], _block_costs(results)
    for pattern, here in costs.items():
        shown = ", ".join(f"{name} {_us(c)}" for name, c in here.items())
        lines.append(f"  warm {pattern}: {shown}")
    if not lines:
        return ""
    text = [
        "What one block costs beyond its bytes, warm: (time with the smallest blocks - time "
        "with the largest) / the extra blocks, medians:",
        *lines,
    ]
    for pattern, here in costs.items():
        top = max(here, key=here.get)
        low = min(here, key=here.get)
        text.append(
            f"  warm {pattern}: {top} pays the most per block, {_us(here[top])}, "
            f"{here[top] / max(here[low], 1e-12):.1f}x {low}'s {_us(here[low])}"
        )
    text.append(
        "  per block, read and readinto make two system calls (lseek, then read) and a copy; "
        "pread one system call (the offset is in the call) and a copy; mmap slice no system "
        "call, one copy"
    )
    if any(max(here, key=here.get) == "numpy.memmap sum" for here in costs.values()):
        text.append(
            "  numpy.memmap sum: each block is numpy work done in Python: slicing a "
            "numpy.memmap builds a new memmap object, then two numpy sums (one over the "
            "block's whole 8-byte words, one over the leftover tail bytes) each pay numpy's "
            "call overhead"
        )
    return "\n".join(text)


def _cold_sequential(results) -> str:
    """Cold, in order: each method's warm per-block cost x blocks, against its call time."""
    costs = _block_costs(results).get("sequential")
    keys = sorted(k for k in results if k[:2] == ("sequential", "cold"))
    if not costs or not keys:
        return ""
    lines = [
        "Cold, in order: what the per-block cost (warm sequential, above) adds up to per call, "
        "against the call's median time:"
    ]
    for key in keys:
        r = results[key]
        blocks = _nblocks(r, key[2])
        parts = [
            f"{row.name}'s {_us(costs[row.name])} x {blocks:,} blocks = "
            f"{_ms(costs[row.name] * blocks)} of a {_ms(row.seconds.median)} call "
            f"({max(costs[row.name], 0) * blocks / row.seconds.median:.0%})"
            for row in r
            if row.name in costs and row.name != "numpy.memmap sum"
        ]
        lines.append(f"  {size_label(key[2])} blocks: " + "; ".join(parts))
        if {"read", "mmap slice"} <= set(r.names):
            ratio = r.relative("mmap slice", "read")
            verdict = ratio.verdict(above="mmap faster", below="read faster")
            share = max(costs["read"], 0) * blocks / r["read"].seconds.median
            side = ratio.side(1.0)
            if share < 0.1:
                why = "storage set the pace: read's per-block cost is under 10% of its call"
            elif side > 0:
                why = (
                    f"read's per-block cost, {share:.0%} of its call, was not hidden behind the I/O"
                )
            elif side < 0:
                why = f"read finished ahead although its per-block cost is {share:.0%} of its call"
            else:
                why = (
                    f"read's per-block cost, {share:.0%} of its call, overlapped the I/O here: "
                    "storage set the pace"
                )
            lines.append(
                f"    mmap slice / read {ratio.text('.2f', 'x', than=1.0)}: {verdict}; {why}"
            )
    return "\n".join(lines)


def _per_fault(results) -> str:
    """Warm, mapped methods: the file's pages over the minor faults that mapped them."""
    lines, per_fault = [], []
    for key, r in results.items():
        if key[1] != "warm":
            continue
        pages = r.params["size"] / mmap.PAGESIZE
        shown = []
        for name in ("mmap slice", "numpy.memmap sum", "np.frombuffer(mmap) sum"):
            if name in r.names and r[name].minor_faults:
                per = pages / r[name].minor_faults
                per_fault.append(per)
                shown.append(f"{name} {r[name].minor_faults:,} faults, {per:,.0f} pages each")
        if shown:
            lines.append(f"  {_label(key)}: " + "; ".join(shown))
    if not lines:
        return ""
    most, least = max(per_fault), min(per_fault)
    huge = 2**21 // mmap.PAGESIZE  # pages in a 2 MiB folio, the most one fault can map
    if most >= huge * 0.9:
        why = (
            f"up to {huge} pages (2 MiB) per fault: the page cache holds this file in 2 MiB "
            "folios (large folios), and a fault maps a whole one at once"
        )
    elif most > 16 * 1.5:
        why = (
            "more than the 16 pages fault-around maps by default (fault_around_bytes, 64 "
            "KiB): the page cache holds this file in large folios, mapped a folio at a time"
        )
    elif most > 1.5:
        why = "up to fault-around's window (16 pages by default): no large folios seen"
    else:
        why = "one page per fault: neither fault-around nor large folios helped here"
    if most > 1.5 and least < most * 0.9:
        why += (
            f"; where a fault mapped fewer on average (down to {least:,.0f} here), part of "
            "the file sat in smaller folios"
        )
    head = "Pages mapped per minor fault, warm (file pages / minor faults per call):"
    lines = [head, *lines, f"  at most {most:,.0f} pages per fault here: {why}"]
    if any(r.quick for r in results.values()) and most < huge * 0.9:
        lines.append(
            "  quick mode: the page cache may hold a small file in smaller folios than a large "
            "one, so a full-size run can map more pages per fault than this"
        )
    return "\n".join(lines)


def _read_around(results, read_ahead_kb: int | None) -> str:
    """Cold, random: MiB from storage per major fault of a mapping, against read()."""
    keys = sorted(k for k in results if k[:2] == ("random", "cold"))
    if not keys:
        return ""
    ra = "unknown" if read_ahead_kb is None else f"{read_ahead_kb:,} KiB"
    lines = [f"Cold, random: read_ahead_kb of this file's disk: {ra}"]
    for key in keys:
        r = results[key]
        size = r.params["size"]
        parts = []
        for name in ("mmap slice", "numpy.memmap sum"):
            row = r[name] if name in r.names else None
            if row and row.major_faults and row.storage_bytes is not None:
                parts.append(
                    f"{name} {row.major_faults:,} major faults, "
                    f"{row.storage_bytes / 2**20:,.0f} MiB, "
                    f"{row.storage_bytes / row.major_faults / 2**20:,.2f} MiB per major fault"
                )
        if "read" in r.names and r["read"].storage_bytes is not None:
            read = r["read"]
            parts.append(
                f"read {_nblocks(r, key[2]):,} calls, {read.storage_bytes / 2**20:,.0f} MiB "
                f"({read.storage_bytes / size:.0%} of the file)"
            )
        lines.append(f"  {size_label(key[2])} blocks: " + "; ".join(parts))
        row = r["mmap slice"] if "mmap slice" in r.names else None
        known = read_ahead_kb and row and row.major_faults and row.storage_bytes is not None
        if known and row.storage_bytes / row.major_faults < read_ahead_kb * 1024:
            lines.append(
                f"    less than one {read_ahead_kb:,} KiB window per major fault here, "
                "because later windows overlap pages an earlier window already cached"
            )
        if {"read", "mmap slice"} <= set(r.names):
            lines.append(f"    mmap slice {r.lead('mmap slice', 'read')}")
    if read_ahead_kb:
        smallest = keys[0][2]
        lines.append(
            f"  one read-around window ({read_ahead_kb:,} KiB) holds "
            f"{read_ahead_kb * 1024 // smallest:,} blocks of {size_label(smallest)}; at the common "
            f"default of 128 KiB it would hold {128 * 1024 // smallest:,}, so each trip to "
            "storage would bring in fewer blocks"
        )
    lines.append(
        "  a major fault counts only the synchronous read; the asynchronous read-ahead it "
        "starts brings in more without another major fault. Every block is read once in this "
        "race, so every page read around a fault was used by a later block"
    )
    return "\n".join(lines)


def _nblocks(result: BenchResult, block: int) -> int:
    return -(-result.params["size"] // block)


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.2f} µs"


def _ms(seconds: float) -> str:
    if seconds < 1e-4:
        return _us(seconds)
    return f"{seconds * 1e3:,.0f} ms" if seconds >= 0.01 else f"{seconds * 1e3:,.2f} ms"


def _count(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f}"
