"""Moves between files: views that follow every growth, what growth publishes, replaced stores.

A growth copies the store into a bigger file and renames it into place. Views taken at any
moment must stay live (reading and writing the current data) across any number of growths,
for the writer and for readers that refresh; a file that is not a growth of the store is
never followed.
"""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
from conftest import FIELDS, run_in_child, smiles_of, value_row

from mmlab import RecordStore, StoreError, StoreReplacedError
from mmlab.store.format import Layout, encode_slot, slot_size_for


def _records(start: int, stop: int):
    return ((smiles_of(i), value_row(i)) for i in range(start, stop))


def _mappings_of(path) -> int:
    """How many mappings of this store's files (current or replaced) the process holds."""
    name = os.path.basename(path)
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if name in line)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_views_stay_live_across_many_growths(store_path):
    store = RecordStore.create(store_path, ["a"], capacity=2)
    store.extend([("x", [1.0]), ("y", [2.0])])
    early = store.column("a")
    store.append("z", [3.0])  # first growth
    middle = store.column("a")
    store.extend([("w", [4.0])] * 10)  # second growth
    store.extend([("v", [5.0])] * 100)  # third
    early[0] = 99.0
    middle[2] = -3.0
    assert store[0].values[0] == 99.0 and store[2].values[0] == -3.0
    store.column("a")[1] = 7.0
    assert early[1] == middle[1] == 7.0
    store.close()
    with RecordStore.open(store_path) as reopened:
        assert reopened.column("a")[:3].tolist() == [99.0, 7.0, -3.0]


def test_reader_views_stay_live_across_many_refreshes(store_path):
    with RecordStore.create(store_path, FIELDS, capacity=2) as writer:
        writer.extend(_records(0, 2))
        writer.flush()
        reader = RecordStore.open(store_path)
        early = reader.column("mu")
        for stop in (10, 100, 1000):  # three growths, each followed by a refresh
            writer.extend(_records(len(writer), stop))
            writer.flush()
            assert reader.refresh() == stop
        writer.column("mu")[1] = -1.0
        assert early[1] == -1.0
        assert reader[999].smiles == smiles_of(999)
        reader.close()


def test_close_unmaps_everything_no_view_holds(store_path):
    store = RecordStore.create(store_path, FIELDS, capacity=2)
    store.extend(_records(0, 2))
    view = store.column("mu")
    for stop in (10, 100, 1000):
        store.extend(_records(len(store), stop))
    late = store.column("U0")
    store.close()
    assert _mappings_of(store_path) > 0  # the views keep their pages mapped
    assert view[:2].tolist() == [0.0, 1.0] and late[999] == -1998.0
    del view, late
    gc.collect()
    assert _mappings_of(store_path) == 0


def test_growth_publishes_only_what_was_flushed(store_path):
    with RecordStore.create(store_path, FIELDS, capacity=2) as writer:
        writer.append("C", [1, 2, 3])
        writer.flush()
        writer.append("N", [4, 5, 6])  # fits: not flushed
        writer.extend(_records(0, 50))  # grows, not flushed
        with RecordStore.open(store_path) as reader:
            assert len(reader) == 1
        writer.flush()
        with RecordStore.open(store_path) as reader:
            assert len(reader) == 52 and reader[51].smiles == smiles_of(49)


def test_a_rejected_extend_that_grew_the_file_publishes_nothing(store_path):
    def records():
        yield from (("C", [1.0, 2.0, 3.0]) for _ in range(131_072))  # grows in a later batch
        yield ("N", [1.0])

    with RecordStore.create(store_path, FIELDS, capacity=65_537) as writer:
        with pytest.raises(ValueError, match="record 131072 has 1 values"):
            writer.extend(records())
        assert len(writer) == 0
        with RecordStore.open(store_path) as reader:
            assert len(reader) == 0
        writer.append("O", [4, 5, 6])
        writer.flush()
    with RecordStore.open(store_path) as reader:
        assert [(r.smiles, r.values.tolist()) for r in reader] == [("O", [4.0, 5.0, 6.0])]


