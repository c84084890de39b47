"""Notebook 01's hands-on checks pass the reference and fail plausible wrong answers.

Each wrong answer is a mistake a student makes: a shared mapping where a private one was
asked, a rewrite of the whole file through a private mapping (copy-on-write then copies
every page), a private mapping where others must see the write, a shared write left
unflushed, and write() in place of a mapping.
"""

from __future__ import annotations

import mmap
import os

import pytest

from mmlab.course import check
from mmlab.course.handson import parameters


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the checks make their files under data/, as in a notebook


def private_edit(path):
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    mm[:5] = b"HELLO"
    return mm


def shared_edit(path):  # wrong: MAP_SHARED changes the file for everyone
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE)
    mm[:5] = b"HELLO"
    return mm


def whole_rewrite(path):  # wrong: writes every page, so copy-on-write copies them all
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    mm[:] = bytes(mm).replace(b"hello", b"HELLO", 1)
    return mm


def closed_edit(path):  # wrong: the mapping is gone, nothing left to measure
    with private_edit(path):
        pass


def test_the_reference_private_edit_passes():
    verdict = check.copy_on_write(private_edit)
    assert verdict.passed, verdict.text()
    owned = verdict.measured["student"]["owned"]
    assert mmap.PAGESIZE <= owned < parameters._PAGES * mmap.PAGESIZE


@pytest.mark.parametrize("wrong", [shared_edit, whole_rewrite, closed_edit])
def test_a_wrong_private_edit_fails(wrong):
    verdict = check.copy_on_write(wrong)
    assert not verdict.passed, verdict.text()
    assert verdict.off and verdict.hint


def test_a_shared_edit_is_told_that_the_file_changed():
    verdict = check.copy_on_write(shared_edit)
    assert any("read() of the file now gives b'HELLO'" in line for line in verdict.off)


def test_an_error_becomes_a_verdict():
    verdict = check.copy_on_write(lambda path: 1 / 0)
    assert not verdict.passed and "ZeroDivisionError" in verdict.off[0]


def shared_write(path):
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE)
    mm[:5] = b"CHILD"
    mm.flush()
    mm.close()


def private_write(path):  # wrong: a private copy nobody else sees, flush or not
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    mm[:5] = b"CHILD"
    mm.flush()


def plain_write(path):  # wrong: write() and fsync, no mapping
    with open(path, "r+b") as f:
        f.write(b"CHILD")
        f.flush()
        os.fsync(f.fileno())


def unflushed_write(path):  # wrong: visible, but only in RAM
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE)
    mm[:5] = b"CHILD"


def test_the_reference_shared_write_passes():
    verdict = check.visible_and_stored(shared_write)
    assert verdict.passed, verdict.text()
    assert verdict.measured["student"]["seen"] == "CHILD"


@pytest.mark.parametrize("wrong", [private_write, plain_write])
def test_a_wrong_shared_write_fails(wrong):
    verdict = check.visible_and_stored(wrong)
    assert not verdict.passed, verdict.text()
    assert verdict.off and verdict.hint


def test_an_unflushed_write_is_told_to_flush():
    verdict = check.visible_and_stored(unflushed_write)
    student = verdict.measured["student"]
    if student["dirty"] is None:
        pytest.skip(f"no dirty-page count here: {student['counted_by']}")
    if student["dirty"] == 0:
        pytest.skip("writeback cleaned the page before the count: nothing to judge")
    assert not verdict.passed, verdict.text()
    assert any("flush() it" in line for line in verdict.off)


def test_a_child_that_raises_is_a_verdict_and_the_child_is_gone():
    import psutil

    before = {c.pid for c in psutil.Process().children()}  # e.g. multiprocessing's tracker
    verdict = check.visible_and_stored(lambda path: 1 / 0)
    assert not verdict.passed and "ZeroDivisionError" in verdict.off[0]
    assert {c.pid for c in psutil.Process().children()} <= before  # every forked child reaped


def anonymous_edit(path):  # wrong: private memory, but not a mapping of the file
    mm = mmap.mmap(-1, os.path.getsize(path), flags=mmap.MAP_PRIVATE)
    mm[:5] = b"HELLO"
    return mm


def test_an_anonymous_mapping_is_not_a_private_edit_of_the_file():
    verdict = check.copy_on_write(anonymous_edit)
    assert not verdict.passed, verdict.text()
    assert any("not a mapping of the file" in line for line in verdict.off)


def test_a_function_that_never_returns_is_ended(tmp_path):
    import time

    found = parameters._shared_run(lambda path: time.sleep(60), "stuck.bin", timeout=1.0)
    assert "did not return" in found["error"]


def test_a_function_that_ends_the_process_is_told_so():
    found = parameters._shared_run(lambda path: os._exit(3), "exits.bin")
    assert "ended without an answer" in found["error"]


# The reveals' explanations, for outcomes this machine may not show itself.


def test_why_span_names_the_pages_and_other_page_sizes():
    from mmlab.course import diagram

    text = diagram.why_span(10_000, 12_288, page=4096)
    assert "= 3 page(s)" in text and "2,288 bytes" in text and "16 KiB pages" in text
    assert "4 KiB pages" in diagram.why_span(10_000, 16_384, page=16_384)


