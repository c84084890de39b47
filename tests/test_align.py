"""Alignment helpers and map_range, checked against plain file reads."""

from __future__ import annotations

import mmap
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmlab import align

SIZE = 5 * mmap.ALLOCATIONGRANULARITY + 123
DATA = os.urandom(SIZE)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("align") / "data.bin"
    path.write_bytes(DATA)
    return path


def test_sizes():
    assert align.page_size() == mmap.PAGESIZE
    assert align.allocation_granularity() % align.page_size() == 0


def test_align_down_up_and_tail_waste():
    page = align.page_size()
    assert align.align_down(page + 1) == page and align.align_down(page) == page
    assert align.align_up(page + 1) == 2 * page and align.align_up(0) == 0
    assert align.tail_waste(page) == 0 and align.tail_waste(page + 1) == page - 1
    assert align.tail_waste(0) == 0
    with pytest.raises(ValueError):
        align.align_down(-1)


def test_an_unaligned_offset_fails_in_plain_mmap(data_file):
    with open(data_file, "rb") as f, pytest.raises(OSError):
        mmap.mmap(f.fileno(), 10, access=mmap.ACCESS_READ, offset=1)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, SIZE), st.integers(0, SIZE))
def test_map_range_returns_the_bytes_read_returns(data_file, offset, length):
    length = min(length, SIZE - offset)
    view = align.map_range(data_file, offset, length)
    assert bytes(view) == DATA[offset : offset + length]
    view.release()


def test_map_range_past_the_end(data_file):
    with pytest.raises(ValueError, match="past the end"):
        align.map_range(data_file, SIZE - 10, 11)
    with pytest.raises(ValueError):
        align.map_range(data_file, -1, 1)


def test_writable_range(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"\0" * 10000)
    view = align.map_range(path, 4097, 3, writable=True)
    view[:] = b"abc"
    view.release()
    assert path.read_bytes()[4097:4100] == b"abc"