def _replace_under_a_reader(path, fields, capacity):
    with RecordStore.create(path, FIELDS, capacity=1000) as writer:
        writer.extend(_records(0, 500))
    reader = RecordStore.open(path)
    view = reader.column("mu")
    fds = _open_fds()
    with RecordStore.create(path, fields, capacity=capacity, overwrite=True) as other:
        other.extend(("X", [0.0] * len(fields)) for _ in range(capacity))
    with pytest.raises(StoreReplacedError, match="replaced by a different store"):
        reader.refresh()
    assert _open_fds() == fds  # the new file's descriptor was closed
    assert len(reader) == 500 and reader.fields == FIELDS  # not half-switched
    assert view[499] == 499.0 and reader[499].smiles == smiles_of(499)
    reader.close()


def test_a_smaller_store_under_a_reader_is_not_followed(store_path):
    run_in_child(_replace_under_a_reader, store_path, FIELDS, 10)


def test_a_store_with_other_fields_under_a_reader_is_not_followed(store_path):
    run_in_child(_replace_under_a_reader, store_path, ("a", "b"), 5000)


def _write_store_aligned_to(path, alignment: int, capacity: int) -> None:
    """A valid empty store whose sections are aligned to ``alignment`` bytes, as one written
    on a machine whose pages are that small (4 KiB stores met 16 KiB pages the same way)."""
    layout = Layout(slot_size_for(FIELDS), alignment, capacity, capacity * 32, len(FIELDS))
    data = bytearray(layout.file_size)
    slot = encode_slot(layout, FIELDS, sequence=1, count=0)
    data[: len(slot)] = data[len(slot) : 2 * len(slot)] = slot
    path.write_bytes(bytes(data))


def _grow_a_store_aligned_below_the_page(path):
    _write_store_aligned_to(path, 1024, capacity=4)
    with RecordStore.open(path, "r+") as store:
        store.extend(_records(0, 4))
        view = store.column("mu")
        fds = _open_fds()
        with pytest.raises(StoreError, match="views you hold"):
            store.extend(_records(4, 100))
        assert _open_fds() == fds and len(store) == 4 and view[3] == 3.0
        del view
        store.extend(_records(4, 100))  # with no view held, the store moves and re-aligns
        assert all(offset % 65536 == 0 for offset, _ in store.sections.values())
        view = store.column("mu")
        store.extend(_records(100, 5000))
        view[0] = -5.0  # from now on views follow
        assert store[0].values[0] == -5.0
    with RecordStore.open(path) as store:
        assert [r.smiles for r in store[:100]] == [smiles_of(i) for i in range(100)]
        np.testing.assert_array_equal(store.column("U0")[1:], -2.0 * np.arange(1, 5000))


def test_a_store_aligned_below_the_page_size_still_grows(store_path):
    run_in_child(_grow_a_store_aligned_below_the_page, store_path)


def test_new_stores_align_sections_for_any_common_page_size(store_path):
    with RecordStore.create(store_path, FIELDS) as store:
        assert all(offset % 65536 == 0 for offset, _ in store.sections.values())


def test_a_failed_remap_after_growth_closes_the_store_cleanly(store_path, monkeypatch):
    from mmlab.store import remap

    def refuse(*args, **kwargs):
        raise OSError(12, "mmap(MAP_FIXED) failed: Cannot allocate memory")

    store = RecordStore.create(store_path, FIELDS, capacity=2)
    store.extend(_records(0, 2))
    store.flush()
    view = store.column("mu")
    fds = _open_fds()
    monkeypatch.setattr(remap, "map_over", refuse)
    with pytest.raises(StoreError, match="open the store again"):
        store.extend(_records(2, 10))
    assert store.closed and _open_fds() == fds - 1  # the old file's descriptor is closed too
    assert view[1] == 1.0  # still mapped, not a crash
    monkeypatch.undo()
    with RecordStore.open(store_path, "r+") as reopened:  # and the lock was released
        assert [r.smiles for r in reopened] == [smiles_of(0), smiles_of(1)]
