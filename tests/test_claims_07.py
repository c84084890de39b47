"""Notebook 07's claims, read back from its quick-mode run in a fresh copy of notebooks/.

Whatever mechanism limits the children here (a cgroup as root, else RLIMIT_DATA), the naive
loads must have failed and the mapped stream completed within its budget, with flat private
memory, after reading more than the budget from storage. Where the limit counts the page cache,
the working-set sweep must show the cliff near the budget (the largest fast set above half the
budget, the first thrashing one at most the budget), and the set twice the budget must be read
again on its last passes; where it does not, no set may have thrashed. The premise's verdict
must not claim swapping where nothing swapped.
"""

from __future__ import annotations

import pytest

from mmlab.instruments.memlimitrun import OOM_KILLED


@pytest.fixture(scope="module")
def found(executed):
    return executed("07")[2]


def test_the_store_is_bigger_than_the_budget(found):
    assert found["file_bytes"] > 2 * found["budget"]


def test_the_naive_loads_failed(found):
    assert found["naive_outcome"] != "completed"
    assert found["list_outcome"] != "completed"
    if found["limits_page_cache"]:  # a cgroup: killed by the OOM killer
        assert found["naive_outcome"] == found["list_outcome"] == OOM_KILLED
    else:
        assert found["naive_outcome"] == found["list_outcome"] == "MemoryError"


def test_the_mapped_stream_completed_within_its_limit_with_flat_private_memory(found):
    assert found["stream_outcome"] == "completed"
    assert found["stream_private_peak"] < found["budget"] / 4
    if found["stream_peak"] is None:
        pytest.skip(f"the limit's peak is unknown here: {found['stream_peak_source']}")
    assert found["stream_peak"] <= found["budget"]


def test_the_mapped_stream_read_more_than_its_budget(found):
    if found["stream_read_bytes"] is None:
        pytest.skip(f"storage reads unknown here: {found['stream_read_bytes_source']}")
    assert found["stream_read_bytes"] > found["budget"]  # it streamed more than it could hold


def test_a_working_set_past_the_budget_thrashes_only_where_the_page_cache_is_limited(found):
    budget = found["budget"]
    if not found["limits_page_cache"]:
        assert found["first_slow"] is None
        return
    assert found["first_slow"] is not None
    assert budget / 2 <= found["largest_fast"] < found["first_slow"] <= budget
    assert found["first_slow"] - found["largest_fast"] <= 2**20  # bisected to a MiB
    size = found["size_above"]
    assert min(found["settled_reads_above"]) > 0.9 * size  # the whole set, every last pass
    if found["own_memory"] is None:
        pytest.skip("the child's own charge is unknown here (the cgroup's peak is unknown)")
    assert found["own_memory"] < budget - found["largest_fast"]


def test_the_premise_is_not_called_swapping_where_nothing_swapped(found):
    # the children never get swap, so the premise ("degrades into swapping") is only partly
    # shown, whatever the machine's swap, which the verdict reads and names
    assert found["premise_verdict"].startswith("partly shown")
    assert ("this machine has none" in found["premise_verdict"]) == (found["swap_total"] == 0)
