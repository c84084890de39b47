"""Why notebook 04's sweep came out as it did, each reason computed from its own numbers.

``sweep_explained(table, read_ahead_kb, first=...)`` reads the sweep of races
(``bench.read_vs_mmap``, one ``BenchResult`` per (pattern, cache, block size)) and prints:
where ``read`` and ``mmap slice`` each won (a case raced twice judged on both races); what
one block costs beyond its bytes, warm; where the time of the largest warm blocks went, user
space or kernel (``getrusage``), since that is where each method's copy runs; whether the
file fits in the CPU's last-level cache and whether huge pages back the reference's arrays;
how many pages one minor fault mapped (fault-around, large folios); what the per-block cost
adds up to on a cold in-order pass; and, cold and random, how much each major fault brought
in against the disk's ``read_ahead_kb``.
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping

from mmlab.instruments.spread import MARGIN, _side_spec
from mmlab.instruments.stats import BenchResult
from mmlab.instruments.sweep import (
    REFERENCE,
    _label,
    l3_bytes,
    ratio_of,
    size_label,
)

__all__ = ["cache_fit", "sweep_explained"]

# Below this much CPU time in all rounds, getrusage's user/kernel split is a few timer ticks.
MIN_SPLIT_S = 0.05


def sweep_explained(
    results: Mapping[tuple[str, str, int], BenchResult],
    read_ahead_kb: int | None = None,
    first: BenchResult | None = None,
) -> str:
    """Why the sweep came out as it did, each reason computed from its own numbers.

    Where ``read`` and ``mmap slice`` each won (the case ``first``, section 2's race, also
    ran is judged on both races); what one block costs beyond its bytes (from the smallest
    and largest blocks, warm); where the largest warm blocks spent their time; the CPU cache
    and huge pages; how many pages one minor fault mapped (large folios); and, cold and
    random, how much each major fault brought in from storage against the device's
    ``read_ahead_kb`` (``mmlab.machine.report(path).read_ahead_kb``).
    """
    sections = [_winners(results, first), _per_block(results), _cpu_split(results, first)]
    sections += [_caches(results), _cold_sequential(results, first), _per_fault(results)]
    sections.append(_read_around(results, read_ahead_kb))
    return "\n\n".join(s for s in sections if s)


def _winners(results, first) -> str:
    sides: dict[str, list[str]] = {"mmap slice": [], "read": [], "neither": []}
    for key, r in results.items():
        if {"read", "mmap slice"} <= set(r.names):
            ratio = ratio_of(results, key, "mmap slice", "read", first)
            side = {1: "mmap slice", -1: "read", 0: "neither"}[ratio.side()]
            median = ratio.pooled.median
            note = "; with section 2's race" if ratio.before is not None else ""
            note += ", which disagrees" if ratio.disagree else ""
            shown = f"{median:{_side_spec('.2f', [median], 1.0)}}x"
            sides[side].append(f"{_label(key)} ({shown}{note})")
    if not any(sides.values()):
        return ""
    shown = {k: ", ".join(v) if v else "nowhere in this sweep" for k, v in sides.items()}
    text = (
        f"mmap slice against read, round by round (every round on one side of 1 and the median "
        f"at least {MARGIN:.0%} from it; a case raced twice, on both races' rounds):\n"
        f"  mmap slice faster: {shown['mmap slice']}\n"
        f"  read faster: {shown['read']}\n"
        f"  no clear difference, or this run cannot tell: {shown['neither']}"
    )
    if any(r.quick for r in results.values()):
        text += "\n  (quick mode: the warm verdicts are provisional, as the summary above says)"
    return text


def _cpu_split(results, first) -> str:
    """Warm, largest blocks in order: wall time against user and kernel CPU time per call."""
    keys = sorted(k for k in results if k[:2] == ("sequential", "warm"))
    if not keys:
        return ""
    key = keys[-1]
    r = results[key]
    rows = [row for row in r if row.user_s is not None and row.system_s is not None]
    if not rows:
        return ""
    lines = [
        f"Where the time went, {_label(key)} (CPU time per call, summed over the rounds: "
        "getrusage splits it between user space and the kernel by sampling at the timer "
        "tick, so the split is approximate, and meaningless for short calls):"
    ]
    for row in rows:
        cpu = sum(row.user_s.samples) + sum(row.system_s.samples)
        split = (
            f"{sum(row.user_s.samples) / cpu:.0%} user, {sum(row.system_s.samples) / cpu:.0%} "
            "kernel"
            if cpu >= MIN_SPLIT_S
            else f"too short to split (under {MIN_SPLIT_S * 1e3:.0f} ms of CPU in all rounds)"
        )
        lines.append(f"  {row.name}: {_ms(row.seconds.median)} a call; CPU time {split}")
    if {"read", "mmap slice"} <= set(r.names):
        read = r["read"]
        ratio = ratio_of(results, key, "mmap slice", "read", first)
        cost = _block_costs(results).get("sequential", {}).get("read")
        blocks = _nblocks(r, key[2])
        lines.append(
            "  read's copy is the kernel's copy_to_user, so its time counts as kernel time; "
            "mmap slice's is the C library's memcpy, so it counts as user time (its page "
            "faults count as kernel time)"
        )
        if cost is not None:
            lines.append(
                f"  read's cost per block beyond its bytes, {_us(cost)} x {blocks:,} blocks = "
                f"{_ms(max(cost, 0) * blocks)}, {max(cost, 0) * blocks / read.seconds.median:.1%}"
                " of its call: with blocks this large, system calls do not decide the race"
            )
        verdict = ratio.text("mmap faster", "read faster")
        if ratio.side():
            why = (
                "one copy routine ran faster than the other here; what makes it faster (the "
                "instructions each routine copies with, the mapping's 2 MiB page-table entries "
                "against the kernel's own map of memory) this notebook does not measure, and "
                "a rerun can move this ratio by more than its spread"
            )
        else:
            why = "this run cannot tell which copy is faster: any difference is within noise"
        lines.append(f"  mmap slice / read: {verdict}: {why}")
    return "\n".join(lines)


def cache_fit(file_bytes: int, copy_huge: float | None = None) -> str:
    """Whether a file of ``file_bytes`` fits in this CPU's last-level cache, and (when
    known) how much of the memory copy's arrays transparent huge pages back."""
    l3 = l3_bytes()
    size = f"{file_bytes / 2**20:,.0f} MiB"
    if l3 is None:
        text = f"the file is {size}; this CPU's cache size is unknown (no /sys cache entry)"
    else:
        fits = "fits in" if file_bytes <= l3 else "is larger than"
        text = (
            f"the file is {size} and {fits} the {l3 / 2**20:,.0f} MiB last-level (L3) cache "
            "this CPU reports (in a virtual machine: the host's, shared with other guests)"
        )
    if copy_huge is not None:
        text += f"; transparent huge pages back {copy_huge:.0%} of the memory copy's arrays" + (
            ", so the copy does not pay a TLB miss per 4 KiB page"
            if copy_huge > 0.5
            else ", so the copy walks 4 KiB pages"
        )
    return text


