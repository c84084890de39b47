"""Races between processes over one store path: creating it, replacing it, opening it to write.

A store has one writer at a time, holding an advisory ``flock`` on its file, and a new store
is built under a unique temporary name, locked, and only then linked (or, with
``overwrite=True``, renamed) to its path. So, when several processes act at once:

- of those creating one path, exactly one wins and the others get ``FileExistsError``;
- with ``overwrite=True`` each wins or gets ``StoreLockedError``: a store a writer holds is
  never replaced, so every winner finds its own store at the path for as long as it holds it;
- a store held open for writing by another process is never replaced (``StoreLockedError``);
- of those opening one store for writing, exactly one gets it, the others ``StoreLockedError``.

After every race the path holds a valid store with the expected records, and no temporary
file is left beside it.

Each race forks its contenders from the test process (after import, so they start within
microseconds of each other). They wait on one pipe and all start when the test closes its end,
report what they got through pipes of their own, and keep it until the test releases them, so
that a winner still holds its store while the others try. Quick: 20 races of each kind; full:
400.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import Any, NoReturn

import children
from budget import size

from mmlab import RecordStore, StoreError

# What one process does in a race, given its number: see "the contenders" below.
Contender = Callable[[int], contextlib.AbstractContextManager]
FIELDS = ("a", "b")
PROCESSES = 4
RACE_TIMEOUT = 60  # seconds for one race, start to exit; a race takes milliseconds
# Seconds an overwrite contender waits before it tries, and holds its store once it won. Four
# creates at once take 5 to 40 ms here, so these spread the attempts over a winner's whole life.
OVERWRITE_DELAYS = (0.0, 0.0, 0.005, 0.02, 0.05)
OVERWRITE_HOLDS = (0.0, 0.005, 0.02)


def tag(i: int) -> str:
    """The record contender ``i`` writes, so the store at the path says who put it there."""
    return f"C{i}"


def smiles_at(path: Path) -> list[str] | None:
    """The strings of the store at ``path``, or None if no valid store is there."""
    try:
        with RecordStore.open(path) as store:
            return [store.smiles(i) for i in range(len(store))]
    except (OSError, StoreError):
        return None


def temp_files(directory: Path) -> list[str]:
    """The store's temporary files (``.<name>.<token>.creating`` or ``.growing``) left here."""
    return [
        name
        for name in os.listdir(directory)
        if name.startswith(".") and name.endswith((".creating", ".growing"))
    ]


# -- the contenders: what one process does in a race ----------------------------------------
#
# Each is a context manager: entering it is the attempt, and what it yields is reported as the
# winner's detail; it stays entered (its store open) until the race is released.


@contextlib.contextmanager
def create_new(path: Path, i: int) -> Iterator[str]:
    with RecordStore.create(path, FIELDS) as store:
        store.append(tag(i), [i, -i])
        store.flush()
        yield "created"


@contextlib.contextmanager
def replace_briefly(
    path: Path, timings: list[tuple[float, float]], i: int
) -> Iterator[list[list[str] | None]]:
    """After a delay, replace the store, publish our record and watch the path until we close.

    ``timings[i]`` is our delay and how long we hold the store: so some contenders try while
    a winner holds its store, and others after it closed.
    """
    delay, hold = timings[i]
    time.sleep(delay)
    with RecordStore.create(path, FIELDS, overwrite=True) as store:
        store.append(tag(i), [i, -i])
        store.flush()
        seen = [smiles_at(path)]
        time.sleep(hold)
        seen.append(smiles_at(path))
    yield seen


@contextlib.contextmanager
def replace_held(path: Path, i: int) -> Iterator[str]:
    with RecordStore.create(path, FIELDS, overwrite=True):
        yield "replaced a store held for writing"


@contextlib.contextmanager
def open_for_writing(path: Path, i: int) -> Iterator[int]:
    with RecordStore.open(path, "r+") as store:
        yield len(store)
        store.append(tag(i), [i, -i])  # once released: the store it won still works


# -- running a race ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    # "store", the class name of the exception the attempt raised, or how the child failed:
    # "hung" (no report in time), "closed" (ended without one), "killed" or "exit status".
    got: str
    detail: Any = None  # what a winner's contender yielded, or the exception's traceback


