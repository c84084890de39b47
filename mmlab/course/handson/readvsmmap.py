"""Notebook 04's hands-on checks: find read()'s crossover, and sum a file where it lies.

``crossover(find_crossover)``: warm and in order, ``mmap`` slicing beats ``read()`` with small
blocks (``read`` pays two system calls per block, the slice none); with large blocks both are
one copy out of the page cache, and the lead ends. The student writes
``find_crossover(race, block_sizes)``, which races the block sizes it chooses (``race(block)``
returns a ``read_vs_mmap`` result of ``read`` and ``mmap slice``, in interleaved rounds) and
returns the smallest block size at which ``mmap slice`` is no longer clearly faster, or None.
The check judges it on the very rounds it raced (clearly ahead: the middle half of the
rounds above 1, the median at least 5% above), beside the reference's answer from the same
races; where mmap stays ahead at every size, the answer is None: no crossover here. The
races run once per kernel (restart it to race again), so every try is judged on the same ones.

``sum_in_place(checksum)``: ``checksum(path)`` must return the sum of a file's bytes without
copying them into Python memory. The check compares its value with the sum, counts the bytes
it passed through ``read()``-like calls (``/proc/self/io``'s rchar) and the most memory Python
allocated during the call (``tracemalloc``), each beside the in-place reference measured in
the same call, and races it against ``read()`` + sum in interleaved rounds: "faster" only
when every round says so; where the rounds cannot tell, it says so and what to do.
"""

from __future__ import annotations

import mmap
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmlab.course.handson.verdict import Verdict, attempt
from mmlab.instruments.access import sample_file
from mmlab.instruments.bench import read_vs_mmap
from mmlab.instruments.compare import compare, quick_mode
from mmlab.instruments.measure import format_count, measure
from mmlab.instruments.spread import MARGIN
from mmlab.instruments.stats import BenchResult
from mmlab.instruments.sweep import size_label

__all__ = ["crossover", "crossover_found", "sum_in_place"]

DATA = Path("data")  # relative to the current directory, as in the notebooks
SLICE, READ = "mmap slice", "read"
# One page to 1,024 pages, by factors of 4: 4 KiB to 4 MiB with 4 KiB pages.
BLOCK_SIZES = tuple(mmap.PAGESIZE * 4**k for k in range(6))


def _rounds() -> int:
    # more rounds make a verdict harder to reach by luck; quick mode keeps the check within
    # seconds
    return 7 if quick_mode() else 9


def _file_bytes() -> int:
    # calls of tens of milliseconds: a shared machine's hiccups of a millisecond or two then
    # move a round's ratio by a few percent, not past the race's 5% margin
    return (64 if quick_mode() else 128) * 2**20


_RACES: dict[tuple[str, int, int], Races] = {}


class Races:
    """``race(block_size)``: one warm, in-order race of ``read`` and ``mmap slice``, raced
    once per block size and kept, so the student's answer and the reference's are judged on
    the same rounds. ``asked`` lists the block sizes the student raced."""

    def __init__(self, path: Path, rounds: int) -> None:
        self.path, self.rounds = path, rounds
        self.done: dict[int, BenchResult] = {}
        self.asked: list[int] = []

    def measure(self, block_size: int) -> BenchResult:
        if block_size not in self.done:
            self.done[block_size] = _race(self.path, block_size, self.rounds)
        return self.done[block_size]

    def __call__(self, block_size: int) -> BenchResult:
        block_size = int(block_size)
        self.asked.append(block_size)
        return self.measure(block_size)


def _races() -> Races:
    """This kernel's races over the check's file (made under data/ if missing).

    Raced once per kernel: a second try of the student's function (or the solution's) is
    judged on the same rounds, so two answers never disagree because the noise moved.
    """
    path = sample_file(DATA / "crossover.bin", _file_bytes())
    key = (str(path.resolve()), path.stat().st_size, _rounds())
    if key not in _RACES:
        _RACES[key] = Races(path, _rounds())
    return _RACES[key]


def _race(path: Path, block_size: int, rounds: int) -> BenchResult:
    """The race the check runs per block size (tests replace it with fixed rounds)."""
    size = path.stat().st_size
    # the memory copy is only the race's per-round reference: a small one keeps rounds short
    return read_vs_mmap(
        path, "sequential", block_size, "warm", rounds, methods=(READ, SLICE), copy_bytes=size // 8
    )


