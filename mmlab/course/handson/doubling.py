"""Notebook 05's hands-on checks: make the blog's loop fast, and read a column in one call.

``double_in_place`` asks for the blog's doubling without its cost: a function that doubles
the property of every record of a file in the blog's layout (``mmlab.data.seedformat``: a
native ``I`` length, the UTF-8 SMILES, a native ``d`` value; a zero length or the end of
the file ends the data), leaving every other byte as it was. The check writes such files,
compares the student's result byte for byte with the file written with doubled values (the
oracle), then times the student's function, this module's reference solution and the blog's
own loop (a flush after every record) in interleaved rounds on copies of one file.

``mean_u0`` asks for the mean of U0 over a ``RecordStore`` in one vectorized call, judged
against the values the check wrote (the oracle) and, in time, against a loop over records.

Both judge speed as the median over interleaved rounds of the student's speed over the slow
way's in the same round, against a target from the same run (``speed_target``): the
reference's median speed-up divided by its spread over the rounds, capped at the 100x the
exercise asks for. The files go under ``data/handson_05/`` of the current
directory, on the file system the notebook writes to, since that decides what a flush costs.
"""

from __future__ import annotations

import math
import mmap
import os
import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmlab.course.handson.verdict import Verdict, attempt
from mmlab.data import seedformat
from mmlab.instruments.compare import compare, quick_mode
from mmlab.instruments.spread import Spread

__all__ = ["GOAL", "double_in_place", "mean_u0", "reference_double", "speed_target"]

GOAL = 100.0  # "make the blog's loop 100x faster"
_ALPHABET = np.frombuffer(b"CCCCNNOOF()=#[]H123@+-", dtype=np.uint8)
# the blog's layout: a native unsigned int (the SMILES' length) and a native double
_LENGTH, _VALUE = struct.Struct("I"), struct.Struct("d")


def _folder() -> Path:
    folder = Path("data") / "handson_05"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


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
    measured = (
        f"the reference solution's median speed-up here, {_times(reference)}, divided by its "
        f"spread over the rounds (upper over lower quartile, {spread:.2f})"
    )
    if goal is not None and lowered >= goal:
        return goal, f"the {goal:.0f}x asked for: {measured} is {lowered:,.0f}x, above it"
    below = "" if goal is None else f", below the {goal:.0f}x asked for on this machine"
    return lowered, measured + below


def reference_double(path: str | os.PathLike[str]) -> int:
    """The reference solution: walk the records on the map with ``unpack_from``/``pack_into``
    (no seek, no copies of the strings), and flush once at the end; returns the records."""
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        offset, size, n = 0, len(mm), 0
        while offset + 4 <= size:
            (length,) = _LENGTH.unpack_from(mm, offset)
            if length == 0:
                break
            at = offset + 4 + length
            _VALUE.pack_into(mm, at, 2 * _VALUE.unpack_from(mm, at)[0])
            offset, n = at + 8, n + 1
        mm.flush()
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
        (length,) = _LENGTH.unpack_from(want, offset)
        if length == 0:
            break
        at = offset + 4 + length
        if got[offset:at] != want[offset:at]:
            return f"record {record}: its length or SMILES bytes changed (they must stay)"
        if got[at : at + 8] != want[at : at + 8]:
            was, now = _VALUE.unpack_from(original, at)[0], _VALUE.unpack_from(got, at)[0]
            return f"record {record}: value {was!r} became {now!r}, not {2 * was!r}"
        offset, record = at + 8, record + 1
    return f"bytes after the data changed (from byte {offset:,}): the zero tail must stay"


def _judge_bytes(function: Callable, records: list, size: int, name: str) -> str | None:
    """Run ``function`` on a fresh file of ``records`` in ``size`` bytes; None if the result
    is the oracle's (the same records written with doubled values), else what was off."""
    folder = _folder()
    path, oracle = folder / f"{name}.dat", folder / f"{name}_oracle.dat"
    seedformat.write(path, records, size=size, flush_every=None)
    seedformat.write(oracle, [(s, 2 * v) for s, v in records], size=size, flush_every=None)
    original = path.read_bytes()
    tried = attempt(function, str(path))
    if not tried.ok:
        return f"on a file {name.replace('_', ' ')} it raised:\n{tried.error}"
    got, want = path.read_bytes(), oracle.read_bytes()
    if got == want:
        return None
    return f"on a file {name.replace('_', ' ')}: " + _what_differs(got, want, original)


def _sized_records(seconds: float) -> int:
    """Records for the timed file: as many as the blog's loop handles in about ``seconds`` on
    this machine (its flush per record costs what this disk makes it cost), from a trial."""
    trial = _records(50, seed=11)
    path = _folder() / "trial.dat"
    size = seedformat.data_size(trial) - 4  # exactly the data: the blog's loop stops there
    seedformat.write(path, trial, size=size, flush_every=None)
    start = time.perf_counter()
    _blog_loop(path, size)()
    per_record = (time.perf_counter() - start) / len(trial)
    return int(np.clip(seconds / max(per_record, 1e-9), 100, 20_000))


