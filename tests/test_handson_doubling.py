"""Notebook 05's hands-on checks: the reference solutions pass, plausible wrong answers fail,
and the speed target comes from the reference's own rounds."""

from __future__ import annotations

import mmap
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mmlab.course import check
from mmlab.course.handson import doubling
from mmlab.data import qm9, seedformat
from mmlab.instruments.spread import Spread
from mmlab.store import RecordStore


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the checks write under data/, as in a notebook


def fixed_size_records(path):
    """Wrong: assumes every record is as long as the first."""
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        (length,) = struct.unpack_from("I", mm, 0)
        step = 4 + length + 8
        for offset in range(0, len(mm) - step + 1, step):
            at = offset + 4 + length
            struct.pack_into("d", mm, at, 2 * struct.unpack_from("d", mm, at)[0])


def stops_one_early(path):
    """Wrong: misses the last record of a file sized to its data (needs room for a length
    after each record)."""
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        offset = 0
        while offset + 16 <= len(mm):
            (length,) = struct.unpack_from("I", mm, offset)
            if length == 0:
                break
            at = offset + 4 + length
            if at + 12 > len(mm):
                break
            struct.pack_into("d", mm, at, 2 * struct.unpack_from("d", mm, at)[0])
            offset = at + 8


def big_endian(path):
    """Wrong: writes the value big-endian, which is not the blog's native layout."""
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        offset = 0
        while offset + 4 <= len(mm) and (length := struct.unpack_from("I", mm, offset)[0]):
            at = offset + 4 + length
            struct.pack_into(">d", mm, at, 2 * struct.unpack_from("d", mm, at)[0])
            offset = at + 8


def no_stop_at_a_zero_length(path):
    """Wrong: the blog's own defect, scanning on past the data (here with a guard that keeps
    it from raising at the end), flushing once."""
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        offset = 0
        while offset + 4 <= len(mm):
            (length,) = struct.unpack_from("I", mm, offset)
            at = offset + 4 + length
            if at + 8 > len(mm):
                break
            struct.pack_into("d", mm, at, 2 * struct.unpack_from("d", mm, at)[0])
            offset = at + 8
        mm.flush()


def raises(path):
    raise RuntimeError("not written yet")


@pytest.mark.parametrize(
    "wrong", [fixed_size_records, stops_one_early, big_endian, no_stop_at_a_zero_length, raises]
)
def test_a_wrong_doubling_fails_with_what_was_off(wrong):
    verdict = check.double_in_place(wrong)
    assert not verdict.passed
    assert verdict.off and verdict.hint
    assert "speed" not in verdict.text()  # judged on its bytes, never timed


def test_the_reference_doubling_passes_and_says_what_decided_the_target():
    verdict = check.double_in_place(doubling.reference_double)
    assert verdict.passed, verdict.text()
    m = verdict.measured
    assert m["speedup"] >= m["target"] > 1
    assert "Target" in verdict.right[-1]
    assert not any(Path("data").iterdir())  # the check's files are gone


def no_flush(path):
    """Wrong: fast and right in the page cache, but never flushed."""
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        offset = 0
        while offset + 4 <= len(mm) and (length := struct.unpack_from("I", mm, offset)[0]):
            at = offset + 4 + length
            struct.pack_into("d", mm, at, 2 * struct.unpack_from("d", mm, at)[0])
            offset = at + 8


def test_a_doubling_that_never_flushes_fails_where_a_flush_cleans_pages(tmp_path):
    from mmlab.instruments import pagecache

    try:
        pagecache.cache_stats(doubling.__file__)
    except OSError as error:
        pytest.skip(f"no cachestat here: {error}")
    if pagecache.on_tmpfs(tmp_path):
        pytest.skip("on tmpfs pages stay dirty after a flush")
    verdict = check.double_in_place(no_flush)
    assert not verdict.passed, verdict.text()
    assert verdict.measured["dirty_pages"] > 0 == verdict.measured["dirty_after_reference"]
    assert "dirty" in verdict.off[0] and "speed" not in verdict.text()


