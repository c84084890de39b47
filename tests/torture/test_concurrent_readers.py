"""Readers in other processes follow a writer through continuous appends and growths.

A forked writer appends records from the crash test's deterministic generator (record ``j``
is a pure function of ``j``) in batches of varied sizes, flushing after each, into a store
created with room for 4 records and 64 heap bytes, so it grows into a new file again and
again. Three forked readers open the store before the writer starts, each taking a view of
every column then, and loop on ``refresh()`` until the writer is done. After each refresh a
reader checks that:

- ``len`` never goes back;
- every record new since its last refresh, and a random sample of older ones, equals the
  generator (values compared as int64 bit patterns);
- its early views still equal the generator, and after each growth it follows, map the
  store's new file at the place of those records (from ``/proc/self/maps``): equal values
  alone cannot tell a live view from one left on the old file.

At the end every reader must hold all the writer's records. A growth shows as a change of
``store.capacity`` or of the heap's size (``store.sections``), as either can grow alone; a
reader may follow several growths in one refresh. The timing is random and seeded;
``MMLAB_TORTURE_SEED`` replays the same plan.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import budget
import numpy as np
import pytest
from budget import size

# One definition of what record j holds, and of how a test forks and reaps its children.
from test_crash import FIELDS, fork_child, kill_and_reap, reap, records, smiles_of, values_of

from mmlab import RecordStore

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="forks its processes and reads /proc/self/maps"
)

READERS = 3
EARLY = 3  # records in the store when the readers open it: what their early views show
SAMPLE = 20  # older records each refresh checks again, chosen at random
RATE = 20_000  # records per second the writer keeps to, so the readers can check them all
BATCHES = (1, 2, 5, 20, 100, 500)
START_TIMEOUT = 30  # seconds for the readers to open the store
END_TIMEOUT = 120  # seconds past its plan for a child to finish


class Flags:
    """A page shared with the children: one "ready" byte per reader, and a "stop" byte."""

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, mmap.PAGESIZE)  # anonymous and MAP_SHARED: survives fork

    def set_ready(self, reader: int) -> None:
        self._page[1 + reader] = 1

    def all_ready(self) -> bool:
        return all(self._page[1 : 1 + READERS])

    def stop(self) -> None:
        self._page[0] = 1

    @property
    def stopped(self) -> bool:
        return bool(self._page[0])


def shape(store: RecordStore) -> tuple[int, int]:
    """The store's capacity in records and in heap bytes: a growth changes one or both."""
    return store.capacity, store.sections["heap"][1]


# -- the writer -----------------------------------------------------------------------------


