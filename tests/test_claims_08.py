"""Notebook 08's claims, read back from its quick-mode run in a fresh copy of notebooks/.

Each compares arms of the same run (MS_ASYNC against MS_SYNC and fsync on the same dirty
pages, a flush per record against one flush on the same records), or a child's fate with
what the notebook says about it; never a time or a constant that holds only here.
"""

from __future__ import annotations

import signal

import pytest


@pytest.fixture(scope="module")
def found(executed):
    return executed("08")[2]


def test_the_dirty_pages_came_clean_in_order_or_the_notebook_said_why(found):
    assert found["life_pages"] > 0
    if found["life_clean_s"] is not None:
        started = found["life_started_s"]
        assert started is None or started <= found["life_clean_s"]


def test_ms_async_left_the_pages_dirty_and_the_syncing_calls_none(found):
    if not found["dirty_counted"]:
        pytest.skip("cachestat could not count dirty pages on this machine")
    pages = found["race_pages"]
    assert found["dirty_after_async"] == found["dirty_after_none"] >= 0.9 * pages
    assert found["dirty_after_sync"] == found["dirty_after_fsync"] == 0
    assert found["dirty_after_fdatasync"] == 0
    assert 0 < found["dirty_after_range"] < pages


def test_a_sigkilled_child_lost_nothing(found):
    assert found["sigkill_bytes"] > 0
    assert found["sigkill_lost"] == 0


def test_killed_store_writers_left_consistent_stores(found):
    assert found["store_kills"] >= 2
    assert found["store_all_consistent"]
    batch = found["store_batch"]
    for count, last in zip(found["store_counts"], found["store_last_reported"], strict=True):
        assert count is not None and last <= count <= last + batch and count % batch == 0


def test_a_kill_lost_python_buffer_but_not_what_flush_handed_over(found):
    assert found["buffered_kept"] < found["buffered_flushed"]
    assert found["buffered_kept"] == 0


def test_publishing_the_count_before_the_data_was_caught_by_a_kill(found):
    assert all(found["counters_data_first"])
    assert not all(found["counters_count_first"])


def test_the_hazard_children_died_of_sigbus_or_the_notebook_said_why(found):
    assert found["truncated_returncode"] == -signal.SIGBUS
    if found["tiny_skipped"]:
        assert found["tiny_returncode"] is None
    else:
        assert found["tiny_returncode"] == -signal.SIGBUS
        assert "NoSpaceError" in found["tiny_create"]


def test_flushing_per_record_writes_more_than_flushing_once(found):
    assert found["amp_per_record"] > 2 * found["amp_once"]
    assert found["amp_once"] >= 1


def test_the_claims_table_row_of_08_is_recorded(executed):
    claims = {c["key"]: c for c in executed("08")[2].claims}
    assert set(claims) == {"flush_per_record"}
    assert claims["flush_per_record"]["verdict"].startswith("true")
