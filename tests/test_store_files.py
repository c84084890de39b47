"""The store's files: reserved space, locks that a create respects, non-regular files, no pread.

The full-disk and many-process races live in the torture suite (``tests/torture``); these are
the quick, deterministic checks of the same promises.
"""

from __future__ import annotations

import os

import pytest
from conftest import FIELDS, run_in_child, smiles_of, value_row

from mmlab import NotAStoreError, RecordStore, StoreLockedError
from mmlab.store import files


def _allocated(path) -> int:
    return os.stat(path).st_blocks * 512


def test_space_is_reserved_at_create_and_at_growth(store_path):
    with RecordStore.create(store_path, FIELDS, capacity=10_000) as store:
        assert _allocated(store_path) >= store.nbytes  # not sparse: no SIGBUS on a full disk
        store.extend((smiles_of(i), value_row(i)) for i in range(30_000))
        assert _allocated(store_path) >= store.nbytes


def test_opening_an_old_sparse_store_for_writing_reserves_its_space(filled):
    data = filled.read_bytes()
    filled.unlink()
    with open(filled, "wb") as f:  # the same bytes, with holes where the zeros were
        for at in range(0, len(data), 4096):
            block = data[at : at + 4096]
            if block.strip(b"\0"):
                f.seek(at)
                f.write(block)
        f.truncate(len(data))
    assert _allocated(filled) < len(data)
    with RecordStore.open(filled, "r+") as store:
        assert _allocated(filled) >= store.nbytes
        assert store[99].smiles == smiles_of(99)


def test_create_with_overwrite_refuses_a_store_with_a_live_writer(filled):
    with RecordStore.open(filled, "r+") as writer:
        with pytest.raises(StoreLockedError, match="one writer at a time"):
            RecordStore.create(filled, FIELDS, overwrite=True)
        writer.append("CC", [1, 2, 3])
    with RecordStore.open(filled) as store:
        assert len(store) == 101 and store[-1].smiles == "CC"
    assert sorted(p.name for p in filled.parent.iterdir()) == [filled.name]  # no temp left


def test_create_with_overwrite_replaces_a_closed_store(filled):
    with RecordStore.create(filled, ["a"], overwrite=True) as store:
        assert len(store) == 0 and store.fields == ("a",)
    assert sorted(p.name for p in filled.parent.iterdir()) == [filled.name]


def test_a_create_that_fails_leaves_nothing_behind(store_path):
    with pytest.raises(ValueError, match="unique"):
        RecordStore.create(store_path, ["a", "a"])
    RecordStore.create(store_path, FIELDS).close()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        RecordStore.create(store_path, FIELDS)
    assert sorted(p.name for p in store_path.parent.iterdir()) == [store_path.name]


def test_stale_temp_files_of_a_killed_writer_are_removed(filled):
    stale = filled.with_name(f".{filled.name}.0123456789ab.growing")
    stale.write_bytes(b"half a store")
    with RecordStore.open(filled, "r+"):
        assert not stale.exists()


def test_a_temp_file_that_a_live_writer_holds_is_kept(filled):
    tmp, fd = files.new_temp(filled, "growing")
    try:
        files.remove_stale_temps(filled)
        assert tmp.exists()
    finally:
        os.close(fd)
        tmp.unlink()


def _open_a_fifo(path):
    os.mkfifo(path)
    for mode in ("r", "r+", "c"):
        with pytest.raises(NotAStoreError, match="not a regular file"):
            RecordStore.open(path, mode)


def test_a_fifo_is_refused_without_blocking(store_path):
    run_in_child(_open_a_fifo, store_path, timeout=20)


def test_reading_works_without_pread(filled, monkeypatch):
    monkeypatch.delattr(os, "pread")
    with RecordStore.open(filled) as store:
        assert [r.smiles for r in store] == [smiles_of(i) for i in range(100)]
        assert store.refresh() == 100
