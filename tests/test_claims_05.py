"""Notebook 05's claims, read back from its quick-mode run in a fresh copy of notebooks/.

Machine-dependent claims are checked against the facts the notebook's own machine report gave
(``machine.report(DATA)``: the file system under data/, whether eviction works).
"""

from __future__ import annotations

import pytest

from mmlab import blog
from mmlab.data import blogsize


@pytest.fixture(scope="module")
def found(executed):
    # PyG's SMILES of all of QM9 are computed once per cache (about a minute): do it before
    # the notebook runs, so its quick-mode time is that of a second run
    blogsize.pyg_counts(progress=False)
    return executed("05")[2]


def test_the_full_files_numbers_follow_from_pygs_smiles(found):
    full = blogsize.full_layout(blogsize.pyg_counts())
    assert found["smiles_lengths_agree"]  # the loaded dataset's strings have these lengths
    assert found["full_records"] == full.records
    assert found["full_data_bytes"] == full.data_bytes
    assert found["full_tail"] == blog.BLOG_SIZE - full.data_bytes
    assert found["full_phantoms"] == found["full_tail"] // 12
    assert found["full_remainder"] == found["full_tail"] % 12
    assert found["full_ending"] == full.ending


def test_the_scaled_run_ends_as_the_full_file_would(found):
    assert found["scaled_remainder"] == found["full_remainder"]
    assert found["scaled_error"] == found["scaled_ending"] == found["full_ending"]
    if found["full_remainder"]:
        assert found["scaled_error"].startswith("struct.error")


def test_the_scan_allocated_the_sparse_files_blocks(found):
    sparse, _, end = found["allocated"]
    size = found["scaled_filesize"]
    assert sparse < size / 10 and end >= size - 4096


def test_flushing_every_record_writes_far_more_than_the_data(found):
    if found["filesystem"] in ("tmpfs", "ramfs"):
        pytest.skip("no storage under tmpfs: the write bytes are not charged the same way")
    assert found["write_bytes_flush_every"] > 10 * found["write_data_bytes"]
    assert found["estimate_write_bytes"] > 10 * blog.BLOG_SIZE


def test_each_cause_is_a_speed_up_on_a_disk(found):
    if found["filesystem"] in ("tmpfs", "ramfs"):
        pytest.skip("on tmpfs a flush waits for no storage")
    assert found["flush_once_speedup"] > 1 and found["flush_once_side"] == 1
    assert found["speedup_flush"] > 1 and found["speedup_flush_side"] == 1
    assert found["speedup_layout"] > 1


def test_the_estimate_has_its_spread(found):
    low, high = found["estimate_spread_seconds"]
    assert 0 < low <= found["estimate_seconds"] <= high


def test_the_store_touched_only_u0s_pages(found):
    if not found["eviction_works"]:
        pytest.skip("eviction does not work here: the store starts warm")
    assert found["store_sections_cached"] == ["U0"]
    assert found["store_u0_cached_pages"] <= found["u0_pages"]


def test_the_claims_table_rows_of_05_are_recorded(executed):
    from mmlab.course import results

    rows = {c["key"]: c for c in results.from_notebook(executed("05")[0]).claims}
    assert set(rows) == {"flush_every_write", "qm9_example"}
    assert "struct.error" in rows["qm9_example"]["measured"]


def test_pyg_loads_all_of_qm9_into_anonymous_memory(found):
    assert found["pyg_base"] == "InMemoryDataset"
    assert found["pyg_anon_growth"] > 0.5 * found["pyg_held"]
    # QM9's first molecules are its smallest: scaling by molecules alone underestimates
    assert found["pyg_all_estimate"] > found["pyg_all_per_molecule"]
