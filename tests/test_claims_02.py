"""Notebook 02's claims, read back from its quick-mode run in a fresh copy of notebooks/.

Machine-dependent claims are checked against this machine's report (``mmlab.machine``):
the allocation granularity, the page size, ``vm.max_map_count`` and ``RLIMIT_NOFILE``.
"""

from __future__ import annotations

import pytest

from mmlab import machine
from mmlab.course import mapcount


@pytest.fixture(scope="module")
def found(executed):
    return executed("02")[2]


@pytest.fixture(scope="module")
def facts():
    return machine.report(measure=False)


def test_unaligned_offsets_are_refused(found, facts):
    granularity = facts.allocation_granularity.value
    assert found["granularity"] == granularity
    assert found["refused_offsets"] == [o for o in (0, 100, 4096, 6000, 8192) if o % granularity]
    assert all("EINVAL" in found["outcomes"][str(o)] for o in found["refused_offsets"])


def test_the_waste_is_under_one_page(found, facts):
    page = facts.page_size.value
    assert found["max_waste"] == page - 1
    assert found["waste_fraction_1gb"] < page / 1e9
    assert found["waste_100"] == page - 100


def test_a_tiny_file_costs_one_cached_page_whether_read_or_mapped(found):
    if found["tiny_cached_read"] is not None:  # None: this process cannot count cached pages
        assert found["tiny_cached_read"] == found["tiny_cached_mmap"] == 1
    assert found["tiny_disk"] == 0 or found["tiny_disk"] >= 100  # inline in metadata, or blocks


def test_the_padding_after_a_field_and_the_readahead_reach(found, facts):
    # quick mode: 2,000 molecules, a 16,000-byte field padded to 64 KiB
    assert found["mu_size"] == 2_000 * 8
    assert found["mu_padding"] == 65536 - 16_000 > found["mu_size"]
    ra = facts.read_ahead_kb.value
    if ra is not None:
        assert found["readahead_sections"] == pytest.approx(ra * 1024 / 65536)


def test_one_mapping_costs_about_the_same_whatever_its_size(found):
    # noisy machine: the size changes the cost by far less than the count does
    assert 0.25 < found["large_over_one"] < 4
    assert found["total_over_one_large"] > 100
    assert 0 < found["syscall_share"] < 1.5 and found["one_page_us"] > 0
    assert found["larger_part"] in ("kernel", "python", None)


def test_each_held_mapping_takes_a_vma_and_a_file_descriptor(found):
    assert found["held"] > 0
    assert found["vmas_per_mapping"] == pytest.approx(1, abs=0.05)
    assert found["fds_per_mapping"] == pytest.approx(1, abs=0.05)


def test_the_child_hit_vm_max_map_count(found, facts):
    limit = facts.max_map_count.value
    assert found["max_map_count"] == limit
    if limit < mapcount.DEFAULT_CAP:
        assert found["vma_error"] == "ENOMEM"
        assert limit - 2 <= found["vmas_reached"] <= limit


def test_the_lower_limit_stopped_python_mmap_first(found, facts):
    soft, limit = facts.rlimit_nofile.value["soft"], facts.max_map_count.value
    first = mapcount.first_refusal(limit, soft)
    assert found["python_error"] == first
    if first == "EMFILE":
        assert soft - 200 < found["python_mappings"] < soft
    elif first is None:  # both limits at or above the cap: the child stopped there
        assert found["python_mappings"] == mapcount.DEFAULT_CAP


def test_the_claims_table_rows(found):
    rows = {c["key"]: c for c in found.claims}
    assert set(rows) == {"alignment", "overhead", "fragmentation"}
    assert {c["claim"] for c in found.claims} == {
        "Page alignment and wasted space",
        "Kernel overhead of mappings",
        "Fragmentation and limited address space",
    }
    measured = rows["fragmentation"]["measured"]
    assert f"{found['max_map_count']:,}" in measured
    assert (found["vma_error"] or "stopped at the cap") in measured
    assert (found["python_error"] or "stopped at the cap") in measured
    larger = found["larger_part"]
    said = {"kernel": "system calls", "python": "Python's mmap object", None: "cannot tell"}[larger]
    assert said in rows["overhead"]["verdict"]
    assert rows["alignment"]["verdict"].startswith("partly true")