def _contend(
    contender: Contender,
    i: int,
    start: int,
    release: int,
    test_ends: list[int],
    sender: Connection,
) -> NoReturn:
    """A contender's whole life in its child: never returns into pytest."""
    try:
        for fd in test_ends:  # else the test closing its ends would not wake us
            os.close(fd)
        os.read(start, 1)  # returns when the test closes its end: every contender at once
        try:
            with contender(i) as detail:
                sender.send(("store", detail))
                os.read(release, 1)
        except Exception as exc:
            sender.send((type(exc).__name__, traceback.format_exc()))
    finally:
        os._exit(0)


class Race:
    """``n`` forked processes that enter ``contender(i)`` together and hold what they got.

    Use it as a context manager (which kills and reaps whatever is left on the way out):
    ``start()`` lets them go and returns what each got; ``release()`` lets them close it and
    exit, and returns anything that went wrong then.
    """

    def __init__(self, contender: Contender, n: int = PROCESSES):
        self._contender, self._n = contender, n
        self._children: dict[int, Connection] = {}  # pid -> the pipe it reports through
        self._test_ends: list[int] = []

    def __enter__(self) -> Race:
        start, start_test_end = os.pipe()
        release, release_test_end = os.pipe()
        self._start, self._release = start_test_end, release_test_end
        self._test_ends = [start_test_end, release_test_end]
        self._deadline = time.monotonic() + RACE_TIMEOUT
        try:
            for i in range(self._n):
                results, sender = Pipe(duplex=False)
                pid = children.fork()
                if pid == 0:
                    _contend(self._contender, i, start, release, self._test_ends, sender)
                sender.close()
                self._children[pid] = results
        except BaseException:
            self.__exit__()
            raise
        finally:
            os.close(start)
            os.close(release)
        return self

    def _close_test_end(self, fd: int) -> None:
        if fd in self._test_ends:
            self._test_ends.remove(fd)
            os.close(fd)

    def start(self) -> list[Outcome]:
        """Let every contender go; returns what each got, in contender order."""
        self._close_test_end(self._start)
        return [self._receive(results) for results in self._children.values()]

    def release(self) -> list[Outcome]:
        """Let the contenders close what they got and exit; returns what went wrong then."""
        self._close_test_end(self._release)
        late = []
        for pid, results in list(self._children.items()):
            while (report := self._receive(results)).got not in ("closed", "hung"):
                late.append(report)
            if report.got == "hung":
                late.append(report)
            del self._children[pid]
            results.close()
            status = children.reap(pid, self._deadline)
            if os.WIFSIGNALED(status):
                late.append(Outcome("killed", signal.Signals(os.WTERMSIG(status)).name))
            elif os.WEXITSTATUS(status):
                late.append(Outcome("exit status", os.WEXITSTATUS(status)))
        return late

    def _receive(self, results: Connection) -> Outcome:
        """The next report; Outcome("closed") once the child has closed its pipe."""
        if not results.poll(max(0.0, self._deadline - time.monotonic())):
            return Outcome("hung", f"no report in {RACE_TIMEOUT} s")
        try:
            return Outcome(*results.recv())
        except EOFError:
            return Outcome("closed")

    def __exit__(self, *exc_info: object) -> None:
        for fd in list(self._test_ends):
            self._close_test_end(fd)
        for pid, results in self._children.items():
            results.close()
            children.reap(pid, self._deadline)
        self._children.clear()


# -- what the races found ---------------------------------------------------------------------


@dataclass
class Tally:
    """What every contender got, and every way a race went wrong."""

    kind: str
    races: int = 0
    outcomes: Counter = field(default_factory=Counter)
    broken: int = 0  # races after which the path held no valid store, or not the right one
    problems: list[str] = field(default_factory=list)

    def add(self, outcomes: list[Outcome], late: list[Outcome], allowed: set[str]) -> list[int]:
        """Count one race; a loser may only raise ``allowed``. Returns the winners' numbers."""
        self.races += 1
        self.outcomes.update(outcome.got for outcome in outcomes)
        for i, outcome in enumerate(outcomes):
            if outcome.got not in allowed | {"store"}:
                self.problem(f"contender {i} got {outcome.got}:\n{outcome.detail}")
        for outcome in late:
            self.problem(f"after the release: {outcome.got}: {outcome.detail}")
        return [i for i, outcome in enumerate(outcomes) if outcome.got == "store"]

    def problem(self, text: str) -> None:
        self.problems.append(f"race {self.races}: {text}")

    def check_store(self, path: Path, expected: Callable[[list[str]], bool]) -> None:
        """The path holds a valid store whose strings pass ``expected``, and no temp file."""
        smiles = smiles_at(path)
        if smiles is None or not expected(smiles):
            self.broken += 1
            self.problem(f"the store at the path is broken or wrong: {smiles}")
        if left := temp_files(path.parent):
            self.problem(f"temporary files left: {left}")

    def finish(self, report: Callable[[str], None]) -> None:
        """Print the torture line, then fail on any problem."""
        raised = [f"{n} {kind}" for kind, n in sorted(self.outcomes.items()) if kind != "store"]
        got = ", ".join([f"{self.outcomes['store']} won", *raised])
        report(
            f"{self.kind}: {self.races} races of {PROCESSES} processes: {got}; "
            f"{self.broken} broken stores, {len(self.problems)} problems"
        )
        assert not self.problems, "\n".join(self.problems[:3])


