"""Notebook 08's killed writers: SIGKILL keeps the page cache, not a process's own buffer;
publishing a count before its data leaves an inconsistent file, after it a consistent one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmlab.course import hazards, killed


def test_a_killed_mapping_writer_loses_nothing(tmp_path):
    found = killed.killed_mapping_writer(tmp_path / "k.bin", 64 * 4096 + 100)
    assert found["returncode"] == -signal.SIGKILL
    assert found["bytes"] == 64 * 4096 and found["lost"] == 0
    assert "0 lost" in "\n".join(killed.mapping_lines(found))
    assert "a killed process" in killed.why_nothing_lost(found)
    assert not (tmp_path / "k.bin").exists()


def test_every_page_of_the_pattern_differs_from_a_hole():
    pattern = killed._pattern(300 * 4096)
    assert all(pattern[i : i + 4096] != bytes(4096) for i in range(0, len(pattern), 4096))


def test_a_killed_buffered_writer_loses_its_buffer_unless_flushed(tmp_path):
    found = killed.killed_buffered_writer(tmp_path, 3000)
    assert found["no flush"] == 0 and found["flush"] == 3000
    lines = killed.buffered_lines(found)
    assert "died with it" in lines[0] and "handed them to the kernel" in lines[1]
    assert not list(tmp_path.iterdir())


def test_publishing_the_count_first_is_caught_by_a_kill(tmp_path):
    found = killed.killed_counters(tmp_path, trials=3)
    assert all(found["data first"])
    assert not all(found["count first"])  # the pause inside each record is the window
    lines = killed.counter_lines(found)
    assert "after each record's data: 3 of 3" in lines[0] and "before" in lines[1]


def test_killed_store_writers_leave_consistent_prefixes(tmp_path):
    found = killed.killed_store_writer(tmp_path, trials=2, batch=50, seed=1)
    assert len(found) == 2
    for trial in found:
        assert trial.consistent, trial
        assert trial.count % 50 == 0  # exactly as many as some flush published
    values = killed.store_values(found)
    assert values["store_all_consistent"] and values["store_kills"] == 2
    assert values["store_batch"] == 50
    assert all("consistent" in line for line in killed.store_lines(found)[:2])
    assert not (tmp_path / "killed.mms").exists()


def test_an_inconsistent_store_is_reported_as_such():
    behind = killed.KilledStore(last_reported=400, count=200, prefix_ok=True, error=None)
    torn = killed.KilledStore(last_reported=0, count=30, prefix_ok=True, error=None, batch=20)
    ahead = killed.KilledStore(last_reported=0, count=40, prefix_ok=True, error=None, batch=20)
    broken = killed.KilledStore(last_reported=0, count=None, prefix_ok=False, error="X: y")
    assert not any(t.consistent for t in (behind, torn, ahead, broken))
    assert killed.KilledStore(20, 40, True, None, 20).consistent
    lines = killed.store_lines([behind, broken])
    assert "NOT consistent" in lines[0] and "did not open: X: y" in lines[1]


def test_a_child_is_killed_when_the_with_block_is_left_by_an_error():
    with pytest.raises(KeyboardInterrupt), hazards.started("import time; time.sleep(60)") as child:
        raise KeyboardInterrupt  # as a Ctrl-C before the demo kills its child
    assert child.returncode == -signal.SIGKILL and child.stdout.closed


_PARENT = """
import sys, time
from mmlab.course.hazards import started
with started("import os, time; print(os.getpid(), flush=True); time.sleep(60)") as child:
    print(child.stdout.readline().decode().strip(), flush=True)
    time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_child_dies_with_its_killed_parent():
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, cwd=Path(__file__).parents[1]
    )
    try:
        child_pid = int(parent.stdout.readline())
        assert _alive(child_pid)
    finally:
        parent.kill()  # no finally of its own runs: PR_SET_PDEATHSIG must end the child
        parent.wait()
        parent.stdout.close()
    deadline = time.monotonic() + 5
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(child_pid)


def test_a_mapping_writer_that_dies_first_is_an_error_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(killed, "_MAP_WRITER", "import sys; sys.exit(3)")
    with pytest.raises(RuntimeError, match="died before it was ready"):
        killed.killed_mapping_writer(tmp_path / "k.bin", 4 * 4096)
    assert not list(tmp_path.iterdir())


def test_the_store_writer_stops_by_itself():
    loop = killed._STORE_WRITER
    assert "while time.monotonic() < end and i < 2_000_000" in loop and "while True" not in loop
