"""Notebook 04's claim, read back from its quick-mode run in a fresh copy of notebooks/.

The recorded verdicts must agree with the recorded rounds, by the races' rule (every round
on one side of 1, the median at least ``MARGIN`` from it); section 2's case, raced again in
the sweep, is judged on both races, so the claim never states what one of them contradicts.
The cold random race is checked against the notebook's own machine report (whether eviction
works, ``read_ahead_kb``).
"""

from __future__ import annotations

import statistics

import pytest

from mmlab.instruments.stats import Spread
from mmlab.instruments.sweep import size_label


@pytest.fixture(scope="module")
def found(executed):
    return executed("04")[2]


@pytest.fixture(scope="module")
def claim(found):
    (row,) = [c for c in found.claims if c["key"] == "no_copy"]
    return row


def _side(samples, found) -> int:
    return Spread.of(samples).side(1.0, margin=found["margin"], every=True)


def test_the_claim_row_is_the_readmes(claim):
    assert claim["claim"] == "No copy between kernel and user space"
    assert claim["shown_in"] == "04 §2 to §4"


def test_section_2_and_the_sweep_agree_or_the_claim_says_neither(found):
    pattern, cache, block = found["race_case"]
    assert (pattern, cache) == ("sequential", "warm")
    race = found["race_slice_over_read"]
    sweep = found["warm_slice_over_read"][str(block)]
    pooled = _side(race + sweep, found)
    assert found["warm_slice_side"][str(block)] == pooled
    if _side(race, found) * _side(sweep, found) < 0:  # opposite verdicts: cannot tell
        assert pooled == 0 and size_label(block) in found["disagree"]
    if pooled:  # a verdict only where every round of both races agrees
        assert _side(race, found) in (0, pooled) and _side(sweep, found) in (0, pooled)


def test_the_warm_verdict_agrees_with_the_rounds(found, claim):
    case = str(found["race_case"][2])
    groups = {1: [], -1: [], 0: []}
    for block, samples in found["warm_slice_over_read"].items():
        both = samples + (found["race_slice_over_read"] if block == case else [])
        groups[_side(both, found)].append(size_label(int(block)))
    assert groups[1] == found["slice_wins"]
    assert groups[-1] == found["read_wins"]
    assert groups[0] == found["ties"]
    verdict = claim["verdict"]
    if groups[1]:
        assert f"mmap slice ahead of read() at {', '.join(groups[1])}" in verdict
    if groups[-1]:
        assert f"read() ahead at {', '.join(groups[-1])}" in verdict
    if groups[0]:
        assert f"no clear difference (or the two races disagree) at {', '.join(groups[0])}" in (
            verdict
        )
    # the tests run quick mode: a small file, whose warm verdicts a full-size run decides
    assert "quick mode, provisional" in verdict
    for case in found["disagree"]:
        assert case in verdict.split("disagree on ")[1]


def test_the_in_place_verdict_agrees_with_the_rounds(found, claim):
    samples = found["in_place_over_read"] + (found["in_place_sweep"] or [])
    side = _side(samples, found)
    assert side == found["in_place_side"]
    word = {1: "faster than", -1: "slower than", 0: "not clearly different from"}[side]
    assert f"the memmap sum was {word} read() here" in claim["verdict"]


def test_the_measured_sentence_gives_this_runs_medians(found, claim):
    for name, samples in found["race"].items():
        assert f"{name} {statistics.median(samples) / 1e9:.3g}" in claim["measured"]
    assert f"memory copy {statistics.median(found['copy']) / 1e9:.3g}" in claim["measured"]
    assert "(section 2: " in claim["measured"]  # the case raced twice shows both races


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
