"""Notebook 08's hazards of writing through a mapping, each in a child process."""

from __future__ import annotations

import signal
from pathlib import Path

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