# Clearly ahead: the middle half of the rounds (the IQR) on one side of 1 and the median at
# least 5% from it. Not the notebook's every-round rule: on a shared machine one preempted
# round of a few milliseconds would decide the crossover; the IQR lets one or two go.
RULE = {"margin": MARGIN}


def mmap_side(result: BenchResult) -> int:
    """1 if ``mmap slice`` was clearly faster than ``read`` in ``result``, -1 if clearly
    slower, 0 if the rounds cannot tell (``RULE``)."""
    return result.relative(SLICE, READ).side(1.0, **RULE)


def reference_crossover(race: Callable[[int], BenchResult], block_sizes) -> int | None:
    """The smallest block size where ``mmap slice`` is no longer clearly ahead, or None."""
    for block in block_sizes:
        if mmap_side(race(block)) <= 0:
            return block
    return None


def _said(result: BenchResult) -> str:
    ratio = result.relative(SLICE, READ)
    verdict = ratio.verdict(above="mmap slice faster", below="read faster", **RULE)
    return f"mmap slice / read {ratio.text('.2f', 'x', than=1.0)}, {verdict}"


def _label(block: int | None) -> str:
    return "no crossover (None)" if block is None else size_label(block)


def crossover(find_crossover: Callable) -> Verdict:
    """Check ``find_crossover(race, block_sizes)`` against the reference, on the same races."""
    races = _races()
    races.asked = []
    tried = attempt(find_crossover, races, BLOCK_SIZES)
    asked = list(dict.fromkeys(races.asked))
    expected = reference_crossover(races.measure, BLOCK_SIZES)
    measured = {
        "crossover": expected,
        "answer": tried.result if tried.ok else None,
        "raced": asked,
        "mmap_over_read": {
            b: list(r.relative(SLICE, READ).samples) for b, r in sorted(races.done.items())
        },
    }
    verdict = Verdict("crossover", measured=measured)
    verdict.hint = (
        "race each block size from the smallest; mmap slice is clearly ahead when the "
        "middle half of the rounds of ratio = r.relative('mmap slice', 'read') lies above 1 "
        f"(ratio.q1 > 1) and their median at least {MARGIN:.0%} above (ratio.median >= "
        f"{1 + MARGIN}); return the first block size where it is not, or None if it stays "
        "ahead at every size"
    )
    if not tried.ok:
        verdict.off.append(f"your function raised: {tried.error}")
        return verdict
    answer = tried.result
    if answer is not None and answer not in BLOCK_SIZES:
        verdict.off.append(f"return one of block_sizes or None, not {answer!r}")
        return verdict
    _judge_crossover(verdict, races, answer, expected, asked)
    raced = sorted(races.done)
    overtaken = [size_label(b) for b in raced if mmap_side(races.done[b]) < 0]
    if verdict.passed and overtaken:
        verdict.right.append(f"read() was clearly faster than mmap slice at {', '.join(overtaken)}")
    elif verdict.passed and expected is not None:
        verdict.right.append(
            f"read() was clearly faster at none of the sizes raced ({size_label(raced[0])} to "
            f"{size_label(raced[-1])})"
        )
    return verdict


