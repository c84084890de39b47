"""Notebook 04's hands-on checks: find read()'s crossover, and sum a file where it lies.

``crossover(find_crossover)`` and its reveal ``crossover_found`` live in
``mmlab.course.handson.crossover`` (exercise 4.3) and are exported here with this module's own.

``sum_in_place(checksum)``: ``checksum(path)`` must return the sum of a file's bytes without
copying them into Python memory. The check compares its value with the sum, counts the bytes
it passed through ``read()``-like calls (``/proc/self/io``'s rchar) and the most memory Python
allocated during the call (``tracemalloc``), each beside the in-place reference measured in
the same call, and races it against ``read()`` + sum in interleaved rounds: "faster" only
when every round says so; where the rounds cannot tell, it says so and what to do. The check
sums a file of its own (``data/checksum.bin``), not the notebook's.
"""

from __future__ import annotations

import mmap
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmlab.course.handson.crossover import _file_bytes, _rounds, crossover, crossover_found
from mmlab.course.handson.verdict import Verdict, attempt
from mmlab.instruments.access import sample_file
from mmlab.instruments.compare import compare
from mmlab.instruments.measure import format_count, measure
from mmlab.instruments.spread import MARGIN

__all__ = ["crossover", "crossover_found", "sum_in_place"]

DATA = Path("data")  # relative to the current directory, as in the notebooks


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
        "which of section 1's five methods never copies a byte? Use it on the whole file, "
        "and sum with a dtype wide enough not to overflow"
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
    faults = (
        f"{format_count(yours.minor_faults)} minor faults in your call, "
        f"{format_count(reference.minor_faults)} in the reference's"
    )
    if yours.minor_faults is None or reference.minor_faults is None:
        return
    # a new buffer of the file's size takes a fault per page it touches (fewer with huge
    # pages); a mapping read in place takes far fewer (fault-around, large folios)
    if yours.minor_faults > 4 * max(reference.minor_faults, 1) + 16:
        verdict.off.append(f"{faults}: the faults of filling a new buffer, a copy")
    else:
        verdict.right.append(f"{faults}: no more than reading in place takes")


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
