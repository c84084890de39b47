"""Notebook 04's hands-on checks: the crossover judged on its own races, the in-place sum.

The crossover's judgement is tested on races with fixed rounds (``_race`` replaced), so that
a plausible wrong answer (medians without their spread) fails every time; the real races and
the in-place sum are tested as the notebook runs them, with answers whose verdict does not
depend on the machine's noise.
"""

from __future__ import annotations

import dataclasses
import mmap

import numpy as np
import pytest

from mmlab.course import check
from mmlab.course.handson import crossover, readvsmmap
from mmlab.instruments.spread import MARGIN, Spread
from mmlab.instruments.stats import BenchResult, Row

SIZE = 64 * 2**20
READ_SECONDS = (0.010, 0.011, 0.0105, 0.0102, 0.0108, 0.0101, 0.0107)


def _row(name: str, seconds) -> Row:
    seconds = Spread.of(seconds)
    return Row(name, seconds, rate=Spread.of(SIZE / s for s in seconds.samples), nbytes=SIZE)


def _race_with(ratios: list[float]) -> BenchResult:
    """A race whose mmap slice / read ratio is ``ratios[i]`` in round ``i``."""
    mapped = _row("mmap slice", (s / r for s, r in zip(READ_SECONDS, ratios, strict=True)))
    return BenchResult([_row("read", READ_SECONDS), mapped], None, len(ratios), [], margin=MARGIN)


AHEAD = [2.1, 1.9, 2.0, 2.2, 1.95, 2.05, 2.0]
STILL_AHEAD = [1.3, 1.25, 1.35, 1.28, 1.4, 1.32, 1.3]
# median 1.08, but a quarter of the rounds at or below 1: no longer clearly ahead
FADING = [1.08, 0.97, 1.12, 0.95, 1.1, 1.09, 1.02]
LEVEL = [0.98, 1.01, 0.97, 0.99, 1.0, 0.96, 1.02]


