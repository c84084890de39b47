"""Misused mappings, run safely in a child: SIGSEGV for a write to a read-only mapping,
SIGBUS for a touch past a truncated file's end, reported by name with the child's output."""

from __future__ import annotations

from mmlab import signals


def test_write_to_a_read_only_mapping_is_sigsegv(tmp_path):
    result = signals.write_read_only(tmp_path)
    assert result.signal == "SIGSEGV" and result.returncode < 0
    assert (
        "writing one byte" in result.stdout
        and "before the store: False" in result.stdout
        and "went through" not in result.stdout
    )
    assert "Segmentation fault" in result.stderr  # faulthandler's report
    assert list(tmp_path.iterdir()) == []  # the scratch file is gone


def test_touch_past_a_truncated_end_is_sigbus(tmp_path):
    result = signals.touch_past_end(tmp_path)
    assert result.signal == "SIGBUS"
    assert "past the file's end" in result.stdout and "read " not in result.stdout
    assert "killed by SIGBUS" in str(result)


def test_a_snippet_that_exits_reports_no_signal():
    result = signals.run("import sys; print('hi'); sys.exit(3)")
    assert result.signal is None and result.returncode == 3 and result.stdout == "hi\n"


def test_a_shared_write_is_seen_at_once_and_a_private_one_never(tmp_path):
    path = tmp_path / "hello.bin"
    shared = signals.child_writes(path, "ACCESS_WRITE")
    assert shared.seen == shared.read == b"CHILD, mmap!" and "while the child waits" in str(shared)
    private = signals.child_writes(path, "ACCESS_COPY")
    assert private.seen == b"hello, mmap!" and len(private.dirty) == 3
    if private.dirty[0] is not None:  # counted: a private write dirties none of the file's pages
        assert private.dirty[0] == 0 < shared.dirty[0]