# -- the tests --------------------------------------------------------------------------------


def test_creating_one_path_at_once_has_exactly_one_winner(tmp_path, report):
    path = tmp_path / "store.mms"
    tally = Tally("create race")
    for _ in range(size(20, 400)):
        path.unlink(missing_ok=True)
        with Race(partial(create_new, path)) as race:
            outcomes = race.start()
            late = race.release()
        winners = tally.add(outcomes, late, allowed={"FileExistsError"})
        if len(winners) != 1:
            tally.problem(f"{len(winners)} winners")
        tally.check_store(path, lambda smiles, w=winners: smiles == [tag(i) for i in w])
    tally.finish(report)


def test_racing_overwrites_never_replace_a_store_its_winner_holds(tmp_path, report):
    path = tmp_path / "store.mms"
    tally = Tally("overwrite race")
    for number in range(size(20, 400)):
        if number % 2:  # every other race replaces an existing store, unlocked
            with RecordStore.create(path, FIELDS, overwrite=True) as store:
                store.append("previous", [0, 0])
        else:
            path.unlink(missing_ok=True)
        rng = random.Random(number)
        timings = [
            (rng.choice(OVERWRITE_DELAYS), rng.choice(OVERWRITE_HOLDS)) for _ in range(PROCESSES)
        ]
        with Race(partial(replace_briefly, path, timings)) as race:
            outcomes = race.start()
            late = race.release()
        winners = tally.add(outcomes, late, allowed={"StoreLockedError"})
        if not winners:
            tally.problem("no winner")
        for i in winners:
            if outcomes[i].detail != [[tag(i)], [tag(i)]]:
                tally.problem(f"winner {i} saw {outcomes[i].detail} at the path while holding it")
        tally.check_store(path, lambda smiles, w=winners: smiles in [[tag(i)] for i in w])
    tally.finish(report)


def test_overwrite_never_replaces_a_store_held_open_for_writing(tmp_path, report):
    path = tmp_path / "store.mms"
    RecordStore.create(path, FIELDS).close()
    tally = Tally("overwrite of a held store")
    for number in range(size(20, 400)):
        # The contenders are forked before the writer opens: they share none of its files.
        with Race(partial(replace_held, path)) as race, RecordStore.open(path, "r+") as writer:
            outcomes = race.start()
            late = race.release()
            writer.append(tag(number), [number, -number])
        winners = tally.add(outcomes, late, allowed={"StoreLockedError"})
        if winners:
            tally.problem(f"contenders {winners} replaced the store a writer held")
        expected = [tag(n) for n in range(number + 1)]
        tally.check_store(path, lambda smiles, expected=expected: smiles == expected)
    tally.finish(report)


def test_opening_one_store_for_writing_at_once_has_exactly_one_winner(tmp_path, report):
    path = tmp_path / "store.mms"
    RecordStore.create(path, FIELDS).close()
    tally = Tally("open for writing race")
    expected = []
    for _ in range(size(20, 400)):
        with Race(partial(open_for_writing, path)) as race:
            outcomes = race.start()
            late = race.release()
        winners = tally.add(outcomes, late, allowed={"StoreLockedError"})
        if len(winners) != 1:
            tally.problem(f"{len(winners)} winners")
        expected += [tag(i) for i in winners]  # each winner appended its record
        tally.check_store(path, lambda smiles, expected=list(expected): smiles == expected)
    tally.finish(report)
