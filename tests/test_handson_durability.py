"""Notebook 08's hands-on checks: the reference passes; plausible wrong answers fail."""

from __future__ import annotations

import mmap
import struct

import pytest

from mmlab.course.handson import durability


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the checks make their files under data/
    monkeypatch.setenv("MMLAB_QUICK", "1")


def _writer(flush_every: int | None, skip_flush: bool = False, scramble: bool = False):
    def write_records(path, records):
        with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
            for n, (smiles, value) in enumerate(records, start=1):
                raw = smiles.encode()
                value = -value if scramble and n == 7 else value
                mm.write(struct.pack("I", len(raw)) + raw + struct.pack("d", value))
                if flush_every and n % flush_every == 0:
                    mm.flush()
            if not skip_flush:
                mm.flush()

    return write_records


def test_the_reference_writer_passes():
    verdict = durability.durable_writer(durability.reference_writer)
    assert verdict.passed, verdict.text()


def test_a_flush_per_record_is_durable_but_writes_too_much():
    verdict = durability.durable_writer(_writer(1))
    assert not verdict.passed
    assert any("dirtied" in line for line in verdict.off)
    assert verdict.hint


def test_a_flush_per_record_hint_is_about_fewer_flushes():
    verdict = durability.durable_writer(_writer(1))
    assert "how many flushes" in verdict.hint and "mm.flush()" not in verdict.hint


def test_no_flush_leaves_pages_dirty_and_the_hint_says_to_flush_once():
    verdict = durability.durable_writer(_writer(None, skip_flush=True))
    assert not verdict.passed
    if any("cannot be judged" in line for line in verdict.right):
        return  # no cachestat here: durability cannot be judged
    assert any("still dirty" in line for line in verdict.off)
    assert "mm.flush()" in verdict.hint and "how many flushes" not in verdict.hint


def test_wrong_bytes_fail_with_a_hint_about_the_layout():
    verdict = durability.durable_writer(_writer(None, scramble=True))
    assert not verdict.passed and any("differ" in line for line in verdict.off)
    assert "native struct 'I'" in verdict.hint and "how many flushes" not in verdict.hint


def test_an_answer_in_pages_is_told_to_return_bytes():
    def in_pages(sizes, k, page):
        return durability.reference_expected_bytes(sizes, k, page) // page

    verdict = durability.flush_policy_bytes(in_pages)
    assert not verdict.passed and "looks like a number of pages" in verdict.hint


def test_a_raising_writer_fails_with_its_error():
    def broken(path, records):
        raise RuntimeError("oops")

    verdict = durability.durable_writer(broken)
    assert not verdict.passed and "oops" in verdict.off[0]


def test_the_reference_model_of_bytes_passes():
    verdict = durability.flush_policy_bytes(durability.reference_expected_bytes)
    assert verdict.passed, verdict.text()


@pytest.mark.parametrize(
    "wrong",
    [
        lambda sizes, k, page: sum(sizes),  # just the data
        lambda sizes, k, page: len(sizes) // (k or len(sizes)) * page,  # one page per flush
        lambda sizes, k, page: None,
        lambda sizes, k, page: 1 / 0,
    ],
    ids=["data only", "a page per flush", "None", "raises"],
)
def test_plausible_wrong_models_fail(wrong):
    verdict = durability.flush_policy_bytes(wrong)
    assert not verdict.passed and verdict.off


def test_the_model_counts_pages_spanned():
    assert durability.reference_expected_bytes([10] * 4, 1, 16) == 6 * 16  # 2 straddle
    assert durability.reference_expected_bytes([10] * 4, 2, 16) == (2 + 2) * 16  # 0-19, 20-39
    assert durability.reference_expected_bytes([10] * 4, None, 16) == 3 * 16