def write_for(path: Path, seconds: float, seed: int) -> dict:
    """Append and flush batches for ``seconds``, at ``RATE`` records per second at most."""
    rng = random.Random(seed)
    batches = growths = 0
    with RecordStore.open(path, "r+") as store:
        count, grown_to = len(store), shape(store)
        start = time.monotonic()
        while time.monotonic() < start + seconds:
            # No more than half the store: each growth doubles it, none is skipped by a batch.
            n = min(rng.choice(BATCHES), count // 2 + 1)
            store.extend(records(count, count + n))
            store.flush()
            count += n
            batches += 1
            if shape(store) != grown_to:
                growths += 1
                grown_to = shape(store)
            time.sleep(max(0.0, start + (count - EARLY) / RATE - time.monotonic()))
    return {"records": count, "batches": batches, "growths": growths}


# -- the readers ----------------------------------------------------------------------------


def wrong_among(store: RecordStore, indices: np.ndarray) -> list[int]:
    """Which of the records ``indices`` of ``store`` differ from the generator."""
    bad_smiles = [store.smiles(i) != smiles_of(i) for i in indices.tolist()]
    got = np.stack([store.column(name)[indices] for name in FIELDS], axis=1)
    bad_values = (got.view(np.int64) != values_of(indices).view(np.int64)).any(axis=1)
    return indices[np.array(bad_smiles, bool) | bad_values].tolist()


def file_position(address: int) -> tuple[str, int, int] | None:
    """(device, inode, offset in the file) of the byte mapped at ``address``; None if none."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, _, offset, device, inode = line.split()[:5]
            start, end = (int(x, 16) for x in span.split("-"))
            if start <= address < end:
                return device, int(inode), int(offset, 16) + address - start
    return None


def read_until_stopped(path: Path, flags: Flags, reader: int, seed: int, seconds: float) -> dict:
    """Refresh and check until the writer is done; returns what was checked and found."""
    rng = random.Random(seed)
    tally = dict.fromkeys(
        ("checked", "refreshes", "moves", "wrong", "regressions", "stale early views"), 0
    )
    problems: list[str] = []
    give_up = time.monotonic() + START_TIMEOUT + seconds + END_TIMEOUT
    with RecordStore.open(path) as store:
        early = [store.column(name) for name in FIELDS]  # must stay live to the end
        early_bits = values_of(np.arange(len(store))).view(np.int64)
        seen, grown_to = len(store), shape(store)
        flags.set_ready(reader)
        while time.monotonic() < give_up:
            stopping = flags.stopped  # read first: the refresh after it sees the last flush
            n = store.refresh()
            tally["refreshes"] += 1
            if n < seen:
                tally["regressions"] += 1
                problems.append(f"len went back from {seen} to {n}")
            older = rng.sample(range(min(seen, n)), min(SAMPLE, seen, n))
            indices = np.concatenate([np.arange(seen, n), older]).astype(np.int64)
            wrong = wrong_among(store, indices)
            tally["checked"] += len(indices)
            tally["wrong"] += len(wrong)
            if wrong:
                problems.append(f"at {n} records, wrong records {wrong[:5]}")
            for name, view, want in zip(FIELDS, early, early_bits.T, strict=True):
                if not np.array_equal(view.view(np.int64), want):
                    tally["stale early views"] += 1
                    problems.append(f"at {n} records, the early {name} view shows {view}")
            if shape(store) != grown_to:
                tally["moves"] += 1
                grown_to = shape(store)
                for name, view in zip(FIELDS, early, strict=True):
                    # Both views' first bytes: the same byte of the same file, or not live.
                    now = file_position(store.column(name).ctypes.data)
                    then = file_position(view.ctypes.data)
                    if now is None or then != now:
                        tally["stale early views"] += 1
                        problems.append(
                            f"at {n} records, the early {name} view maps {then}, not {now}"
                        )
            seen = max(seen, n)
            if stopping:
                return {**tally, "final count": n, "problems": problems[:10]}
    raise TimeoutError("the test never said stop")


# -- the test -------------------------------------------------------------------------------


def outcome(result_path: Path, status: int) -> dict:
    """What a child returned (``{"result": ...}``) or why it failed (``{"error": ...}``)."""
    if result_path.exists():
        return json.loads(result_path.read_text())
    if os.WIFSIGNALED(status):
        return {"error": f"killed by signal {os.WTERMSIG(status)} before reporting"}
    return {"error": f"exited with status {os.waitstatus_to_exitcode(status)} before reporting"}


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def test_readers_follow_a_writer_through_appends_and_growths(tmp_path, report):
    seconds = size(5, 60)
    seed = budget.seed()
    rng = random.Random(seed)
    path = tmp_path / "records.mms"
    with RecordStore.create(path, FIELDS, capacity=4, heap_capacity=64) as store:
        store.extend(records(0, EARLY))
    flags = Flags()
    results: dict[str, Path] = {}  # name -> where each child writes its outcome
    running: dict[str, int] = {}  # name -> pid of each child not yet reaped
    statuses: dict[str, int] = {}

    def start(name: str, target: Callable[[], object]) -> None:
        results[name] = tmp_path / f"{name}.json"
        running[name] = fork_child(target, results[name])

    def finish(name: str, timeout: float) -> None:
        status = reap(running[name], timeout)
        if status is None:
            raise AssertionError(f"{name} still running {timeout} s after it should have ended")
        statuses[name] = status
        del running[name]

    readers = [f"reader {k}" for k in range(READERS)]
    try:
        for k, name in enumerate(readers):
            start(name, partial(read_until_stopped, path, flags, k, rng.getrandbits(32), seconds))
        wait_for(flags.all_ready, START_TIMEOUT, "the readers to open the store")
        start("writer", partial(write_for, path, seconds, rng.getrandbits(32)))
        finish("writer", seconds + END_TIMEOUT)
        flags.stop()
        for name in readers:
            finish(name, END_TIMEOUT)
    finally:
        for pid in running.values():
            kill_and_reap(pid)

    outcomes = {name: outcome(results[name], status) for name, status in statuses.items()}
    errors = {name: out["error"] for name, out in outcomes.items() if "error" in out}
    assert "writer" not in errors, errors["writer"]
    writer = outcomes["writer"]["result"]
    done = {name: outcomes[name]["result"] for name in readers if name not in errors}

    def total(key: str) -> int:
        return sum(r[key] for r in done.values())

    report(
        f"concurrent readers: {READERS} readers followed a writer for {seconds} s "
        f"(seed {seed}): {writer['records']:,} records in {writer['batches']:,} flushed "
        f"batches, {writer['growths']} growths; the readers checked {total('checked'):,} "
        f"records bit for bit in {total('refreshes'):,} refreshes and followed the store "
        f"into a bigger file {'/'.join(str(r['moves']) for r in done.values())} times; "
        f"{total('wrong')} wrong records, {total('regressions')} count regressions, "
        f"{total('stale early views')} stale early views, {len(errors)} reader errors"
    )
    assert not errors, "\n".join(f"{name}:\n{text}" for name, text in errors.items())
    problems = [f"{name}: {text}" for name, r in done.items() for text in r["problems"]]
    assert not problems, "\n".join(problems)
    assert [r["final count"] for r in done.values()] == [writer["records"]] * READERS
    assert all(r["moves"] > 0 for r in done.values()), "a reader never followed a growth"
    assert writer["growths"] >= 10
