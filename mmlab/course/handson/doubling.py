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
in time, beside the reference and a Python loop over the same column.

Speed is judged by where the student's function falls between the slow arm and the reference
timed in the same interleaved rounds (for the doubling, the reference capped at the 100x asked
for): it passes when, in the median round, it beats a bar part of the way from the slow arm
to the reference on a log scale (``midpoint``): halfway (their geometric mean) for the mean,
three quarters of the way (31.6x when the reference reaches 100x) for the doubling. The bar
is made round by round, so a slow spell that slows every arm of a round moves the bar with
them: noise would have to make one arm several times slower than the others of its round, in
most rounds, to carry the slow way over the bar or the reference's way under it. (A bar
lowered by the reference's spread over the rounds was as noisy as that spread: on a loaded
machine a wide spread let a flush per record or a Python loop pass, and a narrow one failed
the reference.)

The files go in a temporary folder under ``data/`` (the notebook's file system decides what a
flush costs), deleted afterwards. A first failed attempt gets a hint that asks the leading
question; a second one names the tools.
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

__all__ = [
    "GOAL",
    "double_in_place",
    "mean_u0",
    "midpoint",
    "reference_double",
    "reference_mean",
]

GOAL = 100.0  # "make the blog's loop 100x faster"
BLOG_LOOP = "the blog's loop"
COLUMN_LOOP = "a Python loop over the column"
# what each slow arm does, said where the verdict first names it
_HOW = {BLOG_LOOP: "a flush per record", COLUMN_LOOP: "sum(column): one value at a time"}
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
    else, flushes when done, and beyond three quarters of the way, on a log scale, from the
    blog's loop to the 100x asked for (or the reference, where it stays below; ``midpoint``)."""
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
        (BLOG_LOOP, _blog_loop(paths["blog"], size)),
        lambda: reference_double(paths["reference"]),
        f"doubling {records:,} records",
        warmup=0,  # each arm's file is written and cached already: nothing to warm up
    )
    if raised:
        verdict.off.append(f"it raised while timed:\n{raised}")
        return
    what = f"{records:,} records (a file size calibrated once per kernel)"
    # Three quarters of the way to 100x (31.6x there): a loop that only drops the flush per
    # record, or only the seeks, stays short of it; the reference clears it by about 3x.
    _between_lines(verdict, result, BLOG_LOOP, what, GOAL, share=0.75)
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
    kw.setdefault("repeats", 5 if quick_mode() else 7)
    result = compare(arms, title=title, **kw)
    return result, (raised[0] if raised else None)


# -- mean_u0: one vectorized call over a RecordStore column ---------------------------------


def reference_mean(path: str | os.PathLike[str]) -> float:
    """The reference solution: the U0 column as one numpy view of the file, averaged."""
    from mmlab.store import RecordStore

    with RecordStore.open(path) as store:
        return float(store.column("U0").mean())


def _column_loop(path: Path) -> Callable[[], float]:
    """The slow arm: the right column, summed one value at a time by the interpreter."""
    from mmlab.store import RecordStore

    def loop() -> float:
        with RecordStore.open(path) as store:
            column = store.column("U0")
            return sum(column) / len(column)

    return loop


def midpoint(
    yours: Spread, reference: Spread, goal: float | None = None, share: float = 0.5
) -> Spread:
    """Per round, ``yours``'s speed over the bar ``share`` of the way, on a log scale, from the
    slow arm to the reference (capped at ``goal``, None: no cap); 0.5 is their geometric mean.
    ``yours`` and ``reference`` are speeds over the slow arm, round by round, so the bar of
    round r is ``min(reference[r], goal) ** share``. Above 1: past the bar."""
    capped = (r if goal is None else min(r, goal) for r in reference.samples)
    return Spread.of(
        mine / ref**share if ref > 0 else math.inf
        for mine, ref in zip(yours.samples, capped, strict=True)
    )


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
    right to float64 rounding, and in time closer to the vectorized reference than to a Python
    loop over the column (``midpoint``), all three timed in the same interleaved rounds."""
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

    # Both arms cost milliseconds, so rounds are cheap: many of them, for steady medians.
    result, raised = _race(
        function,
        path,
        (COLUMN_LOOP, _column_loop(path)),
        lambda: reference_mean(path),
        f"the mean of U0 over {n:,} records",
        repeats=9 if quick_mode() else 11,
    )
    if raised:
        verdict.off.append(f"it raised while timed:\n{raised}")
        return
    _between_lines(verdict, result, COLUMN_LOOP, f"{n:,} records")
    if verdict.off:
        verdict.hint = _hint(
            "mean_u0/speed",
            "what does your loop pay per value, in Python, that one call over the whole "
            "column would pay once?",
            "take store.column('U0'), a numpy view of the file, and call one numpy reduction on it",
        )


_SHARES = {0.5: "halfway", 0.75: "three quarters of the way"}


def _between_lines(
    verdict: Verdict,
    result,
    slow: str,
    what: str,
    goal: float | None = None,
    share: float = 0.5,
) -> None:
    """Judge ``yours`` by where it falls between ``slow`` and the reference (capped at
    ``goal``), all three timed in the same interleaved rounds: it passes beyond ``share`` of
    the way from the slow arm to the reference on a log scale (``midpoint``), in the median
    round."""
    mine, ref = result.relative("yours", slow), result.relative("reference", slow)
    margin = midpoint(mine, ref, goal, share)
    bar = Spread.of((r if goal is None else min(r, goal)) ** share for r in ref.samples)
    verdict.measured.update(
        speedup=mine.median,
        reference_speedup=ref.median,
        target=bar.median,
        over_target=margin.median,
        rounds=result.rounds,
    )
    timed = (
        f"timed against {slow} ({_HOW[slow]}) on {what}, in {result.rounds} interleaved rounds "
        f"(median and quartiles): yours ran at {_times(mine)} its speed, the reference at "
        f"{_times(ref)}"
    )
    if ref.side(1.0) <= 0:  # the arms the bar is made of did not separate: no bar to judge by
        verdict.off.append(
            f"{timed}; the reference was not clearly faster than {slow} in this run, so it "
            "gives no bar to judge by: run the check again"
        )
        return
    top = "the reference" if goal is None else f"the {goal:.0f}x asked for"
    below = "" if goal is None else " (the reference's speed-up, in rounds where it stayed below)"
    line = (
        f"{timed}. The bar lies {_SHARES[share]}, on a log scale, from {slow} to {top}{below}: "
        f"{_times(bar)}. Yours ran at {margin.text('.2f', 'x', than=1.0)} the bar's speed, "
        f"{'past it' if margin.median >= 1 else 'short of it'}; faster than the bar in "
        f"{margin.count_above(1.0)} of {result.rounds} rounds"
    )
    (verdict.right if margin.median >= 1 else verdict.off).append(line)