def test_the_first_hint_asks_and_the_second_names_the_tools(monkeypatch):
    monkeypatch.setattr(doubling, "_TRIES", Counter())
    first = check.double_in_place(big_endian).hint
    second = check.double_in_place(big_endian).hint
    assert "?" in first and "unpack_from" not in first
    assert first != second


def test_the_blogs_loop_with_only_its_parsing_made_fast_is_too_slow(tmp_path):
    """Flushing after every record still waits for storage each time, on a disk."""
    from mmlab.instruments import pagecache

    if pagecache.on_tmpfs(tmp_path):
        pytest.skip("on tmpfs a flush waits for no storage")

    def fast_parse_flush_every(path):
        with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
            offset = 0
            while offset + 4 <= len(mm) and (length := struct.unpack_from("I", mm, offset)[0]):
                at = offset + 4 + length
                struct.pack_into("d", mm, at, 2 * struct.unpack_from("d", mm, at)[0])
                mm.flush()
                offset = at + 8

    verdict = check.double_in_place(fast_parse_flush_every)
    assert not verdict.passed
    assert verdict.right  # the bytes were right
    assert verdict.measured["speedup"] < verdict.measured["target"]


def test_the_oracle_is_the_file_written_with_doubled_values(tmp_path):
    records = doubling._records(50)
    path, oracle = tmp_path / "a.dat", tmp_path / "b.dat"
    size = seedformat.data_size(records) + 100
    seedformat.write(path, records, size=size, flush_every=None)
    seedformat.write(oracle, [(s, 2 * v) for s, v in records], size=size, flush_every=None)
    assert doubling.reference_double(path) == 50
    assert path.read_bytes() == oracle.read_bytes()


def test_the_target_is_the_references_speed_up_lowered_by_its_spread_capped_at_the_goal():
    target, why = doubling.speed_target(Spread.of([90, 300, 350, 420, 500]))
    assert target == 100 and "100x asked for" in why and "within reach" in why
    target, why = doubling.speed_target(Spread.of([20, 30, 40, 50, 400]))
    assert target == pytest.approx(40 / (50 / 30)) and "below the 100x" in why
    assert "lowered by its spread" in why
    target, why = doubling.speed_target(Spread.of([50, 60, 100]), goal=None)
    assert target == pytest.approx(60 / (80 / 55)) and "asked for" not in why


def test_the_reference_mean_passes():
    verdict = check.mean_u0(doubling.reference_mean)
    assert verdict.passed, verdict.text()
    assert verdict.measured["mean"] == pytest.approx(verdict.measured["oracle"])


def other_field(path):
    """Wrong: the mean of another field."""
    with RecordStore.open(path) as store:
        return float(store.column("U").mean())


def column_in_python(path):
    """Wrong: the right column, summed one value at a time by the interpreter."""
    with RecordStore.open(path) as store:
        column = store.column("U0")
        return sum(column) / len(column)


def first_thousand(path):
    """Wrong: a sample, not all records."""
    with RecordStore.open(path) as store:
        return float(np.mean(store.column("U0")[:1000]))


@pytest.mark.parametrize("wrong", [other_field, first_thousand, lambda path: None])
def test_a_wrong_mean_fails_on_its_value(wrong):
    verdict = check.mean_u0(wrong)
    assert not verdict.passed and verdict.off and verdict.hint
    assert "speed" not in verdict.text()


def test_a_python_loop_over_the_column_is_too_slow():
    verdict = check.mean_u0(column_in_python)
    assert not verdict.passed
    assert verdict.right  # the value was right
    assert verdict.measured["speedup"] < verdict.measured["target"]


def test_the_store_holds_qm9s_fields(tmp_path):
    path, u0 = doubling._store(100, tmp_path)
    with RecordStore.open(path) as store:
        assert store.fields == tuple(qm9.FIELDS)
        assert np.array_equal(store.column("U0"), u0)
