"""Notebook 05's hands-on checks: make the blog's loop fast, and read a column in one call.

``double_in_place`` asks for the blog's doubling without its cost: double the value of every
record of a file in the blog's layout (``mmlab.data.seedformat``), leave every other byte as
it was, flush once when done. The check compares the result byte for byte with the file
written with doubled values (the oracle), on a file with bytes left from an earlier, longer
file after the zero length that ends its data (a scan that does not stop there changes them)
and on one sized to its data; asks ``cachestat`` whether pages were left dirty, beside the
reference's run (on tmpfs a flush cleans nothing); then times the student's function, the
reference and the blog's loop (a flush per record) in interleaved rounds. ``mean_u0`` asks for
the mean of U0 over a ``RecordStore`` in one vectorized call, against the values written and,
in time, against a loop over records.

Speed is the median over the rounds of the student's speed over the slow way's, against a
target from the same run (``speed_target``). The files go in a temporary folder under
``data/`` (the notebook's file system decides what a flush costs), deleted afterwards. A first
failed attempt gets a hint that asks the leading question; a second one names the tools.
"""

from __future__ import annotations

import math
import mmap
import os
import shutil
import struct
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from mmlab.course.handson.verdict import Verdict, attempt
from mmlab.data import seedformat
from mmlab.instruments.cachestat import cache_stats
from mmlab.instruments.compare import compare, quick_mode
from mmlab.instruments.spread import Spread

__all__ = ["GOAL", "double_in_place", "mean_u0", "reference_double", "speed_target"]

GOAL = 100.0  # "make the blog's loop 100x faster"
_ALPHABET = np.frombuffer(b"CCCCNNOOF()=#[]H123@+-", dtype=np.uint8)
# the blog's layout: a native unsigned int (the SMILES' length) and a native double,
# compiled once (the solution cell shows the same code)
LENGTH, VALUE = struct.Struct("I"), struct.Struct("d")

_TRIES: Counter[str] = Counter()  # failed attempts per check in this kernel: the hint's step
_SIZED: dict[float, int] = {}  # the timed file's records, calibrated once per kernel


@contextmanager
def _workspace() -> Iterator[Path]:
    """A temporary folder under ``data/`` (the notebook's file system), deleted afterwards."""
    Path("data").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="handson_05_", dir="data") as folder:
        yield Path(folder)


def _hint(exercise: str, first: str, then: str) -> str:
    """The first failed attempt gets a question pointing the way; later ones name the tools."""
    _TRIES[exercise] += 1
    return first if _TRIES[exercise] == 1 else then


def _records(n: int, seed: int = 5) -> list[tuple[str, float]]:
    """``n`` SMILES-like ASCII strings of 5 to 60 bytes, each with a value of QM9's U0 range."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 61, n)
    letters = _ALPHABET[rng.integers(0, len(_ALPHABET), int(lengths.sum()))].tobytes().decode()
    ends = np.cumsum(lengths)
    values = rng.normal(-11_000.0, 1_100.0, n)  # eV, as QM9's U0
    return [
        (letters[end - k : end], float(v)) for k, end, v in zip(lengths, ends, values, strict=True)
    ]


def _times(spread: Spread) -> str:
    """``270x [167–314]``: a speed-up's median and interquartile range, without exponents."""

    def number(x: float) -> str:
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"

    return f"{number(spread.median)}x [{number(spread.q1)}–{number(spread.q3)}]"


def speed_target(reference: Spread, goal: float | None = GOAL) -> tuple[float, str]:
    """The speed-up a solution must reach, and what decided it: the reference's median
    speed-up divided by its spread (upper over lower quartile), so that noise alone does not
    fail a solution as good as the reference; capped at ``goal`` (None: no cap)."""
    spread = reference.q3 / reference.q1
    lowered = reference.median / spread
    reached = f"the reference solution reached {_times(reference)} here"
    if goal is not None and lowered >= goal:
        return goal, f"the {goal:.0f}x asked for; {reached}, so {goal:.0f}x is within reach"
    lowered_by = (
        f"{reached}, lowered by its spread over the rounds (upper over lower quartile, "
        f"{spread:.2f}) so that noise alone does not fail an answer as good as it"
    )
    below = "" if goal is None else f"; that is below the {goal:.0f}x asked for, on this machine"
    return lowered, lowered_by + below