def double_in_place(function: Callable) -> Verdict:
    """Check ``function(path)``: doubles every record's value of a file in the blog's layout,
    nothing else, at least ``speed_target`` times faster than the blog's loop."""
    exercise = "double_in_place: the blog's loop, 100x faster, same file layout"
    verdict = Verdict(exercise)
    records = _records(120 if quick_mode() else 300)
    # with a zero tail whose size is not a whole number of 12-byte records: the blog's loop
    # would read phantom records there and raise struct.error at the end
    with_tail = seedformat.data_size(records) + 12 * 40 + 9
    wrong = [
        _judge_bytes(function, records, with_tail, "with_a_zero_tail"),
        _judge_bytes(function, records, seedformat.data_size(records) - 4, "sized_to_its_data"),
    ]
    verdict.off += [w for w in wrong if w]
    if verdict.off:
        verdict.hint = (
            "read each record's length at its offset (struct.unpack_from('I', mm, offset)); "
            "the value starts 4 + length bytes later; stop at a zero length or at the end"
        )
        return verdict
    verdict.right.append(
        "every value doubled exactly, the lengths, SMILES and zero tail untouched, on a file "
        "with a zero tail and on one sized to its data"
    )
    _judge_speed(function, verdict)
    return verdict


def _judge_speed(function: Callable, verdict: Verdict) -> None:
    records = _sized_records(0.15 if quick_mode() else 1.0)
    timed = _records(records, seed=7)
    size = seedformat.data_size(timed) - 4
    folder = _folder()
    paths = {arm: folder / f"timed_{arm}.dat" for arm in ("blog", "reference", "yours")}
    seedformat.write(paths["blog"], timed, size=size, flush_every=None)
    for arm in ("reference", "yours"):
        shutil.copyfile(paths["blog"], paths[arm])  # each arm doubles its own copy, each round
    raised: list[str] = []

    def yours() -> None:
        tried = attempt(function, str(paths["yours"]))
        if not tried.ok:
            raised.append(tried.error or "")

    result = compare(
        {
            "the blog's loop": _blog_loop(paths["blog"], size),
            "reference": lambda: reference_double(paths["reference"]),
            "yours": yours,
        },
        repeats=5 if quick_mode() else 7,
        warmup=0,  # each arm's file is written and cached already: nothing to warm up
        title=f"doubling {records:,} records",
    )
    if raised:
        verdict.off.append(f"it raised while timed:\n{raised[0]}")
        return
    _speed_lines(verdict, result, "the blog's loop", f"{records:,} records", GOAL)
    if verdict.off:
        verdict.hint = (
            "each flush() is an msync that waits for storage: flush once, after the loop; then "
            "read and write the numbers on the map (unpack_from/pack_into) rather than with "
            "seek, read and write, which copy bytes and move the position for every field"
        )


def _speed_lines(verdict: Verdict, result, slow: str, what: str, goal: float | None) -> None:
    """Add the speed judgement of ``yours`` against ``slow``, with the reference's beside it."""
    mine, ref = result.relative("yours", slow), result.relative("reference", slow)
    target, why = speed_target(ref, goal)
    verdict.measured.update(
        speedup=mine.median, reference_speedup=ref.median, target=target, rounds=result.rounds
    )
    line = (
        f"yours ran at {_times(mine)} the speed of {slow} on {what} (median and quartiles "
        f"of {result.rounds} interleaved rounds; the reference: {_times(ref)}); the target, "
        f"{target:,.3g}x, is {why}"
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


def _store(n: int) -> tuple[Path, np.ndarray]:
    """A store of ``n`` records with QM9's fields; returns it and the U0 values written."""
    from mmlab.data import qm9
    from mmlab.store import RecordStore

    rng = np.random.default_rng(12)
    values = rng.normal(0.0, 1.0, (n, len(qm9.FIELDS)))
    u0 = rng.normal(-11_000.0, 1_100.0, n)
    values[:, qm9.FIELDS.index("U0")] = u0
    strings = [s for s, _ in _records(n, seed=13)]
    path = _folder() / "u0.mms"
    with RecordStore.create(path, qm9.FIELDS, capacity=n, overwrite=True) as store:
        store.extend(zip(strings, values, strict=True))
        store.flush()
    return path, u0


def mean_u0(function: Callable) -> Verdict:
    """Check ``function(path)``: the mean of U0 over every record of the store at ``path``,
    right to float64 rounding, and in time at least ``speed_target`` times a record loop."""
    verdict = Verdict("mean_u0: the mean of U0 over a RecordStore, in one vectorized call")
    n = 100_000 if quick_mode() else 300_000
    path, u0 = _store(n)
    want = float(np.mean(u0))
    tried = attempt(function, str(path))
    if not tried.ok:
        verdict.off.append(f"it raised:\n{tried.error}")
        verdict.hint = "RecordStore.open(path) as store; store.column('U0') is a numpy array"
        return verdict
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
        return verdict
    verdict.right.append(
        f"the mean is right: {float(got):.6f} eV (the values written: {want:.6f}, "
        f"within float64 rounding of {n:,} terms, {tolerance:.1e})"
    )

    raised: list[str] = []

    def yours() -> None:
        again = attempt(function, str(path))
        if not again.ok:
            raised.append(again.error or "")

    result = compare(
        {
            "a loop over records": _record_loop(path),
            "reference": lambda: reference_mean(path),
            "yours": yours,
        },
        repeats=5 if quick_mode() else 7,
        title=f"the mean of U0 over {n:,} records",
    )
    if raised:
        verdict.off.append(f"it raised while timed:\n{raised[0]}")
        return verdict
    _speed_lines(verdict, result, "a loop over records", f"{n:,} records", None)
    if verdict.off:
        verdict.hint = (
            "a Python loop pays an interpreter step (and here a record object) per value: "
            "take store.column('U0') and call one numpy reduction on it"
        )
    return verdict
