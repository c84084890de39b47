"""Notebook 07's hands-on checks judge by measuring: plausible wrong answers fail them.

``largest_fast`` must fail an answer that stays at the bottom of the range, a search that
scans instead of bisecting (it runs out of measurements), an answer in MiB instead of bytes
(with a hint saying so), and, where the limit counts the page cache, the top of the range (a
working set twice the budget thrashes there); it must pass a bisection. ``stream_means`` must
fail the list-based starter (it never completes under the budget, and the hint says whether
memory or time ran out), a function that gives one mean only, and one that gives medians; it
must pass the column stream and a chunked loop over the records' values computed another way.
"""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from mmlab.course import check
from mmlab.course.handson import memory
from mmlab.instruments import memlimit
from mmlab.store import RecordStore

MiB = 2**20

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="memory limits for a child are Linux's"
)


@pytest.fixture(autouse=True)
def quick_in_a_temp_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MMLAB_QUICK", "1")
    monkeypatch.chdir(tmp_path_factory.getbasetemp())  # one store under data/ for all tests


def test_the_checks_are_found_by_name():
    assert check.largest_fast is memory.largest_fast
    assert check.stream_means is memory.stream_means


def _bisect(thrashes, low, high):
    if not thrashes(high):
        return high
    fast, slow = low, high
    while slow - fast > MiB:
        middle = (fast + slow) // 2
        if thrashes(middle):
            slow = middle
        else:
            fast = middle
    return fast


def _scan(thrashes, low, high):
    size = low
    while size + MiB <= high and not thrashes(size + MiB):
        size += MiB
    return size


def test_a_bisection_passes_and_the_bottom_of_the_range_fails():
    verdict = check.largest_fast(_bisect)
    assert verdict.passed, verdict.text()
    assert re.search(
        r"twice the resolution(; the two searches' measurements agreed|, plus [0-9.]+ MiB by "
        r"which the measurements disagreed: [0-9.]+ MiB was fast \((your search|the reference)\))",
        verdict.text(),
    )
    verdict = check.largest_fast(lambda thrashes, low, high: low)
    assert not verdict.passed
    assert verdict.measured["earlier"]  # the first call's reference, for the reveal


def test_a_scan_runs_out_of_measurements():
    verdict = check.largest_fast(_scan)
    assert not verdict.passed and "search, don't scan" in verdict.off[0]


@pytest.mark.skipif(
    not memlimit.best().limits_page_cache, reason="without a cgroup nothing thrashes"
)
def test_the_top_of_the_range_and_an_answer_in_mib_fail_where_the_page_cache_is_limited():
    verdict = check.largest_fast(lambda thrashes, low, high: high)
    assert not verdict.passed and "above the reference's thrashing" in verdict.off[0]
    verdict = check.largest_fast(lambda thrashes, low, high: _bisect(thrashes, low, high) // MiB)
    assert not verdict.passed and "bytes, not MiB" in verdict.hint


def test_an_answer_that_is_not_a_size_fails():
    verdict = check.largest_fast(lambda thrashes, low, high: "big")
    assert not verdict.passed and "not a size" in verdict.off[0]


def _columns(path):
    with RecordStore.open(path) as store:
        return [float(store.column(name).mean()) for name in store.fields]


def _chunked(path):
    totals, count = 0.0, 0
    with RecordStore.open(path) as store:
        for start in range(0, len(store), 50_000):
            rows = np.stack([store.column(n)[start : start + 50_000] for n in store.fields])
            totals = totals + rows.sum(axis=1)
            count += rows.shape[1]
    return list(totals / count)


def _listed(path):
    with RecordStore.open(path) as store:
        records = list(store)
    return [sum(r.values[i] for r in records) / len(records) for i in range(19)]


def _first_only(path):
    with RecordStore.open(path) as store:
        return float(store.column(store.fields[0]).mean())


def _medians(path):
    with RecordStore.open(path) as store:
        return [float(np.median(store.column(name))) for name in store.fields]


@pytest.mark.parametrize("right", [_columns, _chunked])
def test_streams_pass(right):
    verdict = check.stream_means(right)
    assert verdict.passed, verdict.text()


@pytest.mark.parametrize(
    ("wrong", "words"),
    [(_listed, "under the"), (_first_only, "gave 1 means"), (_medians, "the reference's is")],
)
def test_wrong_streams_fail(wrong, words):
    verdict = check.stream_means(wrong)
    assert not verdict.passed and words in verdict.off[0]
    if wrong is _listed:  # the hint names what ran out: memory, or time
        ran_out = "out of memory" in verdict.off[0] or "did not run out of memory" in verdict.off[0]
        assert ran_out and "store.column(name)" in verdict.hint
