"""The page table, read from /proc/self/pagemap: a page is present once touched, not before,
for anonymous memory, numpy arrays and file mappings (where fault-around maps neighbours)."""

from __future__ import annotations

import mmap
import os

import numpy as np
import pytest

from mmlab import pagemap

PAGE = mmap.PAGESIZE


def test_anonymous_page_present_after_touch():
    with mmap.mmap(-1, 16 * PAGE) as mm:
        assert len(pagemap.present(mm)) == 16
        assert not pagemap.present(mm).any()
        mm[5 * PAGE] = 1
        present = pagemap.present(mm)
        assert present[5] and present.sum() == 1  # anonymous memory has no fault-around


def test_numpy_array_and_address_range():
    a = np.zeros(64 * PAGE, dtype=np.uint8)  # large: its own mapping, untouched
    a[::PAGE] = 1
    assert pagemap.present(a).all()
    address, nbytes = pagemap.address_of(a)
    assert nbytes == a.nbytes
    assert pagemap.present(address, 3 * PAGE).all()
    with pytest.raises(TypeError):
        pagemap.present(address)


def test_file_mapping_read_only(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(64 * PAGE))
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert not pagemap.present(mm).any()
        _ = mm[40 * PAGE]
        present = pagemap.present(mm)
        assert present[40]
        entries = pagemap.entries(mm)
        assert entries[40] & pagemap.FILE_OR_SHARED  # a file page, not anonymous


def test_unreadable_pagemap_says_why(monkeypatch):
    monkeypatch.setattr(pagemap, "_PAGEMAP", "/proc/self/no-such-pagemap")
    with mmap.mmap(-1, PAGE) as mm, pytest.raises(OSError, match="page table"):
        pagemap.present(mm)


def test_vma_counts_the_dirty_pages_of_a_shared_file_mapping(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(2 * PAGE))
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        found = pagemap.vma(mm)
        assert found["line"].endswith(str(path)) and found["end"] - found["start"] == 2 * PAGE
        mm[:5] = b"dirty"
        assert pagemap.vma(mm)["Shared_Dirty"] + pagemap.vma(mm)["Private_Dirty"] >= PAGE
        mm.flush()
        assert pagemap.vma(mm)["Shared_Dirty"] + pagemap.vma(mm)["Private_Dirty"] == 0