def _caches(results) -> str:
    """The CPU cache and huge pages, which decide how fast warm copies and sums run."""
    warm = sorted(
        (k for k in results if k[1] == "warm"), key=lambda k: (k[0] != "sequential", -k[2])
    )
    if not warm:
        return ""
    key = warm[0]  # in order, the largest blocks: the case of section 2
    r = results[key]
    lines = [f"Caches: {cache_fit(r.params['size'], r.params.get('copy_huge'))}"]
    if "numpy.memmap sum" in r.names:
        ratio = r["numpy.memmap sum"].of_reference
        side = ratio.side(1.0, **r.rule)
        why = {
            1: "so beating the copy means less traffic, not faster memory",
            -1: "yet it was slower than the copy here (its numpy work per block costs too)",
            0: "but these rounds cannot tell whether it beat the copy (section 2's race, on "
            "rounds of its own, may)",
        }[side]
        lines.append(
            f"  numpy.memmap sum, {_label(key)}: {ratio.text('.2f', 'x', than=1.0)} the speed "
            f"of {REFERENCE}: {ratio.verdict(above='faster', below='slower', **r.rule)}; the "
            f"sum reads each byte once where the copy reads and writes it, {why}"
        )
    return "\n".join(lines)


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
        if here[top] <= 0:
            text.append(f"  warm {pattern}: no method's cost per block rose above this run's noise")
            continue
        than = (
            f"{here[top] / here[low]:.1f}x {low}'s {_us(here[low])}"
            if here[low] > 0
            else f"while {low}'s came out at {_us(here[low])}: below this run's noise"
        )
        text.append(f"  warm {pattern}: {top} pays the most per block, {_us(here[top])}, {than}")
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