def reference_double(path: str | os.PathLike[str]) -> int:
    """The reference solution: walk the records on the map with ``unpack_from``/``pack_into``
    (no seek, no copies of the strings), and flush once at the end; returns the records."""
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        offset, size, n = 0, len(mm), 0
        while offset + 4 <= size:
            (length,) = LENGTH.unpack_from(mm, offset)  # read on the map: no seek, no copy
            if length == 0:  # a zero length ends the data
                break
            at = offset + 4 + length  # the value follows the length and the SMILES
            VALUE.pack_into(mm, at, 2 * VALUE.unpack_from(mm, at)[0])
            offset, n = at + 8, n + 1
        mm.flush()  # once, when done: every value was in the page cache at once
    return n


def _blog_loop(path: Path, size: int) -> Callable[[], None]:
    """The blog's doubling loop as written (``mmlab.data.blog``), flush per record, on a file
    of exactly its data, so that it stops where the data does."""
    from mmlab.data import blog

    text = blog.program(("imports", "open", "double", "close"), flush="every")
    return blog.runner(text, filename=str(path), filesize=size)


def _what_differs(got: bytes, want: bytes, original: bytes) -> str:
    """Which part of the layout a wrong result changed: values, strings, lengths, the tail."""
    if len(got) != len(want):
        return f"the file is now {len(got):,} bytes, not {len(want):,}: the layout changed"
    offset, record = 0, 0
    while offset + 4 <= len(want):
        (length,) = LENGTH.unpack_from(want, offset)
        if length == 0:
            break
        at = offset + 4 + length
        if got[offset:at] != want[offset:at]:
            return f"record {record}: its length or SMILES bytes changed (they must stay)"
        if got[at : at + 8] != want[at : at + 8]:
            was, now = VALUE.unpack_from(original, at)[0], VALUE.unpack_from(got, at)[0]
            return f"record {record}: value {was!r} became {now!r}, not {2 * was!r}"
        offset, record = at + 8, record + 1
    return (
        f"bytes after the data changed (from byte {offset:,}): what follows the zero length "
        "that ends the data is not data, and must stay as it is"
    )


def _prepare(path: Path, records: list, size: int, stale: list | None) -> None:
    """Write ``records`` in ``size`` bytes; with ``stale`` records after the zero length that
    ends the data, as bytes left from an earlier, longer file. Flushed, so nothing is dirty."""
    seedformat.write(path, records + (stale or []), size=size, flush_every=None)
    if stale:
        with open(path, "r+b") as f:
            f.seek(seedformat.data_size(records) - LENGTH.size)
            f.write(LENGTH.pack(0))  # the zero length that ends the data
            os.fsync(f.fileno())


def _judge_bytes(function: Callable, folder: Path, records: list, size: int, name: str, stale=None):
    """Run ``function`` on a fresh file of ``records``; what was off (None: the oracle's
    bytes, the same file written with doubled values), and the path of the file."""
    path, oracle = folder / f"{name}.dat", folder / f"{name}_oracle.dat"
    _prepare(path, records, size, stale)
    _prepare(oracle, [(s, 2 * v) for s, v in records], size, stale)
    original = path.read_bytes()
    tried = attempt(function, str(path))
    where = f"on a file {name.replace('_', ' ')}"
    if not tried.ok:
        return f"{where} it raised:\n{tried.error}", path
    got, want = path.read_bytes(), oracle.read_bytes()
    if got == want:
        return None, path
    return f"{where}: " + _what_differs(got, want, original), path


def _dirty(path: Path) -> int | str:
    """Pages of ``path`` written in the page cache and not yet on storage, or why unknown."""
    try:
        return cache_stats(path).dirty
    except OSError as error:  # no cachestat here (macOS, Linux < 6.5, a sandbox): say so
        return str(error)


def _judge_flush(verdict: Verdict, folder: Path, yours: Path, records: list, size: int) -> None:
    """Whether ``function`` left pages dirty, beside the reference on the same file: where a
    flush cleans pages (not on tmpfs, whose pages stay dirty), none may stay dirty."""
    left = _dirty(yours)
    reference = folder / "flushed_by_the_reference.dat"
    _prepare(reference, records, size, None)
    reference_double(reference)
    after_flush = _dirty(reference)
    verdict.measured.update(dirty_pages=left, dirty_after_reference=after_flush)
    if isinstance(left, str) or isinstance(after_flush, str):
        reason = left if isinstance(left, str) else after_flush
        verdict.right.append(f"whether you flushed could not be checked here: {reason}")
    elif after_flush > 0:
        verdict.right.append(
            f"whether you flushed cannot be seen here: even after the reference's flush "
            f"{after_flush} pages stay dirty (a file system with no storage behind it, as tmpfs)"
        )
    elif left > 0:
        verdict.off.append(
            f"when your function returned, {left} pages of the file were still dirty (written "
            "in the page cache, not on storage; cachestat counts them): the changes are not "
            "flushed, and a power loss in the next seconds would lose them"
        )
    else:
        verdict.right.append("flushed: no page was left dirty (cachestat), as after the reference")


