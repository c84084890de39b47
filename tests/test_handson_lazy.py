"""Notebook 03's hands-on checks: the reference answers pass, plausible wrong ones fail, and
the reveals' explanations say what this run's numbers (or a laptop's) show."""

from __future__ import annotations

import mmap
import os

import numpy as np
import pytest

from mmlab.course import check, lazywhy
from mmlab.course.handson import lazy as handson
from mmlab.course.lazy import PAGE, Sizes, StrideRow, Touch, first_lazy_stride

linux = pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="needs Linux")


@pytest.fixture(scope="module", autouse=True)
def in_tmp(tmp_path_factory):
    """The checks make their files under data/ of the current folder, as in a notebook: one
    folder for the module, so that the sample files are written once."""
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("handson_lazy"))
    yield
    os.chdir(here)


def touch(mm, stride):
    for offset in range(0, len(mm), stride * mmap.PAGESIZE):
        mm[offset]


def open_for_random(path):
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    mm.madvise(mmap.MADV_RANDOM)
    return mm


def test_the_checks_are_found_by_check():
    assert check.touch_stride is handson.touch_stride
    assert check.random_mapping is handson.random_mapping


@linux
def test_touch_stride_passes_the_reference_and_reports_each_stride():
    verdict = check.touch_stride(touch)
    assert verdict.passed, verdict.text()
    for stride in handson.STRIDES:
        found = verdict.measured[f"stride_{stride}"]
        assert found["pages_touched"] == -(-handson.SMALL_PAGES // stride)
        assert found["read_bytes"] > 0
        assert found["faults"] >= 1
    assert len(verdict.right) == len(handson.STRIDES)


def ignores_the_stride(mm, stride):
    for offset in range(0, len(mm), mmap.PAGESIZE):
        mm[offset]


def twice_the_stride(mm, stride):
    for offset in range(0, len(mm), 2 * stride * mmap.PAGESIZE):
        mm[offset]


def backwards(mm, stride):  # the right pages, but against readahead: more faults
    for offset in reversed(range(0, len(mm), stride * mmap.PAGESIZE)):
        mm[offset]


def from_page_one(mm, stride):  # off by one page: the right count at most strides
    for offset in range(mmap.PAGESIZE, len(mm), stride * mmap.PAGESIZE):
        mm[offset]


def raises(mm, stride):
    raise ValueError("not written yet")


@linux
@pytest.mark.parametrize(
    "wrong", [ignores_the_stride, twice_the_stride, from_page_one, backwards, raises]
)
def test_touch_stride_fails_plausible_wrong_answers(wrong):
    verdict = check.touch_stride(wrong)
    assert not verdict.passed, verdict.text()
    assert verdict.off and verdict.hint


@linux
def test_random_mapping_passes_madv_random_and_reads_less_than_the_default():
    verdict = check.random_mapping(open_for_random)
    assert verdict.passed, verdict.text()
    yours = np.median(verdict.measured["yours_read_bytes"])
    assert yours < np.median(verdict.measured["default_read_bytes"])
    assert yours <= 2 * handson.RANDOM_TOUCHES * PAGE  # about a page per touch


def default_mapping(path):
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def sequential(path):
    mm = default_mapping(path)
    mm.madvise(mmap.MADV_SEQUENTIAL)
    return mm


def anonymous(path):  # reads nothing from storage, but not the file's bytes either
    return mmap.mmap(-1, os.path.getsize(path))


def first_page_only(path):
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), mmap.PAGESIZE, access=mmap.ACCESS_READ)
    mm.madvise(mmap.MADV_RANDOM)
    return mm


def returns_none(path):
    return None


@linux
@pytest.mark.parametrize(
    "wrong", [default_mapping, sequential, anonymous, first_page_only, returns_none]
)
def test_random_mapping_fails_plausible_wrong_answers(wrong):
    verdict = check.random_mapping(wrong)
    assert not verdict.passed, verdict.text()
    assert verdict.off and verdict.hint


def test_the_checks_say_when_this_machine_cannot_measure(monkeypatch):
    monkeypatch.setattr(handson.sys, "platform", "darwin")
    for judge, answer in ((check.touch_stride, touch), (check.random_mapping, open_for_random)):
        verdict = judge(answer)
        assert not verdict.passed
        assert "not available here" in verdict.off[0] and "cannot judge here" in verdict.off[0]


LAPTOP = Sizes(readahead=32, fault_around=16, fault_around_known=True, folio=1, large_folios=False)
SERVER = Sizes(readahead=2048, fault_around=16, fault_around_known=False, folio=512,
               large_folios=True)  # fmt: skip


def rows(shares: dict[int, float], file_pages: int = 262_144) -> list[StrideRow]:
    found = []
    for stride, share in shares.items():
        touched, read = file_pages // stride, int(share * file_pages)
        found.append(StrideRow(stride, touched, 1, touched, read * PAGE, 16, read, file_pages, 0.1))
    return found


def test_the_first_lazy_stride_follows_the_window_on_a_laptop_and_a_server():
    laptop = rows({16: 1.0, 64: 0.5, 256: 0.125})
    server = rows({16: 1.0, 1024: 1.0, 4096: 0.5, 16384: 0.125})
    assert first_lazy_stride(laptop) == 64  # twice the window: half of the file read
    assert first_lazy_stride(server) == 4096
    assert first_lazy_stride(rows({16: 1.0})) == "none of them"
    text = lazywhy.why_lazy_stride(laptop, LAPTOP)
    assert "32 pages (128.0 KiB)" in text and "256: 12%" in text and "2x the window" in text
    text = lazywhy.why_lazy_stride(server, SERVER)
    assert "2,048 pages (8.0 MiB)" in text and "2x the window" in text
    assert "did not read less" in lazywhy.why_lazy_stride(rows({16: 1.0}), SERVER)


def test_why_cold_mapped_puts_the_pages_mapped_beside_the_window():
    cached = np.zeros(4096, dtype=bool)
    cached[1000:1032] = True
    cold = Touch(1010, True, 0, 1, 32 * PAGE, 16, 20, cached)
    text = lazywhy.why_cold_mapped(cold, LAPTOP)
    assert "left 32 pages cached (1x the window" in text and "is 32 pages (128.0 KiB)" in text
    assert "mapped 16 pages" in text and "retried" in text
    unknown = Sizes(None, 16, False, None, None)
    assert "read_ahead_kb is unknown here" in lazywhy.why_cold_mapped(cold, unknown)
    uncounted = Touch(1010, True, 0, 1, None, 600, 20, cached)
    text = lazywhy.why_cold_mapped(uncounted, SERVER)
    assert "not counted here" in text and "large folio" in text


def test_uncounted_reads_are_said_unknown_not_zero():
    uncounted = [StrideRow(s, 262_144 // s, 1, 10, None, 16, 0, 262_144, 0.1) for s in (16, 64)]
    assert first_lazy_stride(uncounted) is None
    assert "not counted here" in lazywhy.why_lazy_stride(uncounted, SERVER)
