"""Notebook 03's claims, read from its quick run and checked against this machine's report."""

from __future__ import annotations

import mmap

import pytest

from mmlab import machine

PAGE = mmap.PAGESIZE
CACHED_FACTOR = 4  # one cold touch's cached pages vs the report's probe: same kernel, same rule
LIVE_FACTOR = 1.5  # fault counts with and without the live view


@pytest.fixture(scope="module")
def run(executed):
    return executed("03")


@pytest.fixture(scope="module")
def facts():
    return machine.report()


def test_quick_run_is_quick(run):
    _, seconds, _ = run
    assert seconds < 90


def test_mapping_loads_nothing_and_ten_touches_read_a_part(run):
    found = run[2]
    assert found["map_faults"] == 0
    assert found["map_read_bytes"] == 0
    assert found["touch10_faults"] >= 10
    # quick mode must show lazy loading too: the file is sized to 40 readahead windows
    assert found["touch10_read_bytes"] < found["file_bytes"] / 2
    assert found["touch10_mapped_bytes"] < found["file_bytes"] / 10


def test_one_cold_touch_caches_what_the_report_predicts(run, facts):
    found = run[2]
    if not facts.eviction_works.value or not facts.cold_touch.known:
        pytest.skip("eviction does not work here: no cold touch to compare")
    expected = facts.cold_touch.value["pages_cached"]
    assert found["cold_major_faults"] >= 1
    assert expected / CACHED_FACTOR <= found["cold_cached_pages"] <= expected * CACHED_FACTOR
    assert found["cold_cached_at_once"] <= found["cold_cached_pages"]
    if facts.read_ahead_kb.known:  # readahead reads about one window, never the whole file
        window = facts.read_ahead_kb.value * 1024 // PAGE
        assert found["cold_cached_pages"] <= CACHED_FACTOR * max(window, 32)
    few = found["cold_cached_pages"] < 32  # no readahead to speak of: mapped may equal cached
    assert found["cold_mapped_pages"] < found["cold_cached_pages"] or few


def test_sparse_strides_stay_lazy_where_the_machine_sizes_are_smaller(run, facts):
    found = run[2]
    if not facts.eviction_works.value:
        pytest.skip("eviction does not work here: every stride is warm")
    warm = facts.warm_touch.value["pages_mapped"] if facts.warm_touch.known else 512
    widest = max(_window(facts) or 2048, warm, 16)
    rows = zip(
        found["strides"], found["stride_read_share"], found["stride_mapped_share"], strict=True
    )
    sparse = [(s, read, mapped) for s, read, mapped in rows if s > widest]
    assert sparse, f"quick mode must include a stride wider than {widest} pages"
    for stride, read, mapped in sparse:
        assert mapped < 0.5, f"every {stride}th page mapped {mapped:.0%} of the file"
        assert read < 0.75, f"every {stride}th page read {read:.0%} of the file"
    # the densest stride touched 1/16 of the pages: it can never map less than that
    assert found["stride_mapped_share"][0] >= 1 / 16 * 0.9


def _window(facts) -> int | None:
    """Pages one cold fault reads: read_ahead_kb, else what the doctor's cold touch cached."""
    if facts.read_ahead_kb.known:
        return facts.read_ahead_kb.value * 1024 // PAGE
    return facts.cold_touch.value["pages_cached"] if facts.cold_touch.known else None


def test_willneed_reads_about_one_window_not_the_file(run, facts):
    found = run[2]
    if not facts.eviction_works.value:
        pytest.skip("eviction does not work here: the file is cached before any hint")
    file_pages = found["file_bytes"] // PAGE
    assert 0 < found["willneed_cached_pages"] < file_pages / 2
    window = _window(facts)
    if window:  # max(read_ahead_kb, max_sectors_kb): a device's largest I/O is a few MiB
        assert found["willneed_cached_pages"] <= max(CACHED_FACTOR * window, 4 * 2**20 // PAGE)


def test_live_view_does_not_change_the_fault_counts(run):
    found = run[2]
    live, quiet = found["live_faults"], found["quiet_faults"]
    assert quiet / LIVE_FACTOR <= live <= quiet * LIVE_FACTOR


def test_cold_run_is_slower_than_warm(run, facts):
    found = run[2]
    if facts.eviction_works.value:
        assert found["cold_run_seconds"] > found["warm_run_seconds"]


def test_claims_rows_are_recorded(run):
    claims = {c["key"]: c for c in run[2].claims}
    assert set(claims) >= {"lazy", "faults"}
    assert claims["lazy"]["claim"].startswith("Lazy loading")
    assert claims["faults"]["claim"] == "Page faults decide what loads"
    for row in claims.values():
        assert any(ch.isdigit() for ch in row["measured"])
        assert row["verdict"]