def test_why_faults_tells_huge_pages_from_one_fault_per_page():
    from mmlab.course import thp

    assert "2 MiB huge pages" in thp.why_faults(520, 1000, 2**21, "always", huge=2**21)
    assert "512 pages of 4,096" in thp.why_faults(520, 1000, 2**21, "always", huge=2**21)
    sixteen = thp.why_faults(40, 1000, 2**25, "always", page=16384, huge=2**25)
    assert "32 MiB huge pages" in sixteen and "2,048 pages of 16,384" in sixteen
    assert "size not known here" in thp.why_faults(520, 1000, 2**21, "always", huge=None)
    assert "multi-size THP" in thp.why_faults(300, 1000, 0, "never", huge=2**21)
    per_page = thp.why_faults(1004, 1000, 0, "madvise", huge=2**21)
    assert "one per page" in per_page and "MADV_HUGEPAGE" in per_page and "4 extra" in per_page


def test_pmd_size_reads_the_kernel_or_says_none(tmp_path):
    from mmlab.course import thp

    (tmp_path / "hpage_pmd_size").write_text("33554432\n")
    assert thp.pmd_size(tmp_path) == 2**25
    assert thp.pmd_size(tmp_path / "missing") is None


def test_the_starters_get_no_praise_for_doing_nothing():
    def starter_edit(path):
        with open(path, "rb") as f:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def starter_write(path):
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        mm[:5] = b"CHILD"

    for verdict in (check.copy_on_write(starter_edit), check.visible_and_stored(starter_write)):
        assert not verdict.passed and verdict.off
        assert not any("b'hello'" in r or "write()" in r or "dirty" in r for r in verdict.right)


def test_why_round_2_follows_the_run():
    import numpy as np

    from mmlab.course import blocks

    steps = ["start"] + [f"{p} {r}" for r in (1, 2) for p in ("malloc", "free") for _ in (0, 1)]
    steps.append("malloc_trim")
    flat = np.zeros(len(steps), dtype=int)

    def run(block, mapped):
        return blocks.BlockRun(block, 2, steps, flat, flat, np.array(mapped), anon=flat)

    raised = run(2**20, [0, 1, 2, 1, 0, 0, 0, 0, 0, 0])
    assert "came from the heap: 0 mapped" in blocks.why_round_2(raised)
    capped = run(2**26, [0, 1, 2, 1, 0, 1, 2, 1, 0, 0])
    assert "over the threshold's cap" in blocks.why_round_2(capped)
    unknown = blocks.BlockRun(2**20, 2, steps, flat, flat, None, counter=None, libc="musl")
    assert "cannot tell" in blocks.why_round_2(unknown)


def test_flush_outcome_says_what_this_run_can_tell():
    from mmlab.course.signals import SharedWrite, flush_outcome

    seen = b"CHILD, mmap!"
    shared = SharedWrite("ACCESS_WRITE", "nothing", seen, seen, [2, 2, 2], "cachestat")
    flushed = SharedWrite("ACCESS_WRITE", "flush", seen, seen, [2, 0, 0], "cachestat")
    assert flush_outcome(shared, flushed)[0] == "dirty"
    raced = SharedWrite("ACCESS_WRITE", "flush", seen, seen, [0, 0, 0], "cachestat")
    shared_clean = SharedWrite("ACCESS_WRITE", "nothing", seen, seen, [0, 0, 0], "cachestat")
    outcome, why = flush_outcome(shared_clean, raced)
    assert outcome is None and "writeback may have written" in why
    blind = SharedWrite("ACCESS_WRITE", "flush", seen, seen, [None] * 3, "nothing can count")
    outcome, why = flush_outcome(shared, blind)
    assert outcome is None and "no dirty-page count" in why


def test_the_signal_explanations_follow_how_the_child_ended():
    from mmlab.course.signals import ChildResult, why_read_only, why_truncated

    out = "VMA: r--s; PTE present before the store: False\n"
    assert "(r--s) without write" in why_read_only(ChildResult("", -11, "SIGSEGV", out, ""))
    assert "went" in why_read_only(ChildResult("", 0, None, out, ""))
    assert "SIGBUS at page 1" in why_truncated(ChildResult("", -7, "SIGBUS", "", ""), 4096)
    assert "not SIGBUS" in why_truncated(ChildResult("", -11, "SIGSEGV", "", ""))


def test_round_2_mapped_names_the_share():
    import numpy as np

    from mmlab.course import blocks

    steps = ["start"] + [f"{p} {r}" for r in (1, 2) for p in ("malloc", "free") for _ in (0, 1)]
    steps.append("malloc_trim")
    flat = np.zeros(len(steps), dtype=int)
    share = {
        "none": [0, 1, 2, 1, 0, 0, 0, 0, 0, 0],
        "some": [0, 1, 2, 1, 0, 0, 1, 0, 0, 0],
        "all": [0, 1, 2, 1, 0, 1, 2, 1, 0, 0],
    }
    for word, mapped in share.items():
        run = blocks.BlockRun(2**20, 2, steps, flat, flat, np.array(mapped), anon=flat)
        assert blocks.round_2_mapped(run) == word
    unknown = blocks.BlockRun(2**20, 2, steps, flat, flat, None, counter=None, libc="musl")
    assert blocks.round_2_mapped(unknown) is None
