"""Fuzzing the store's file handling: a damaged file is refused or read, never a crash.

``fuzz_worker.py`` builds a few seed stores with the public API, damages a copy of one per
case (bit flips and overwrites in either header slot or both, with and without the CRC-32
recomputed so the damage reaches the checks behind it; damaged string offsets and heap bytes;
truncations; garbage tails; several at once), and uses the copy read-only and read-write. The
store may answer only with success or a ``StoreError``, ``IndexError`` or ``KeyError``, and a
write session must not lose the store or an acknowledged write.

The failures hunted for (SIGBUS, SIGSEGV, a hang) would take pytest down, so the cases run
in two worker processes, each on half of them. A worker writes each case's number to a progress file
before it starts the case and each outcome to a results file after it; when a worker dies,
or one case outlives ``CASE_TIMEOUT``, this test records that case and how, and starts a new
worker at the next case. Case ``n`` of fuzz seed ``s`` is the same mutation on every run, so
each failure comes with the command that replays it. Every run draws a new seed (more of the
space gets covered over time); ``MMLAB_TORTURE_SEED`` pins one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import budget
import pytest
from budget import size

WORKER = Path(__file__).with_name("fuzz_worker.py")
CASE_TIMEOUT = 10.0  # seconds; a case takes about a millisecond
STARTUP_TIMEOUT = 60.0  # seconds for a worker to reach its first case (numpy, seed stores)
LOST_WORKERS_PER_LANE = 10  # then the lane stops: dying on every case means a broken worker
LANES = 2  # worker processes at once
POLL = 0.02  # seconds between looks at the workers
# About 70% of mutants open (the rest are refused); far fewer would mean the mutations mostly
# stop at the checksum and never reach the checks behind it.
MIN_OPENED_SHARE = 0.5
SHOWN_FAILURES = 8  # kinds of failure shown, one example each


@dataclass(frozen=True)
class Failure:
    """A case the store failed: how, on which mutation, and the traceback or message."""

    case: int | None  # None: the worker failed before its first case
    what: str
    mutation: str
    detail: str


class Lane:
    """One worker process working through a range of cases, replaced when it dies or hangs."""

    def __init__(self, fuzz_seed: int, cases: range, files: Path, scratch: Path) -> None:
        self.fuzz_seed, self.cases, self.scratch = fuzz_seed, cases, scratch
        files.mkdir(parents=True)
        self.progress = files / "progress"
        self.results = files / "results.jsonl"
        self.stderr = files / "stderr"
        self.deaths: list[Failure] = []
        self.hangs: list[Failure] = []
        self.unrun = range(0)  # the cases left when the lane gave up
        self.process: subprocess.Popen[bytes] | None = None
        self._start(cases.start)

    def _start(self, first: int) -> None:
        self.progress.write_bytes(b"")  # a worker that dies before its first case names none
        self._seen: tuple[int, str] | None = None
        self._stderr_from = self.stderr.stat().st_size if self.stderr.exists() else 0
        command = [sys.executable, str(WORKER), "--seed", str(self.fuzz_seed)]
        command += ["--first", str(first), "--stop", str(self.cases.stop)]
        command += ["--dir", str(self.scratch), "--progress", str(self.progress)]
        command += ["--results", str(self.results)]
        with self.stderr.open("ab") as stderr:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        self._since = time.monotonic()

    def _current(self) -> tuple[int, str] | None:
        """The case the worker is running (its number and mutation), None before the first."""
        text = self.progress.read_text("ascii", "replace").strip()
        if not text:
            return None
        number, _, mutation = text.partition(" ")
        if not number.isdigit():  # read while the worker rewrote it: look again next time
            return self._seen
        return int(number), mutation

    def poll(self) -> bool:
        """Look at the worker, replacing it if it died or hung; True once the range is done."""
        if self.process is None:
            return True
        status = self.process.poll()
        current = self._current()
        if status is None:
            limit = STARTUP_TIMEOUT if current is None else CASE_TIMEOUT
            if current != self._seen:
                self._seen, self._since = current, time.monotonic()
            elif time.monotonic() - self._since > limit:
                self._abort()
                self._lost_worker(current, f"hung (no progress in {limit:g} s)", self.hangs)
            return False
        if status == 0:
            self.process = None
            return True
        how = (
            f"killed the worker with {signal.Signals(-status).name}"
            if status < 0
            else f"made the worker exit with status {status}"
        )
        self._lost_worker(current, how, self.deaths)
        return self.process is None

    def _abort(self) -> None:
        """End a hung worker: SIGABRT first, so that faulthandler prints where it was stuck."""
        self.process.send_signal(signal.SIGABRT)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _lost_worker(
        self, current: tuple[int, str] | None, how: str, failures: list[Failure]
    ) -> None:
        with self.stderr.open("rb") as f:  # this worker's stderr: faulthandler's traceback
            f.seek(self._stderr_from)
            detail = f.read().decode(errors="replace")[-4000:]
        if current is None:  # the worker itself is broken: another would fail the same way
            failures.append(Failure(None, how, "before the first case", detail))
            self.process = None
            return
        case, mutation = current
        failures.append(Failure(case, how, mutation, detail))
        if len(self.deaths) + len(self.hangs) >= LOST_WORKERS_PER_LANE:
            self.unrun = range(case + 1, self.cases.stop)
            self.process = None
        elif case + 1 < self.cases.stop:
            self._start(case + 1)
        else:
            self.process = None

    def stop(self) -> None:
        """Kill the worker if it still runs (when the test itself is interrupted)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def outcomes(self) -> list[dict]:
        if not self.results.exists():
            return []
        with self.results.open() as f:
            return [json.loads(line) for line in f]