def _cold_sequential(results, first=None) -> str:
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
            pooled = ratio_of(results, key, "mmap slice", "read", first)
            share = max(costs["read"], 0) * blocks / r["read"].seconds.median
            side = pooled.side()
            if share < 0.1 and side:
                why = (
                    "read's per-block cost is under 10% of its call, so it does not explain "
                    "this: the two paths issued their reads to storage differently here "
                    "(readahead windows), which this sweep does not measure"
                )
            elif share < 0.1:
                why = "storage set the pace: read's per-block cost is under 10% of its call"
            elif side > 0:
                why = (
                    f"read's per-block cost, {share:.0%} of its call, was not hidden behind the I/O"
                )
            elif side < 0:
                why = f"read finished ahead although its per-block cost is {share:.0%} of its call"
            else:
                why = (
                    f"this run cannot tell whether read's per-block cost, {share:.0%} of its "
                    "call, was hidden behind the I/O"
                )
            verdict = pooled.text("mmap faster", "read faster")
            lines.append(f"    mmap slice / read {verdict}; {why}")
    mapped = [
        (key, results[key]["mmap slice"])
        for key in keys
        if "mmap slice" in results[key].names and results[key]["mmap slice"].major_faults
    ]
    if mapped:
        key, row = mapped[-1]
        head = (
            f"  mmap slice, {size_label(key[2])} blocks: {row.major_faults:,} major fault(s) "
            f"for {results[key].params['size'] / 2**20:,.0f} MiB"
        )
        if row.major_faults <= 2:
            lines.append(
                f"{head}: after the first, readahead kept ahead of the touches, so the later "
                "faults counted as minor, though some may have waited for readahead I/O still "
                "in flight (whether such a wait counts as minor depends on the kernel version: "
                "notebook 03 section 5 measures it)"
            )
        else:
            lines.append(
                f"{head}: readahead did not keep ahead of every touch here, and each major "
                "fault waited for a read of its own"
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
            "folios (large folios), and a fault maps a whole 2 MiB folio at once with one "
            "page-table entry a level up (a PMD entry, as for a huge page); a smaller large "
            "folio is not mapped whole: a fault maps fault-around's window of it (16 pages "
            "by default, fault_around_bytes)"
        )
    elif most > 16 * 1.5:
        why = (
            "more than the 16 pages fault-around maps by default (fault_around_bytes, 64 "
            "KiB): part of the file sat in 2 MiB folios, each mapped whole by one fault "
            "(a PMD entry)"
        )
    elif most > 1.5:
        why = (
            "up to fault-around's window (16 pages by default): this time the page cache "
            "held the file in folios no larger than that (how pages were read in decides: "
            "readahead of a sequential read builds large folios, pages read one by one come "
            "in small ones)"
        )
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