def crossover_found() -> tuple[int | str, str]:
    """This kernel's crossover, in KiB (or "no crossover"), and why, from the races
    ``crossover`` ran (raced now if it has not run): for the notebook's reveal."""
    races = _races()
    found = reference_crossover(races.measure, BLOCK_SIZES)
    for block in BLOCK_SIZES:  # the whole curve, past the crossover too, for the reveal
        races.measure(block)
    overtaken = [size_label(b) for b in BLOCK_SIZES if mmap_side(races.done[b]) < 0]
    ratios = "; ".join(
        f"{size_label(b)} {r.relative(SLICE, READ).text('.2f', 'x', than=1.0)}"
        for b, r in sorted(races.done.items())
    )
    where = (
        f"mmap slice stayed clearly ahead up to {size_label(BLOCK_SIZES[-1])}: no crossover here"
        if found is None
        else f"At {size_label(found)} the rounds first stop putting mmap slice clearly ahead"
    )
    if found is not None:
        where += (
            f"; read() was clearly faster at {', '.join(overtaken)}"
            if overtaken
            else "; read() was clearly faster at no size: it caught up, no more"
        )
    why = (
        f"mmap slice / read, warm, in order, median [IQR] of the rounds: {ratios}. {where}. "
        "mmap's lead with small blocks is read()'s two system calls per block; larger blocks "
        "make them fewer, until both methods are one copy of the same bytes per block. Where "
        "the lead ends depends on what a system call costs on this machine (more in a "
        "virtual machine or with CPU-vulnerability mitigations) against what a copy costs, "
        "and on the mapping's page faults (fewer where large folios map 2 MiB at once)"
    )
    return ("no crossover" if found is None else found // 1024), why


def _judge_crossover(verdict: Verdict, races: Races, answer, expected, asked) -> None:
    done = races.done
    if answer == expected:
        needed = [expected] if expected is not None else list(BLOCK_SIZES)
        if expected is not None and expected != BLOCK_SIZES[0]:
            needed.append(BLOCK_SIZES[BLOCK_SIZES.index(expected) - 1])
        unseen = [size_label(b) for b in needed if b not in asked]
        if unseen:
            verdict.off.append(
                f"you returned {_label(answer)} without racing {', '.join(unseen)}: an answer "
                "must come from the races"
            )
            return
    if answer == expected and expected is None:
        verdict.right.append(
            "no crossover here: mmap slice was clearly ahead at every block size up to "
            f"{size_label(BLOCK_SIZES[-1])} ({_said(done[BLOCK_SIZES[-1]])})"
        )
    elif answer == expected:
        before = [b for b in BLOCK_SIZES if b < expected]
        here = f"at {size_label(expected)}, {_said(done[expected])}"
        verdict.right.append(
            f"crossover at {size_label(expected)}: mmap slice was still clearly ahead at "
            f"{size_label(before[-1])} ({_said(done[before[-1]])}); {here}"
            if before
            else f"crossover at the smallest size, {size_label(expected)}: {here}"
        )
    elif answer is None:
        verdict.off.append(
            f"mmap slice's lead ended at {size_label(expected)}: {_said(done[expected])}"
        )
    elif expected is None or answer < expected:
        verdict.off.append(
            f"at {size_label(answer)} mmap slice was still clearly ahead: "
            f"{_said(races.measure(answer))}"
        )
    else:
        verdict.off.append(
            f"mmap slice's lead had already ended at {size_label(expected)} "
            f"({_said(done[expected])}), before your {size_label(answer)}"
        )


# -- sum_in_place --------------------------------------------------------------------------


def read_and_sum(path: Path) -> int:
    """The naive way: read() the whole file into a new bytes object, then sum it."""
    with open(path, "rb") as f:
        return int(np.frombuffer(f.read(), dtype=np.uint8).sum(dtype=np.uint64))


def sum_mapped(path: Path) -> int:
    """The reference: numpy sums the mapped page cache in place, with no copy."""
    return int(np.memmap(path, dtype=np.uint8, mode="r").sum(dtype=np.uint64))


def _peak_allocation(function: Callable, path: Path) -> int:
    """The most memory Python allocated at once during ``function(path)`` (tracemalloc)."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        attempt(function, path)
        return max(tracemalloc.get_traced_memory()[1] - start, 0)
    finally:
        if not was_tracing:
            tracemalloc.stop()


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:,.0f} KiB"


def sum_in_place(checksum: Callable) -> Verdict:
    """Check ``checksum(path)``: the right sum, no copy of the file, faster than read()+sum."""
    path = sample_file(DATA / "checksum.bin", _file_bytes())
    size = path.stat().st_size
    expected = read_and_sum(path)  # also warms the page cache: every call below reads it warm
    verdict = Verdict("sum_in_place", measured={"file_bytes": size})
    verdict.hint = (
        "map the file, np.memmap(path, dtype=np.uint8, mode='r'), and reduce the map with "
        ".sum(dtype=np.uint64): numpy reads the page cache where it lies, with no read() "
        "and no new buffer"
    )
    with measure("yours") as yours:
        start = time.perf_counter()
        tried = attempt(checksum, path)
        seconds = time.perf_counter() - start
    if not tried.ok:
        verdict.off.append(f"your function raised: {tried.error}")
        return verdict
    try:
        value = int(tried.result)
    except (TypeError, ValueError):
        value = None
    if value != expected:
        verdict.off.append(f"it returned {tried.result!r}, not the sum of the bytes, {expected:,}")
        return verdict
    verdict.right.append(f"the sum of the file's {size:,} bytes: {expected:,}")
    _judge_copies(verdict, checksum, path, size, yours)
    _judge_speed(verdict, checksum, path, seconds)
    return verdict


def _judge_copies(verdict: Verdict, checksum: Callable, path: Path, size: int, yours) -> None:
    with measure("reference") as reference:
        sum_mapped(path)
    peak, reference_peak = _peak_allocation(checksum, path), _peak_allocation(sum_mapped, path)
    verdict.measured.update(
        peak_bytes=peak, reference_peak_bytes=reference_peak, rchar_bytes=yours.rchar_bytes
    )
    if yours.rchar_bytes is None:
        verdict.right.append(f"bytes through read(): not available here ({yours.unavailable})")
    elif yours.rchar_bytes > (reference.rchar_bytes or 0) + mmap.PAGESIZE:
        verdict.off.append(
            f"it passed {_mib(yours.rchar_bytes)} through read()-like calls (the in-place "
            f"reference: {_mib(reference.rchar_bytes or 0)}): every byte read() hands you is "
            "a copy out of the page cache, even in small blocks"
        )
    else:
        verdict.right.append(f"no read(): {_mib(yours.rchar_bytes)} through read()-like calls")
    # numpy's reduction buffers differ with the dtypes a sum uses (the reference's are tens of
    # KiB); a copy of the file, or of blocks of it, is far more than twice those
    allowed = max(2 * reference_peak, reference_peak + mmap.PAGESIZE)
    if peak > allowed:
        verdict.off.append(
            f"Python allocated up to {_mib(peak)} at once during the call ({peak / size:.0%} of "
            f"the file; the in-place reference: {_mib(reference_peak)}): a copy of the "
            "bytes into Python memory (a bytes object, an mmap slice, or a converted array)"
        )
    else:
        verdict.right.append(
            f"no copy in Python memory: at most {_mib(peak)} allocated at once (the in-place "
            f"reference: {_mib(reference_peak)}; the file: {_mib(size)})"
        )
    verdict.right.append(
        f"{format_count(yours.minor_faults)} minor faults in your call, "
        f"{format_count(reference.minor_faults)} in the reference's: a new buffer of the "
        "file's size would take one per page it touches (fewer where huge pages back it)"
    )


def _judge_speed(verdict: Verdict, checksum: Callable, path: Path, seconds: float) -> None:
    start = time.perf_counter()
    read_and_sum(path)
    read_seconds = time.perf_counter() - start
    rounds = _rounds()
    # one call taking the whole race's time of read()+sum needs no rounds to be called slower
    if seconds > rounds * 2 * read_seconds:
        verdict.off.append(
            f"one call took {seconds:.3g} s, read()+sum {read_seconds:.3g} s: far slower, so "
            "no rounds were raced (a Python loop over bytes costs tens of ns per byte)"
        )
        return
    race = compare(
        {"yours": lambda: checksum(path), "read()+sum": lambda: read_and_sum(path)}
        | {"in place (reference)": lambda: sum_mapped(path)},
        rounds,
    )
    mine = race.relative("yours", "read()+sum")
    theirs = race.relative("in place (reference)", "read()+sum")
    rule = {"margin": MARGIN, "every": True}
    said = mine.verdict(above="faster", below="slower", **rule)
    shown = f"{mine.text('.2f', 'x', than=1.0)} the speed of read()+sum, {said}"
    reference = (
        f"the in-place reference ran at {theirs.text('.2f', 'x', than=1.0)} the speed of "
        "read()+sum in the same rounds"
    )
    verdict.measured.update(
        yours_over_read=list(mine.samples), reference_over_read=list(theirs.samples)
    )
    side = mine.side(1.0, **rule)
    if side > 0:
        verdict.right.append(f"faster: {shown} ({reference})")
    elif side < 0:
        verdict.off.append(f"slower: {shown} ({reference})")
    elif race.relative("yours", "in place (reference)").side(1.0, **rule) < 0:
        verdict.off.append(f"not clearly faster: {shown}; slower than the reference: {reference}")
    else:
        verdict.right.append(
            f"speed: this run cannot tell ({shown}; {reference}): the machine was too noisy "
            "for every round to agree; not held against you: run the check again when the "
            "machine is quieter"
        )
