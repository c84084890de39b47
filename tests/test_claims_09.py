"""Notebook 09's claims, read back from its quick-mode run in a fresh copy of notebooks/.

Each compares arms of the same run (one format's step against the store's, the Dask run
against the in-place doubling of the same store), or a verdict with the numbers it was built
from; never a time or a constant that holds only here.
"""

from __future__ import annotations

import statistics

import pytest

from mmlab.instruments.spread import Spread

KINDS = ("store", "memmap", "arrow", "sqlite", "lmdb")


@pytest.fixture(scope="module")
def ran(executed):
    return executed("09")[2]


@pytest.fixture(scope="module")
def found(ran):
    return ran.values


@pytest.fixture(scope="module")
def verdicts(ran):
    return {row["key"]: row["verdict"] for row in ran.claims}


def _median(samples):
    return statistics.median(samples)


def test_every_format_ran_every_step(found):
    for name in ("task_build_s", "task_double_s", "task_disk_bytes", "task_get_rounds"):
        assert set(found[name]) == set(KINDS), name
    assert all(items == found["task_records"] for items in found["task_epoch_items"].values())


def test_arrow_rewrote_its_whole_file_and_the_store_only_its_column(found, verdicts):
    assert found["task_rewritten"]["arrow"]
    assert not any(found["task_rewritten"][k] for k in KINDS if k != "arrow")
    written = found["task_double_written"]
    if written["store"] is None:
        pytest.skip("no /proc/self/io on this machine")
    assert written["arrow"] >= 0.9 * found["task_disk_bytes"]["arrow"]
    assert written["store"] < 0.5 * found["task_disk_bytes"]["store"]
    assert verdicts["task_arrow_rewrites"].startswith("holds")


def _side(found, name, kind, base="store"):
    """+1 if ``base`` was clearly faster than ``kind`` (their fresh rounds, round by round, or
    the one run of a format timed once), -1 if clearly slower, 0 if the rounds disagree."""
    rounds = found[f"task_{name}_rounds"]
    if rounds[kind] is None or rounds[base] is None:
        ours = _median(rounds[base]) if rounds[base] else found[f"task_{name}_s"][base]
        theirs = _median(rounds[kind]) if rounds[kind] else found[f"task_{name}_s"][kind]
        return 1 if theirs > ours else -1
    ratios = Spread.of([a / b for a, b in zip(rounds[kind], rounds[base], strict=True)])
    return ratios.side(1.0)


def test_close_formats_ran_in_rounds_the_far_ones_once(found):
    for name in ("task_build_rounds", "task_double_rounds"):
        for kind in KINDS:
            assert (found[name][kind] is None) == (kind in ("sqlite", "lmdb")), (name, kind)
        assert len(found[name]["store"]) >= 5


def test_the_in_place_verdict_follows_the_doubling_rounds(found, verdicts):
    # judged: the in-place formats against the atomic ones; store vs numpy.memmap only reported
    sides = [_side(found, "double", slow, fast) for fast in ("store", "memmap")
             for slow in ("arrow", "sqlite", "lmdb")]  # fmt: skip
    verdict = verdicts["task_store_double"]
    assert verdict.startswith("holds") == all(side > 0 for side in sides)
    assert verdict.startswith("does not hold") == any(side < 0 for side in sides)


def test_the_build_verdict_follows_the_build_rounds(found, verdicts):
    side = _side(found, "build", "arrow")
    assert verdicts["task_build_target"].startswith("holds") == (side > 0)
    assert verdicts["task_build_target"].startswith("no clear") == (side == 0)


def test_disk_size_is_the_built_files_and_lmdb_grows_when_doubled(found):
    built, after = found["task_disk_bytes"], found["task_disk_after"]
    assert after["store"] == built["store"] and after["memmap"] == built["memmap"]
    assert after["lmdb"] >= built["lmdb"]


def test_each_worker_s_growth_is_recorded(found):
    for kind in KINDS:
        assert len(found["task_private_dirty_growth"][kind]) == 2, kind


def test_the_get_verdict_holds_only_where_every_format_was_slower(found, verdicts):
    rounds = found["task_get_rounds"]
    if verdicts["task_store_get"].startswith("holds"):
        for kind in KINDS[1:]:
            assert _median(rounds[kind]) > _median(rounds["store"]), kind


def test_cold_reads_started_from_storage(found):
    left = found["task_cold_left_pages"]
    assert all(pages == 0 for pages in left.values() if pages is not None)
    read = found["task_cold_read"]["store"]
    if read is not None:
        assert 0 < read <= 1.1 * found["task_cold_file_bytes"]["store"]


def test_dask_doubled_every_value_and_one_machine_won(found, verdicts):
    assert found["dask_ok"] and verdicts["dask_equal"].startswith("holds")
    assert found["dask_records"] == found["task_records"] and found["dask_workers"] == 2
    ratio = found["dask_total_s"] / found["dask_in_place_s"]
    assert verdicts["dask_orders"].startswith("holds") == (ratio >= 100)
    assert found["dask_in_place_s"] < found["dask_seconds"]["compute + write"]


def test_hugging_face_reads_faster_in_a_batch_than_one_by_one(found):
    if found["task_hf_get_s"] is None:
        pytest.skip("Hugging Face datasets could not run here (the notebook said why)")
    assert found["task_hf_batch_s"] < found["task_hf_get_s"]


def test_the_format_costs_more_than_in_place_and_the_cluster_adds_to_it(found):
    # the same shards rewritten by one process with pyarrow, no cluster: the format's cost
    assert found["dask_in_place_s"] < found["dask_baseline_s"] < found["dask_total_s"]
