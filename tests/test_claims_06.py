"""Notebook 06's claims, read back from its quick-mode run in a fresh copy of notebooks/.

The readers' sums follow from how RSS, USS and PSS count; the workers' copy-on-read is
compared between arms of the same run (list against NumPy arrays and the mapped store), and
against the size of the list's own objects and arrays, never against a constant.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def found(executed):
    return executed("06")[2]


def test_rss_counts_the_store_once_per_reader_and_pss_once(found):
    readers = found["readers"]
    assert readers >= 2
    assert found["sum_rss"] == pytest.approx(readers * found["sum_pss"], rel=0.1)
    assert found["sum_uss"] < 0.05 * found["sum_pss"]


def test_pss_sits_under_the_file_at_about_the_pages_holding_records(found):
    assert found["sum_pss"] < found["file_bytes"]
    assert found["sum_pss"] == pytest.approx(found["data_bytes"], rel=0.1)


def test_a_second_reader_takes_the_first_ones_uss(found):
    assert found["first_uss_alone"] > 0.9 * found["data_bytes"]
    assert found["first_uss_with_two"] < 0.05 * found["first_uss_alone"]


def test_the_last_readers_uss_stays_in_the_page_cache(found):
    assert found["cached_after_exit"] >= 0.9 * found["last_uss"] > 0


def test_list_workers_copy_every_page_of_objects_and_numpy_and_store_workers_do_not(found):
    copied = found["list_copied"]  # the list worker's growth minus the NumPy worker's
    objects = found["list_objects"]
    # each worker touches objects on nearly every page of them, and copies whole pages
    assert 0.5 * objects < copied < 1.1 * (objects + found["list_array_data"])
    # the NumPy and store workers grow alike, by what any worker allocates for itself
    numpy, store = found["numpy_worker_growth"], found["store_worker_growth"]
    assert abs(numpy - store) < 0.25 * copied
    assert found["list_worker_growth"] > 2 * max(numpy, store)


def test_gc_freeze_does_not_stop_copy_on_read(found):
    assert found["frozen_list_worker_growth"] > 0.7 * found["list_worker_growth"]


def test_forkserver_copies_numpy_arrays_into_each_worker_but_not_the_store(found):
    assert found["forkserver_uss_gap"] == pytest.approx(found["array_bytes"], rel=0.5)


def test_the_claims_table_rows_of_06_are_recorded(found):
    claims = {c["key"]: c for c in found.claims}
    assert set(claims) == {"sharing", "dataloader"}
    assert claims["sharing"]["claim"] == "Sharing between processes"
    assert claims["dataloader"]["claim"] == "... and so in DataLoader workers"
    # Each verdict follows this run's own numbers, recomputed here from what it recorded.
    # The readers' pages stay cached after the last exit unless memory pressure drops them
    # meanwhile (the test above demands it of this machine), so the row may say "partly".
    readers = found["readers"]
    pss_once = found["sum_rss"] > 0.8 * readers * found["sum_pss"]
    cached = found["cached_after_exit"] >= 0.9 * found["last_uss"]
    assert claims["sharing"]["verdict"].startswith("true") == (pss_once and cached), claims
    # The workers' copies do not depend on load: the NumPy and store arms grow alike, apart by
    # what each worker allocates for itself, well under the list's copy, on any machine.
    copied = found["list_copied"]
    apart = abs(found["numpy_worker_growth"] - found["store_worker_growth"])
    assert copied > 0.5 * found["list_objects"] and apart < 0.25 * copied
    assert claims["dataloader"]["verdict"].startswith("true"), claims["dataloader"]
