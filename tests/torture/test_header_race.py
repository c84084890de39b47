"""Readers refreshing while a writer commits back to back: never a count that goes back.

A commit writes one header slot while the other holds the previous commit. A reader reads
the two slots with two reads, so a writer that commits twice in between, or is copying a
slot while it is read, can hand the reader an old slot next to a torn one. The store reads
such a header again; this test makes the race as likely as it gets: the store lives on tmpfs
(where a flush costs microseconds, not an msync to disk), the writer appends one record and
flushes in a tight loop, and two readers refresh in a tight loop, each checking that ``len``
never goes back and that ``refresh()`` never raises.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from budget import size
from test_crash import fork_child, kill_and_reap, reap

from mmlab import RecordStore

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="forks; needs /dev/shm")

READERS = 2


def _fast_directory(tmp_path: Path) -> Path:
    """A tmpfs directory if the machine has one, so commits come as fast as they can."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(os.path.realpath(shm))
    return tmp_path


def _refresh_until(path: Path, deadline: float) -> dict:
    store, seen, refreshes = RecordStore.open(path), 0, 0
    while time.monotonic() < deadline:
        count = store.refresh()  # an exception fails the reader, with its traceback
        if count < seen:
            return {"refreshes": refreshes, "went_back": f"{seen} -> {count}"}
        seen, refreshes = count, refreshes + 1
    return {"refreshes": refreshes, "seen": seen}


def test_refresh_never_goes_back_while_a_writer_commits_back_to_back(tmp_path, report):
    seconds = size(3, 60)
    path = _fast_directory(tmp_path) / f"header-race-{os.getpid()}.mms"
    RecordStore.create(path, ["x"], capacity=1 << 22, overwrite=True).close()
    deadline = time.monotonic() + seconds
    results = [tmp_path / f"reader{k}.json" for k in range(READERS)]
    pids = [fork_child(lambda: _refresh_until(path, deadline), r) for r in results]
    commits, statuses = 0, dict.fromkeys(pids)
    try:
        with RecordStore.open(path, "r+") as writer:
            while time.monotonic() < deadline and len(writer) < writer.capacity:
                writer.append("C", [float(commits)])
                writer.flush()
                commits += 1
        statuses = {pid: reap(pid, seconds + 60) for pid in pids}
    finally:
        for pid, status in statuses.items():
            if status is None:
                kill_and_reap(pid)
        path.unlink(missing_ok=True)
    outcomes = [json.loads(r.read_text()) for r in results]
    errors = [o["error"] for o in outcomes if "error" in o]
    went_back = [o["result"]["went_back"] for o in outcomes if "went_back" in o.get("result", {})]
    refreshes = sum(o["result"]["refreshes"] for o in outcomes if "result" in o)
    report(
        f"header race: {commits:,} back-to-back commits in {seconds} s on {path.parent}, "
        f"{READERS} readers refreshed {refreshes:,} times: {len(went_back)} counts went back, "
        f"{len(errors)} reader errors"
    )
    assert list(statuses.values()) == [0] * READERS and not errors, errors
    assert not went_back, went_back
