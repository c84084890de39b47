"""Notebook 01's claims, read back from its quick-mode run in a fresh copy of notebooks/.

The parent sees the child's write through MAP_SHARED while the child waits, before any
flush; glibc maps each large block and unmaps it on free, while small blocks stay resident;
the page table and page cache hold at least the touched pages; SIGSEGV and SIGBUS are
reported. What depends on the machine (the page size, cachestat) is read from its report.
"""

from __future__ import annotations

import mmap

import pytest

from mmlab import machine


@pytest.fixture(scope="module")
def found(executed):
    return executed("01")[2]


@pytest.fixture(scope="module")
def facts():
    return machine.report(measure=False)


def test_the_parent_sees_the_childs_write_before_any_flush(found):
    assert found["shared_seen_before_flush"] is True
    assert found["private_seen"] is False
    if found["dirty_while_waiting"] is not None:  # cachestat, or smaps where it is missing
        assert found["dirty_while_waiting"] >= 1  # written, not yet on storage
        assert found["dirty_private"] == 0  # the private copy is not the file's page
        assert found["dirty_after_flush"] == 0  # measured while the flushing child still ran


def test_large_blocks_are_mapped_and_unmapped(found):
    large, count = found["large_blocks"], found["large_block_count"]
    if large["mmapped_blocks_round_1"] is not None:  # mallinfo2: glibc 2.33+
        assert large["mmapped_blocks_round_1"] == count
        assert large["mmapped_blocks_round_2"] == count  # above the threshold's 32 MiB cap
        assert large["mmapped_blocks_after_free_1"] == 0
    # the lines need not rise per block (the kernel merges anonymous VMAs): the size does
    assert large["maps_added_round_1"] <= count and large["maps_after_free_1"] <= 0
    assert large["anon_added_round_1"] >= count * found["large_block_bytes"]
    assert large["anon_after_free_1"] <= 0
    assert large["rss_kept_after_free_1"] < 0.05 * large["rss_grown"]


def test_small_blocks_stay_resident_after_free(found):
    small = found["small_blocks"]
    if small["mmapped_blocks_round_1"] is not None:
        assert small["mmapped_blocks_round_1"] == 0
    assert small["maps_added_round_1"] == 0 and small["anon_added_round_1"] == 0
    assert small["rss_kept_after_free_1"] > 0.8 * small["rss_grown"]
    assert small["rss_kept_after_trim"] < 0.5 * small["rss_grown"]


def test_the_threshold_rises_after_a_mapped_block_is_freed(found):
    medium = found["medium_blocks"]
    if medium["mmapped_blocks_round_1"] is None:
        pytest.skip("no mallinfo2 here")
    assert medium["mmapped_blocks_round_1"] > 0 and medium["mmapped_blocks_round_2"] == 0


def test_the_claims_table_row(found):
    (row,) = [c for c in found.claims if c["key"] == "mmap_vs_malloc"]
    assert row["shown_in"] == "01 §4" and "misleading" in row["verdict"]


def test_a_touch_maps_and_caches_at_least_the_touched_pages(found, facts):
    assert found["mapped_pages"] >= found["touched_pages"]
    assert found["cached_pages"] >= found["mapped_pages"]
    if found["major_faults_touch"] >= 1 and facts.read_ahead_kb.known:
        window = facts.read_ahead_kb.value * 1024 // mmap.PAGESIZE  # one read-around
        assert found["cached_pages"] <= 4 * window


def test_misused_mappings_are_killed_by_the_right_signal(found):
    assert found["read_only_write_signal"] == "SIGSEGV"
    assert found["truncated_touch_signal"] == "SIGBUS"