def _sized_records(seconds: float, folder: Path) -> int:
    """Records for the timed file: as many as the blog's loop handles in about ``seconds`` on
    this machine (its flush per record costs what this disk makes it cost), from a trial made
    once per kernel, so that every check times the same file size."""
    if seconds not in _SIZED:
        trial = _records(50, seed=11)
        path = folder / "trial.dat"
        size = seedformat.data_size(trial) - 4  # exactly the data: the blog's loop stops there
        seedformat.write(path, trial, size=size, flush_every=None)
        loop = _blog_loop(path, size)
        start = time.perf_counter()
        loop()
        per_record = (time.perf_counter() - start) / len(trial)
        _SIZED[seconds] = int(np.clip(seconds / max(per_record, 1e-9), 100, 20_000))
    return _SIZED[seconds]


def double_in_place(function: Callable) -> Verdict:
    """Check ``function(path)``: doubles every value of a file in the blog's layout, nothing
    else, flushes when done, at least ``speed_target`` times faster than the blog's loop."""
    exercise = "double_in_place: the blog's loop, 100x faster, same file layout"
    verdict = Verdict(exercise)
    records = _records(120 if quick_mode() else 300)
    stale = _records(40, seed=17)  # left after the zero length by an earlier, longer file
    # the size leaves a zero tail that is not a whole number of 12-byte records
    with_stale = seedformat.data_size(records + stale) + 12 * 40 + 9
    with _workspace() as folder:
        ending, _ = _judge_bytes(
            function, folder, records, with_stale, "ending_at_a_zero_length", stale
        )
        sized, path = _judge_bytes(
            function, folder, records, seedformat.data_size(records) - 4, "sized_to_its_data"
        )
        verdict.off += [w for w in (ending, sized) if w]
        if verdict.off:
            verdict.hint = _hint(
                "double_in_place/bytes",
                "where does each record's value start, and where does the data end? The "
                "task's layout says both; compare the starter's loop with it",
                "read each length at its offset; the value starts 4 + length bytes later; "
                "stop at the first zero length (what follows is not data) or at the end",
            )
            return verdict
        verdict.right.append(
            "every value doubled exactly; the lengths, the SMILES and everything after the "
            "zero length that ends the data untouched, on a file with bytes left after it and "
            "on one sized to its data"
        )
        _judge_flush(verdict, folder, path, records, seedformat.data_size(records) - 4)
        if verdict.off:
            verdict.hint = "the data is in the page cache at once; what makes it reach storage?"
            return verdict
        _judge_speed(function, verdict, folder)
    return verdict


def _judge_speed(function: Callable, verdict: Verdict, folder: Path) -> None:
    records = _sized_records(0.15 if quick_mode() else 1.0, folder)
    timed = _records(records, seed=7)
    size = seedformat.data_size(timed) - 4
    paths = {arm: folder / f"timed_{arm}.dat" for arm in ("blog", "reference", "yours")}
    seedformat.write(paths["blog"], timed, size=size, flush_every=None)
    for arm in ("reference", "yours"):
        shutil.copyfile(paths["blog"], paths[arm])  # each arm doubles its own copy, each round
    result, raised = _race(
        function,
        paths["yours"],
        ("the blog's loop", _blog_loop(paths["blog"], size)),
        lambda: reference_double(paths["reference"]),
        f"doubling {records:,} records",
        warmup=0,  # each arm's file is written and cached already: nothing to warm up
    )
    if raised:
        verdict.off.append(f"it raised while timed:\n{raised}")
        return
    what = f"{records:,} records (a file size calibrated once per kernel)"
    _speed_lines(verdict, result, "the blog's loop", what, GOAL)
    if verdict.off:
        verdict.hint = _hint(
            "double_in_place/speed",
            "what does each flush() wait for, and how many do you need? And what does each "
            "seek, read and write cost the loop per record?",
            "flush once, after the loop; read and write the numbers on the map "
            "(struct's unpack_from and pack_into, at an offset) instead of seek, read, write",
        )


def _race(function: Callable, path: Path, slow: tuple, reference: Callable, title: str, **kw):
    """Time ``function(path)`` beside the reference and the slow way in interleaved rounds:
    the comparison, and the first error ``function`` raised while timed (or None)."""
    raised: list[str] = []

    def yours() -> None:
        tried = attempt(function, str(path))
        if not tried.ok:
            raised.append(tried.error or "")

    arms = {slow[0]: slow[1], "reference": reference, "yours": yours}
    result = compare(arms, repeats=5 if quick_mode() else 7, title=title, **kw)
    return result, (raised[0] if raised else None)


