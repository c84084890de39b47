"""A writer SIGKILLed at random moments through create, append, growth and flush.

Each round forks a writer from the test process (the imports are done, so a round costs
milliseconds), lets it run for a random delay and SIGKILLs it. The writer opens the store
``"r+"`` (or creates it, with a small capacity, when the round starts afresh) and appends
batches of varied sizes from a deterministic generator: record ``j``'s string and values are
a pure function of ``j``, so any record can be checked bit for bit. After each ``flush()``
returns, the writer appends the flushed count to a log and fsyncs it. Before each step it
writes the phase it enters into a page shared with the test, so every kill is attributed to
create, open, append, growth, flush or the log write.

After each kill the store must open; hold at least the last logged count (no flushed record
lost) and no more than the last flush published (no unflushed record visible); and equal the
generator for every record, values compared as int64 bit patterns. The next round's writer
must open it ``"r+"`` and carry on. A kill during create must leave either no store or an
empty one. Rounds start afresh at random, so creates and early growths recur.

The delays come from a seeded ``random.Random``; the report prints the seed, and
``MMLAB_TORTURE_SEED`` replays the same plan (the kills land wherever the timing puts them).
"""

from __future__ import annotations

import json
import mmap
import os
import random
import shutil
import signal
import struct
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import budget
import numpy as np
import pytest
from budget import FULL, size

from mmlab import RecordStore, StoreError

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks its writers")

FIELDS = ("mu", "alpha", "U0")
PHASES = ("starting", "create", "open", "append", "growth", "flush", "log", "idle")
LIMIT = 65_536  # records the generator tables hold; a store starts afresh long before that
FRESH_ABOVE = 16_000  # records past which a round starts afresh, to keep rounds and checks fast
BATCHES = (1, 2, 3, 10, 50, 200, 1_000, 3_000)
CHILD_LIFETIME = 60  # seconds: a writer the test never killed (it died) stops on its own
REAP_TIMEOUT = 30  # seconds for a killed process to be reaped (it may be inside an fsync)


# -- the record generator -----------------------------------------------------------------

# ASCII SMILES tokens and 2-, 3- and 4-byte UTF-8 characters.
_PIECES = ("C", "N", "O", "c1ccccc1", "(", ")", "=", "#", "[nH]", "Cl", "é", "Ω", "中", "🧪")


def _prefix(k: int) -> str:
    # One prefix in 16 is long (up to ~800 bytes), so the heap sometimes fills before the columns.
    rng = random.Random(k)
    pieces = rng.randrange(100) if k % 16 == 0 else rng.randrange(8)
    return "".join(rng.choice(_PIECES) for _ in range(pieces))


_PREFIXES = tuple(_prefix(k) for k in range(97))
# Bit patterns a careless round trip loses: signed zeros, infinities, the smallest subnormal,
# the most negative finite value.
_SPECIALS = np.array([-0.0, 0.0, np.inf, -np.inf, 5e-324, -np.finfo(np.float64).max]).view(
    np.uint64
)