def run_lanes(fuzz_seed: int, cases: int, files: Path, scratch: Path) -> list[Lane]:
    """Run cases ``0..cases`` split over ``LANES`` workers; returns the finished lanes."""
    bounds = [cases * k // LANES for k in range(LANES + 1)]
    lanes = [
        Lane(fuzz_seed, range(bounds[k], bounds[k + 1]), files / f"lane{k}", scratch / f"lane{k}")
        for k in range(LANES)
    ]
    try:
        while not all([lane.poll() for lane in lanes]):  # a list: poll every lane each time
            time.sleep(POLL)
    finally:
        for lane in lanes:
            lane.stop()
    return lanes


@pytest.fixture
def scratch(tmp_path):
    """Where workers write mutants: tmpfs if there is one, else pytest's temporary directory.

    The fuzz test is about bytes, not disks. On tmpfs the read-write session's msync costs
    nothing, where on a disk 100,000 cases would write back tens of gigabytes.
    """
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path / "scratch"
        return
    path = Path(tempfile.mkdtemp(prefix="mmlab-fuzz-", dir=shm))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{n:,} {name}" for name, n in counter.most_common())


def _alike(failure: Failure) -> tuple[str, str]:
    """What failures of one defect share: how they failed, and their last line of detail
    up to numbers and paths."""
    lines = failure.detail.strip().splitlines() or [""]
    return failure.what, re.sub(r"\d+", "N", re.sub(r"/\S+", "PATH", lines[-1]))


def _describe(failures: list[Failure], fuzz_seed: int) -> str:
    """One example of each kind of failure, with its mutation and how to replay it."""
    groups: dict[tuple[str, str], list[Failure]] = {}
    for failure in failures:
        groups.setdefault(_alike(failure), []).append(failure)
    lines = [f"{len(failures)} failing fuzz cases of {len(groups)} kinds (fuzz seed {fuzz_seed}):"]
    for group in list(groups.values())[:SHOWN_FAILURES]:
        failure, more = group[0], f" (and {len(group) - 1:,} more like it)" if group[1:] else ""
        where = "starting up (no case yet)" if failure.case is None else f"case {failure.case}"
        lines.append(f"\n{where} {failure.what}{more}")
        lines.append(f"  mutation: {failure.mutation}")
        lines.append("  " + failure.detail.strip().replace("\n", "\n  "))
        if failure.case is not None:
            lines.append(
                f"  replay: {sys.executable} {WORKER} --seed {fuzz_seed} --case {failure.case}"
            )
    if len(groups) > SHOWN_FAILURES:
        lines.append(f"\n... and {len(groups) - SHOWN_FAILURES} more kinds")
    return "\n".join(lines)


@dataclass
class Tally:
    """The workers' outcomes, added up."""

    cases: int = 0
    opened: int = 0
    kinds: Counter[str] = field(default_factory=Counter)  # mutation kind: cases
    refused: Counter[str] = field(default_factory=Counter)  # error type: refused opens ("r")
    errors: Counter[str] = field(default_factory=Counter)  # error type: errors after opening
    bad: list[Failure] = field(default_factory=list)
    lost: list[Failure] = field(default_factory=list)

    def add(self, outcome: dict) -> None:
        self.cases += 1
        self.kinds[outcome["kind"]] += 1
        if outcome["opened"]["r"] == "opened":
            self.opened += 1
        else:
            self.refused[outcome["opened"]["r"]] += 1
        self.errors.update(outcome["errors"])
        case, mutation = outcome["case"], outcome.get("mutation", "")
        self.bad += [
            Failure(case, "raised an unacceptable exception", mutation, text)
            for text in outcome["bad"]
        ]
        self.lost += [Failure(case, "lost data", mutation, text) for text in outcome["lost"]]


def test_damaged_stores_are_read_or_refused_never_a_crash(tmp_path, scratch, report):
    fuzz_seed = budget.seed()
    cases = size(2_000, 100_000)
    started = time.monotonic()
    lanes = run_lanes(fuzz_seed, cases, tmp_path / "lanes", scratch)
    seconds = time.monotonic() - started

    tally = Tally()
    for lane in lanes:
        for outcome in lane.outcomes():
            tally.add(outcome)
    deaths = [failure for lane in lanes for failure in lane.deaths]
    hangs = [failure for lane in lanes for failure in lane.hangs]
    unrun = sum(len(lane.unrun) for lane in lanes)
    report(
        f"fuzz (seed {fuzz_seed}): {cases:,} mutated stores ({_counts(tally.kinds)}), "
        f"{tally.opened:,} opened, {tally.refused.total():,} refused "
        f"({_counts(tally.refused)}), {tally.errors.total():,} errors reading or writing "
        f"opened ones ({_counts(tally.errors)}), {len(deaths)} crashes, {len(hangs)} hangs, "
        f"{len(tally.bad)} other exceptions, {len(tally.lost)} write sessions that lost data"
        + (f", {unrun:,} cases not run (workers kept dying)" if unrun else "")
        + f"; {LANES} workers, {seconds:.1f} s"
    )

    failures = deaths + hangs + tally.bad + tally.lost
    if failures:
        message = _describe(failures, fuzz_seed)
        if unrun:
            message += f"\n\n{unrun:,} cases not run: a lane stops after "
            message += f"{LOST_WORKERS_PER_LANE} lost workers"
        pytest.fail(message)
    # Every case either reported its outcome or killed its worker, which the failures show.
    assert tally.cases == cases
    assert tally.opened >= MIN_OPENED_SHARE * cases, (
        f"only {tally.opened:,} of {cases:,} mutants opened"
    )
