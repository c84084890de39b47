"""Notebook 08's hazards of writing through a mapping, each in a child process."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from mmlab.course import hazards


def test_return_codes_in_plain_words():
    assert "SIGBUS" in hazards.died_of(-signal.SIGBUS) and "bus error" in hazards.died_of(-7)
    assert "SIGKILL" in hazards.died_of(-9)
    assert hazards.died_of(0) == "exited normally with status 0"
    assert hazards.outcome(-7) == "SIGBUS"
    assert hazards.outcome(0) == "nothing" and hazards.outcome(1) == "error"


def test_touching_a_truncated_mapping_is_sigbus(tmp_path):
    found = hazards.truncated_mapping(tmp_path)
    assert found["returncode"] == -signal.SIGBUS
    assert found["said"] == ["truncated"]
    assert "died of SIGBUS" in hazards.why_truncated(found)


def _mounts() -> str:
    return Path("/proc/self/mounts").read_text()


def test_a_full_tiny_filesystem_is_sigbus_and_the_store_refuses_at_create():
    tiny = hazards.tiny_filesystem(2**20)
    assert "mmlab_tiny_" not in _mounts()  # nothing left mounted, whatever happened
    lines = hazards.tiny_lines(tiny)
    if tiny.how is None:
        assert "could be mounted" in tiny.skipped
        assert lines[0] == f"not shown here: {tiny.skipped}" and "not the signal" in lines[1]
        return
    assert tiny.sigbus
    assert "NoSpaceError" in tiny.create
    records, nbytes = tiny.fits
    assert records > 0 and 0 < nbytes <= 2**20  # the last store that fitted, space reserved
    assert "SIGBUS" in "\n".join(lines) and tiny.gone in lines[0]
    assert f"{2 * records:,} records: NoSpaceError" in lines[-1]
    assert "twice as many records" in lines[-1]


def test_a_skipped_tiny_filesystem_says_why_and_what_you_see():
    tiny = hazards.TinyFs(None, "no unshare command", None, None)
    assert hazards.tiny_lines(tiny) == [
        "not shown here: no unshare command",
        "so you see the explanation above, not the signal",
    ]


def test_a_slow_tiny_filesystem_is_skipped_with_the_reason(monkeypatch):
    def slow(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs.get("timeout", 0))

    monkeypatch.setattr(hazards.shutil, "which", lambda name: "/usr/bin/unshare")
    monkeypatch.setattr(hazards.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(hazards.subprocess, "run", slow)
    tiny = hazards.tiny_filesystem(2**20)
    assert tiny.how is None and "took longer than 120 s" in tiny.skipped


def test_a_slow_demonstration_under_a_host_mount_is_a_reason(monkeypatch):
    def run(command, **kwargs):
        if kwargs.get("timeout"):
            raise subprocess.TimeoutExpired(command, kwargs["timeout"])
        return subprocess.CompletedProcess(command, 0, "", "")  # mount, umount

    monkeypatch.setattr(hazards.subprocess, "run", run)
    reason = hazards._host_mount(2**20)
    assert reason == "the demonstration took longer than 60 s there"


def test_the_tiny_lines_name_the_sizes_it_was_given():
    tiny = hazards.TinyFs("mount", None, -signal.SIGBUS, None, (16, 8192), "gone", 4 * 2**20)
    lines = hazards.tiny_lines(tiny)
    assert lines[0].startswith("a 4 MiB tmpfs") and "a 16 MiB sparse file" in lines[1]
    small = hazards.TinyFs("mount", None, 0, None, None, "gone", 512 * 1024)
    assert "a 512 KiB tmpfs" in hazards.tiny_lines(small)[0]


def test_a_truncated_mapping_that_times_out_leaves_no_file(tmp_path, monkeypatch):
    def slow(code, *args, timeout=60):
        raise subprocess.TimeoutExpired("python", timeout)

    monkeypatch.setattr(hazards, "_python", slow)
    with pytest.raises(subprocess.TimeoutExpired):
        hazards.truncated_mapping(tmp_path)
    assert not list(tmp_path.iterdir())