@pytest.fixture
def fixed_races(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(crossover, "_file_bytes", lambda: crossover.BLOCK_SIZES[-1])
    monkeypatch.setattr(crossover, "_RACES", {})  # races kept per kernel: start afresh

    def use(by_index: list[list[float]]):
        table = dict(zip(crossover.BLOCK_SIZES, by_index, strict=True))
        monkeypatch.setattr(
            crossover, "_race", lambda path, block, rounds: _race_with(table[block])
        )

    return use


def solution(race, block_sizes):
    for block in block_sizes:
        ratio = race(block).relative("mmap slice", "read")
        if not (ratio.q1 > 1 and ratio.median >= 1 + MARGIN):
            return block
    return None


def medians_only(race, block_sizes):
    """Plausible and wrong: the first size where read's median speed reaches mmap's."""
    for block in block_sizes:
        r = race(block)
        if r["read"].rate.median >= r["mmap slice"].rate.median:
            return block
    return None


def test_the_crossover_is_where_the_lead_ends_by_the_spread_not_the_medians(fixed_races):
    fixed_races([AHEAD, STILL_AHEAD, FADING, LEVEL, LEVEL, LEVEL])
    solved = check.crossover(solution)
    assert solved.passed, solved.text()
    assert solved.measured["crossover"] == crossover.BLOCK_SIZES[2]
    wrong = check.crossover(medians_only)
    assert not wrong.passed
    assert "already ended" in wrong.text() and "5 of 7 rounds" in wrong.text()


def test_no_crossover_is_an_answer_only_after_racing_every_size(fixed_races):
    fixed_races([AHEAD] * 3 + [STILL_AHEAD] * 3)
    solved = check.crossover(solution)
    assert solved.passed and "no crossover here" in solved.text()
    assert solved.measured["crossover"] is None
    lazy = check.crossover(lambda race, sizes: race(sizes[0]) and None)
    assert not lazy.passed and "without racing" in lazy.text()


def test_an_answer_too_early_or_not_a_block_size_or_an_error_fails(fixed_races):
    fixed_races([AHEAD, STILL_AHEAD, FADING, LEVEL, LEVEL, LEVEL])
    early = check.crossover(lambda race, sizes: [race(s) for s in sizes] and sizes[1])
    assert not early.passed and "still clearly ahead" in early.text()
    assert not check.crossover(lambda race, sizes: 12345).passed
    raised = check.crossover(lambda race, sizes: 1 / 0)
    assert not raised.passed and "ZeroDivisionError" in raised.text()


def test_a_block_size_in_kib_or_off_the_page_grid_is_refused_with_a_verdict(fixed_races):
    fixed_races([AHEAD, STILL_AHEAD, FADING, LEVEL, LEVEL, LEVEL])
    for wrong_size in (4, 16, mmap.PAGESIZE + 1, 0, -mmap.PAGESIZE, 1.5, 10**12):
        verdict = check.crossover(lambda race, sizes, b=wrong_size: race(b) and sizes[0])
        assert not verdict.passed
        assert "block sizes are in bytes" in verdict.text(), verdict.text()


def test_the_starters_verdict_does_not_give_the_crossover_away(fixed_races):
    fixed_races([AHEAD, STILL_AHEAD, FADING, LEVEL, LEVEL, LEVEL])
    starter = check.crossover(lambda race, sizes: race(sizes[0]) and None)
    assert not starter.passed
    assert "racing 4 KiB" in starter.text() or mmap.PAGESIZE != 4096
    assert "16 KiB" not in starter.text() and "64 KiB" not in starter.text()


def test_the_reveal_says_when_mmap_leads_again_and_where_the_sweep_disagrees(fixed_races):
    fixed_races([AHEAD, STILL_AHEAD, FADING, LEVEL, STILL_AHEAD, LEVEL])
    found, why = crossover.crossover_found()
    assert found == crossover.BLOCK_SIZES[2] // 1024
    assert "clearly ahead again at " + crossover.size_label(crossover.BLOCK_SIZES[4]) in why
    sweep = _race_with(AHEAD)  # the sweep's race of the check's crossover size: mmap ahead
    sweep.params = {"size": SIZE, "block_size": crossover.BLOCK_SIZES[2]}
    table = {("sequential", "warm", crossover.BLOCK_SIZES[2]): sweep}
    _, beside = crossover.crossover_found(table)
    assert "The two races disagree at " + crossover.size_label(crossover.BLOCK_SIZES[2]) in beside
    assert "data/crossover.bin" in beside and "2 methods" in beside


def test_the_real_races_judge_the_reference_right_and_the_starter_wrong(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solved = check.crossover(solution)  # judged on the same races: noise cannot split them
    assert solved.passed, solved.text()
    starter = check.crossover(lambda race, sizes: race(sizes[0]) and None)
    assert not starter.passed


def in_place(path):
    return int(np.memmap(path, dtype=np.uint8, mode="r").sum(dtype=np.uint64))


def read_in_blocks(path):
    """Plausible and wrong: flat memory, but every byte copied through read()."""
    total = 0
    with open(path, "rb") as f:
        while block := f.read(2**20):
            total += int(np.frombuffer(block, dtype=np.uint8).sum(dtype=np.uint64))
    return total


def slice_the_mapping(path):
    """Plausible and wrong: no read(), but mm[:] copies the whole file into a bytes object."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        return int(np.frombuffer(mm[:], dtype=np.uint8).sum(dtype=np.uint64))


def test_the_in_place_sum_passes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solved = check.sum_in_place(in_place)
    assert solved.passed, solved.text()
    assert solved.measured["rchar_bytes"] < mmap.PAGESIZE


@pytest.mark.parametrize(
    ("wrong", "because"),
    [
        (read_in_blocks, "through read()-like calls"),
        (slice_the_mapping, "a copy of the bytes into Python memory"),
        (readvsmmap.read_and_sum, "through read()-like calls"),
        (lambda path: in_place(path) + 1, "not the sum of the bytes"),
    ],
)
def test_a_copy_or_a_wrong_sum_fails(wrong, because, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    verdict = check.sum_in_place(wrong)
    assert not verdict.passed
    assert because in verdict.text()


# -- the reveals of notebook 04's predictions (mmlab.course.readrace) -----------------------


class _Report:
    """The two facts of ``machine.report`` the cold random reveal reads."""

    def __init__(self, read_ahead_kb: int) -> None:
        from mmlab.instruments.facts import Fact

        self.eviction_works = Fact(True, "measured")
        self.read_ahead_kb = Fact(read_ahead_kb, "/sys")


def _cold_random(ratios: list[float], major: int) -> dict:
    race = _race_with(ratios)
    blocks = SIZE // 4096
    race.rows = [
        dataclasses.replace(
            row, major_faults=major if row.name == "mmap slice" else blocks, storage_bytes=SIZE
        )
        for row in race.rows
    ]
    race.params = {"size": SIZE, "block_size": 4096}
    return {("random", "cold", 4096): race}


def test_the_cold_random_reveal_follows_the_rounds_and_the_read_around_window():
    from mmlab.course import readrace

    table = _cold_random(AHEAD, major=40)
    assert readrace.cold_random_winner(table) == "mmap slice"
    why = readrace.why_cold_random(table, _Report(128))
    assert "a window of 32 blocks" in why and "40 major faults for 16,384 blocks" in why
    tied = _cold_random(FADING, major=40)
    assert readrace.cold_random_winner(tied) == "no clear difference"
    assert "no clear difference" in readrace.why_cold_random(tied, _Report(128))
    no_help = readrace.why_cold_random(_cold_random(LEVEL, major=16_000), _Report(128))
    assert "read-around did not help here" in no_help


def test_the_fastest_reveal_says_when_the_rounds_do_not_separate_the_first_two():
    from mmlab.course import readrace

    race = _race_with(FADING)  # mmap slice ahead by its median, not by its rounds
    race.params = {"size": SIZE, "block_size": 2**20}
    assert readrace.fastest(race) == "mmap slice or read"
    assert readrace.fastest(race, "read") == "read"  # the runner-up, as good: never wrong
    assert readrace.fastest(race, "mmap slice") == "mmap slice"
    assert readrace.fastest(race, "pread") == "mmap slice or read"
    from mmlab import predict

    predict.lock("test04", "tie", "read")
    assert predict.reveal("test04", "tie", measured=readrace.fastest(race, "read")).right
    assert "the rounds do not separate mmap slice and read" in readrace.why_fastest(race)
    clear = _race_with(AHEAD)
    clear.params = race.params
    assert readrace.fastest(clear, "read") == "mmap slice"
    assert "do not separate" not in readrace.why_fastest(clear)


def test_a_tie_is_only_with_the_methods_right_below_the_fastest():
    from mmlab.course import readrace

    rows = [
        _row("numpy.memmap sum", [0.010] * 7),
        _row("pread", [0.0125] * 7),  # clearly behind in every round
        _row("mmap slice", [0.009, 0.02, 0.0095, 0.02, 0.013, 0.02, 0.0097]),  # wide spread
    ]
    race = BenchResult(rows, None, 7, [], margin=MARGIN)
    race.params = {"size": SIZE, "block_size": 2**20}
    assert readrace.fastest(race, "mmap slice") == "numpy.memmap sum"


def test_the_slowest_mmap_slice_is_explained_by_its_copy_not_by_its_advantages():
    from mmlab.course import readrace

    behind = _race_with([0.8, 0.82, 0.79, 0.81, 0.8, 0.83, 0.8])
    behind.params = {"size": SIZE, "block_size": 2**20}
    why = readrace.why_fastest(behind)
    assert "Slowest here (lowest median): mmap slice" in why
    assert "the kernel's copy ran faster in every round" in why
    assert "no system call per block" not in why.split("Slowest here")[1]


def test_the_cold_random_reveal_says_when_the_cold_race_read_from_the_cache():
    from mmlab.course import readrace
    from mmlab.instruments.facts import Fact, Unknown

    table = _cold_random(AHEAD, major=40)
    race = table["random", "cold", 4096]
    race.rows = [dataclasses.replace(row, storage_bytes=0) for row in race.rows]
    report = _Report(128)
    report.eviction_works = Unknown("not measured")
    assert "read from the page cache" in readrace.why_cold_random(table, report)
    report.eviction_works = Fact(True, "measured")
    race.rows = [dataclasses.replace(row, storage_bytes=None) for row in race.rows]
    assert "not counted here" in readrace.why_cold_random(table, report)
    laptop = readrace.why_cold_random(_cold_random(AHEAD, major=40), _Report(128))
    assert "stops reading around" in laptop