def _speed_lines(verdict: Verdict, result, slow: str, what: str, goal: float | None) -> None:
    """Add the speed judgement of ``yours`` against ``slow``, with the reference's beside it."""
    mine, ref = result.relative("yours", slow), result.relative("reference", slow)
    target, why = speed_target(ref, goal)
    verdict.measured.update(
        speedup=mine.median, reference_speedup=ref.median, target=target, rounds=result.rounds
    )
    line = (
        f"yours ran at {_times(mine)} the speed of {slow} on {what}, median and quartiles "
        f"of {result.rounds} interleaved rounds. Target {target:,.3g}x: {why}"
    )
    (verdict.right if mine.median >= target else verdict.off).append(line)


# -- mean_u0: one vectorized call over a RecordStore column ---------------------------------


def reference_mean(path: str | os.PathLike[str]) -> float:
    """The reference solution: the U0 column as one numpy view of the file, averaged."""
    from mmlab.store import RecordStore

    with RecordStore.open(path) as store:
        return float(store.column("U0").mean())


def _record_loop(path: Path) -> Callable[[], float]:
    """The slow way: one record at a time, each a Python object with all 19 values copied."""
    from mmlab.data import qm9
    from mmlab.store import RecordStore

    k = qm9.FIELDS.index("U0")

    def loop() -> float:
        with RecordStore.open(path) as store:
            return sum(store[i].values[k] for i in range(len(store))) / len(store)

    return loop


def _store(n: int, folder: Path) -> tuple[Path, np.ndarray]:
    """A store of ``n`` records with QM9's fields; returns it and the U0 values written."""
    from mmlab.data import qm9
    from mmlab.store import RecordStore

    rng = np.random.default_rng(12)
    values = rng.normal(0.0, 1.0, (n, len(qm9.FIELDS)))
    u0 = rng.normal(-11_000.0, 1_100.0, n)
    values[:, qm9.FIELDS.index("U0")] = u0
    strings = [s for s, _ in _records(n, seed=13)]
    path = folder / "u0.mms"
    with RecordStore.create(path, qm9.FIELDS, capacity=n, overwrite=True) as store:
        store.extend(zip(strings, values, strict=True))
        store.flush()
    return path, u0


def mean_u0(function: Callable) -> Verdict:
    """Check ``function(path)``: the mean of U0 over every record of the store at ``path``,
    right to float64 rounding, and in time at least ``speed_target`` times a record loop."""
    verdict = Verdict("mean_u0: the mean of U0 over a RecordStore, in one vectorized call")
    n = 100_000 if quick_mode() else 300_000
    with _workspace() as folder:
        path, u0 = _store(n, folder)
        _judge_mean(function, verdict, path, u0)
    return verdict


def _judge_mean(function: Callable, verdict: Verdict, path: Path, u0: np.ndarray) -> None:
    n = len(u0)
    want = float(np.mean(u0))
    tried = attempt(function, str(path))
    if not tried.ok:
        verdict.off.append(f"it raised:\n{tried.error}")
        verdict.hint = "RecordStore.open(path) as store; store.column('U0') is a numpy array"
        return
    # summing n float64 values in another order can differ by n rounding errors at most
    tolerance = n * np.finfo(np.float64).eps * float(np.abs(u0).max())
    got = tried.result
    verdict.measured.update(mean=got, oracle=want, tolerance=tolerance)
    if not isinstance(got, int | float | np.floating) or not math.isfinite(float(got)):
        verdict.off.append(f"it returned {got!r:.80}, not a number")
    elif abs(float(got) - want) > tolerance:
        verdict.off.append(f"it returned {float(got)!r}; the {n:,} values written average {want!r}")
    if verdict.off:
        verdict.hint = "average every record's U0: the column 'U0' of the store, all of it"
        return
    verdict.right.append(
        f"the mean is right: {float(got):.6f} eV (the values written: {want:.6f}, "
        f"within float64 rounding of {n:,} terms, {tolerance:.1e})"
    )

    result, raised = _race(
        function,
        path,
        ("a loop over records", _record_loop(path)),
        lambda: reference_mean(path),
        f"the mean of U0 over {n:,} records",
    )
    if raised:
        verdict.off.append(f"it raised while timed:\n{raised}")
        return
    _speed_lines(verdict, result, "a loop over records", f"{n:,} records", None)
    if verdict.off:
        verdict.hint = _hint(
            "mean_u0/speed",
            "what does your loop pay per value, in Python, that one call over the whole "
            "column would pay once?",
            "take store.column('U0'), a numpy view of the file, and call one numpy reduction on it",
        )