def smiles_of(j: int) -> str:
    """Record ``j``'s string: empty for every 13th record, else a varied prefix and ``j``."""
    return "" if j % 13 == 0 else f"{_PREFIXES[j % 97]}{j}"


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64: 64 well-mixed bits for each uint64 (array arithmetic wraps silently)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def values_of(j: np.ndarray) -> np.ndarray:
    """The values of records ``j`` (an array of indices), one row each, in ``FIELDS`` order.

    mu is ``j``; alpha is 64 hashed bits, so any pattern (NaN payloads, subnormals) turns up;
    U0 is a special value for even ``j`` and for odd ``j`` a signalling NaN whose payload is
    ``j + 1``, which a conversion through a quieting instruction would change.
    """
    j = np.asarray(j, dtype=np.uint64)
    bits = np.empty((len(j), len(FIELDS)), dtype=np.uint64)
    bits[:, 0] = j.astype(np.float64).view(np.uint64)
    bits[:, 1] = _mix(j)
    signalling_nan = np.uint64(0x7FF0_0000_0000_0000) | (j + np.uint64(1))
    bits[:, 2] = np.where(j % 2 == 0, _SPECIALS[(j // 2) % len(_SPECIALS)], signalling_nan)
    return bits.view(np.float64)


def records(start: int, stop: int) -> list[tuple[str, np.ndarray]]:
    """Records ``start`` to ``stop - 1`` as ``extend`` takes them."""
    return list(
        zip(map(smiles_of, range(start, stop)), values_of(np.arange(start, stop)), strict=True)
    )


class Expected:
    """The first ``LIMIT`` records' strings and heap sizes, computed once before any fork.

    Checking a store then builds no strings, and a writer knows before each batch whether
    the batch makes the store grow.
    """

    def __init__(self, limit: int) -> None:
        self.smiles = [smiles_of(j) for j in range(limit)]
        lengths = np.fromiter((len(s.encode()) for s in self.smiles), np.int64, count=limit)
        self.heap_end = np.concatenate([[0], np.cumsum(lengths)])  # heap bytes of 0..j-1

    def grows(self, store: RecordStore, count: int) -> bool:
        """Whether holding ``count`` records makes ``store`` grow (its records or its heap)."""
        _, heap_capacity = store.sections["heap"]
        return count > store.capacity or self.heap_end[count] > heap_capacity


# -- child processes ----------------------------------------------------------------------


def fork_child(target: Callable[[], object], result_path: Path) -> int:
    """Run ``target`` in a forked child; its return value or traceback goes to ``result_path``
    as JSON. The child never returns into pytest: it always leaves through ``os._exit``.
    """
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        result = {"result": target()}
        status = 0
    except BaseException:
        result = {"error": traceback.format_exc()}
    finally:
        try:
            result_path.write_text(json.dumps(result))
        finally:
            os._exit(status)


def reap(pid: int, timeout: float) -> int | None:
    """The child's wait status once it has ended, or None if it is still running at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            return None
        time.sleep(0.0005)


def kill_and_reap(pid: int) -> int:
    """SIGKILL a child (ended or not) and return its wait status."""
    os.kill(pid, signal.SIGKILL)  # an ended child stays a zombie until reaped: never ESRCH
    status = reap(pid, REAP_TIMEOUT)
    if status is None:
        raise AssertionError(f"child {pid} survived SIGKILL for {REAP_TIMEOUT} s")
    return status


# -- the writer -----------------------------------------------------------------------------


class Board:
    """A page shared with the forked writer: the phase it is in, and the count it is flushing."""

    _FLUSHING = struct.Struct("<q")

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, mmap.PAGESIZE)  # anonymous and MAP_SHARED: survives fork

    def reset(self) -> None:
        self._page[:16] = bytes(16)

    @property
    def phase(self) -> str:
        return PHASES[self._page[0]]

    @phase.setter
    def phase(self, name: str) -> None:
        self._page[0] = PHASES.index(name)

    @property
    def flushing(self) -> int:
        return self._FLUSHING.unpack_from(self._page, 8)[0]

    @flushing.setter
    def flushing(self, count: int) -> None:
        self._FLUSHING.pack_into(self._page, 8, count)


@dataclass(frozen=True)
class Plan:
    """One round, drawn from the seeded generator before the fork."""

    fresh: bool  # delete the store and log first, so the writer creates the store
    capacity: int  # of a created store, in records
    heap_capacity: int  # of a created store, in bytes
    writer_seed: int  # the writer's batch sizes and flush decisions
    delay: float  # seconds from the fork to the kill

    @classmethod
    def draw(cls, rng: random.Random, fresh: bool) -> Plan:
        # A third of the kills come within 3 ms, where create and open take place.
        early = rng.random() < 1 / 3
        return cls(
            fresh=fresh or rng.random() < 0.15,
            capacity=rng.choice((1, 2, 5, 16, 64)),
            heap_capacity=rng.choice((1, 16, 100, 1_000)),
            writer_seed=rng.getrandbits(32),
            delay=rng.uniform(0, 0.003 if early else 0.025),
        )


def write_until_killed(
    path: Path, log_path: Path, board: Board, plan: Plan, expected: Expected
) -> None:
    """The writer's life: open or create the store, then append, flush and log until killed."""
    rng = random.Random(plan.writer_seed)
    if path.exists():
        board.phase = "open"
        store = RecordStore.open(path, "r+")
    else:
        board.phase = "create"
        store = RecordStore.create(
            path, FIELDS, capacity=plan.capacity, heap_capacity=plan.heap_capacity
        )
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    count = len(store)
    give_up = time.monotonic() + CHILD_LIFETIME
    while count + max(BATCHES) < LIMIT and time.monotonic() < give_up:
        n = rng.choice(BATCHES)
        board.phase = "growth" if expected.grows(store, count + n) else "append"
        store.extend(records(count, count + n))
        count += n
        if rng.random() < 0.75:  # sometimes keep unflushed records for the kill to find
            board.flushing = count
            board.phase = "flush"
            store.flush()
            board.phase = "log"
            os.write(log, b"%d\n" % count)
            os.fsync(log)
    board.phase = "idle"
    time.sleep(max(0.0, give_up - time.monotonic()))


def last_logged(log_path: Path) -> int:
    """The last count the log says was flushed; 0 without a log."""
    try:
        lines = log_path.read_bytes().splitlines()
    except FileNotFoundError:
        return 0
    return int(lines[-1]) if lines else 0


# -- checking a store after a kill ---------------------------------------------------------


@dataclass
class Tally:
    kills: Counter = field(default_factory=Counter)  # phase -> kills that landed in it
    after_create: Counter = field(default_factory=Counter)  # what a kill in create left
    checked: int = 0  # records compared bit for bit with the generator
    lost: int = 0  # flushed (logged) records missing from the store
    unflushed: int = 0  # records visible beyond the last flush
    corrupt: int = 0  # stores that did not open, or vanished
    wrong: int = 0  # records that differ from the generator
    writer_errors: int = 0  # writers that raised instead of being killed
    problems: list[str] = field(default_factory=list)  # what went wrong, for the assertion

    def problem(self, text: str) -> None:
        self.problems.append(text)


def wrong_records(store: RecordStore, expected: Expected) -> list[int]:
    """Indices of the records of ``store`` that differ from the generator."""
    n = len(store)
    smiles = [store.smiles(i) for i in range(n)]
    bad_smiles = np.array([a != b for a, b in zip(smiles, expected.smiles, strict=False)], bool)
    got = np.stack([store.column(name) for name in FIELDS], axis=1)
    bad_values = (got.view(np.int64) != values_of(np.arange(n)).view(np.int64)).any(axis=1)
    return np.flatnonzero(bad_smiles | bad_values).tolist()


def check_after_kill(
    path: Path, floor: int, in_flight: int | None, expected: Expected, tally: Tally, where: str
) -> int | None:
    """Check the store a writer left; returns its count, or None if it is unusable.

    ``floor`` is the count known flushed (logged, or seen at the last check), ``in_flight``
    the count of a flush the kill interrupted (None if none): the store must hold exactly one
    of the two.
    """
    try:
        store = RecordStore.open(path)
    except (StoreError, OSError) as exc:
        tally.corrupt += 1
        tally.problem(f"{where}: the store does not open: {exc!r}")
        return None
    with store:
        n = len(store)
        if n < floor:
            tally.lost += floor - n
            tally.problem(f"{where}: {n} records, but {floor} were flushed")
        elif n != floor and n != in_flight:
            tally.unflushed += n - floor
            tally.problem(f"{where}: {n} records, but the last flush published {floor}")
        bad = wrong_records(store, expected)
        tally.checked += n
        tally.wrong += len(bad)
        if bad:
            tally.problem(f"{where}: {len(bad)} wrong records, the first {bad[:5]}")
    return n if n >= floor and not bad else None


def carry_on(path: Path, expected: Expected, tally: Tally) -> None:
    """After the last kill, a writer in this process opens the store and adds a flush."""
    with RecordStore.open(path, "r+") as store:
        n = len(store)
        store.extend(records(n, n + 100))
    check_after_kill(path, n + 100, None, expected, tally, "carry on after the last kill")


# -- the test -------------------------------------------------------------------------------


def test_a_writer_killed_at_random_moments_loses_nothing_flushed(tmp_path, report):
    kills = size(50, 1_000)
    seed = budget.seed()
    rng = random.Random(seed)
    expected = Expected(LIMIT)
    board = Board()
    home = tmp_path / "store"
    path, log_path, result_path = home / "records.mms", home / "flushed.log", tmp_path / "writer"
    tally = Tally()
    started = time.perf_counter()
    floor, fresh = 0, True
    for k in range(kills):
        plan = Plan.draw(rng, fresh)
        if plan.fresh:
            # Temporary files killed writers left go too: a new life starts with a bare directory.
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir()
            floor = 0
        existed = path.exists()
        board.reset()
        result_path.unlink(missing_ok=True)
        writer = partial(write_until_killed, path, log_path, board, plan, expected)
        pid = fork_child(writer, result_path)
        try:
            time.sleep(plan.delay)
        finally:
            status = kill_and_reap(pid)
        phase, where = board.phase, f"kill {k} (in {board.phase}, after {plan.delay * 1e3:.1f} ms)"
        tally.kills[phase] += 1
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            tally.writer_errors += 1
            outcome = json.loads(result_path.read_text()) if result_path.exists() else {}
            tally.problem(f"{where}: the writer ended by itself: {outcome.get('error', status)}")
        if not path.exists():
            # Only a writer that was creating the store may leave no store behind.
            if existed or phase not in ("starting", "create"):
                tally.corrupt += 1
                tally.problem(f"{where}: the store is gone")
            if phase == "create":
                tally.after_create["no store"] += 1
            fresh = existed
            continue
        floor = max(floor, last_logged(log_path))
        in_flight = board.flushing if phase in ("flush", "log") else None
        count = check_after_kill(path, floor, in_flight, expected, tally, where)
        if phase == "create" and count is not None:
            tally.after_create["an empty store"] += 1
            if count:
                tally.problem(f"{where}: a killed create left {count} records")
        # A damaged store would fail every later round too: start afresh after one.
        fresh = count is None or count > FRESH_ABOVE
        floor = count or 0
    if path.exists() and not tally.problems:  # a damaged store is reported as it was left
        carry_on(path, expected, tally)
    elapsed = time.perf_counter() - started

    phases = ", ".join(f"{tally.kills[p]} in {p}" for p in PHASES if tally.kills[p])
    left = ", ".join(f"{n} {what}" for what, n in sorted(tally.after_create.items())) or "none"
    report(
        f"crash: {kills:,} kills in {elapsed:.1f} s (seed {seed}; {phases}), "
        f"{tally.checked:,} records checked bit for bit, {tally.lost} lost flushed records, "
        f"{tally.unflushed} unflushed records published, {tally.corrupt} corrupt stores, "
        f"{tally.wrong} wrong records, {tally.writer_errors} writer errors; "
        f"kills in create left {left}"
    )
    assert not tally.problems, "\n".join(tally.problems[:20])
    assert tally.kills["growth"] > 0, f"no kill landed in a growth: {dict(tally.kills)}"
    if FULL:
        assert tally.kills["create"] > 0, f"no kill landed in a create: {dict(tally.kills)}"
