"""Notebook 04's claim, read back from its quick-mode run in a fresh copy of notebooks/.

The recorded verdict must agree with the recorded rounds; the cold random race is checked
against the notebook's own machine report (whether eviction works, ``read_ahead_kb``).
"""

from __future__ import annotations

import statistics

import pytest

from mmlab.instruments.stats import Spread


@pytest.fixture(scope="module")
def found(executed):
    return executed("04")[2]


@pytest.fixture(scope="module")
def claim(found):
    (row,) = [c for c in found.claims if c["key"] == "no_copy"]
    return row


def test_the_claim_row_is_the_readmes(claim):
    assert claim["claim"] == "No copy between kernel and user space"
    assert claim["shown_in"] == "04 §2 to §4"


def test_the_warm_verdict_agrees_with_the_rounds(found, claim):
    groups = {1: [], -1: [], 0: []}
    for block, samples in found["warm_slice_over_read"].items():
        groups[Spread.of(samples).side()].append(f"{int(block) // 1024:,} KiB")
    assert groups[1] == found["slice_wins"]
    assert groups[-1] == found["read_wins"]
    assert groups[0] == found["ties"]
    verdict = claim["verdict"]
    if groups[1]:
        assert f"mmap slice ahead of read() at {', '.join(groups[1])}" in verdict
    if groups[-1]:
        assert f"read() ahead at {', '.join(groups[-1])}" in verdict
    if groups[0]:
        assert f"no clear difference at {', '.join(groups[0])}" in verdict


def test_the_in_place_verdict_agrees_with_the_rounds(found, claim):
    side = Spread.of(found["in_place_over_read"]).side()
    word = {1: "faster than", -1: "slower than", 0: "not clearly different from"}[side]
    assert f"the memmap sum was {word} read() here" in claim["verdict"]


def test_the_measured_sentence_gives_this_runs_medians(found, claim):
    for name, samples in found["race"].items():
        assert f"{name} {statistics.median(samples) / 1e9:.3g}" in claim["measured"]
    assert f"memory copy {statistics.median(found['copy']) / 1e9:.3g}" in claim["measured"]


def test_cold_random_blocks_show_storage_bytes_and_read_around(found):
    # the facts of the notebook's own report, for the file system its data/ was on
    cold = found["cold_random_4k"]
    assert set(cold) == {"read", "readinto", "pread", "mmap slice", "numpy.memmap sum"}
    if not found["eviction_works"]:
        pytest.skip("eviction does not work there: the cold races read nothing from storage")
    for name, (_, storage) in cold.items():
        assert storage is not None and storage > 0, name
    major, _ = cold["mmap slice"]
    if (
        found["read_ahead_kb"] or 0
    ) >= 16:  # a read-around window holds 4 blocks or more: far fewer faults than blocks
        assert major < found["blocks_4k"] / 2
