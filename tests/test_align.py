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


def test_plot_sections_zooms_on_the_largest_padding():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = {"a": (65536, 1000), "b": (131072, 60000), "c": (196608, 10)}
    whole, zoom = align.plot_sections(sections, 262144, title="t")
    low, high = zoom.get_xlim()
    # "a" ends at 66,536 and "b" starts 64,536 bytes later: the largest padding
    assert low * 1024 < 66536 < 131072 < high * 1024
    assert "64,536 bytes" in " ".join(t.get_text() for t in zoom.texts)
    assert whole.get_xlim() == (0, 256)
    plt.close("all")
    with pytest.raises(ValueError, match="two sections"):
        align.plot_sections({"a": (0, 10)}, 4096)


def test_padding_after_a_section():
    sections = {"a": (65536, 1000), "b": (131072, 60000)}
    assert align.padding_after(sections, "a", 262144) == 131072 - 66536
    assert align.padding_after(sections, "b", 262144) == 262144 - 191072  # up to the file's end


def test_a_tiny_file_costs_one_cached_page_read_or_mapped(tmp_path):
    tiny = tmp_path / "tiny.bin"
    tiny.write_bytes(bytes(100))
    cost = align.tail_cost(tiny)
    assert cost.size == 100 and str(cost).startswith("a 100-byte file")
    if cost.cached_after_read is None:  # the kernel hides this file's page cache here
        assert "cannot be counted" in cost.cached
    else:
        assert cost.cached_after_read == cost.cached_after_mmap == 1


def test_the_zoom_box_is_visible_on_a_large_file():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = {"a": (65536, 1000), "b": (131072, 60000), "c": (2**30, 10)}
    whole, _ = align.plot_sections(sections, 2**30 + 65536)
    box = whole.patches[-1].get_path().get_extents(whole.patches[-1].get_transform())
    assert box.width >= 0.015 * whole.get_window_extent().width  # not a hairline
    plt.close("all")


def test_describe_padding_gives_read_and_fault_reach_apart():
    sections = {"mu": (65536, 16_000), "alpha": (131072, 16_000)}
    text = align.describe_padding(sections, "mu", 196_608, 128)
    assert "padding after mu: 49,536 B" in text and "more than the field" in text
    assert "read() of it may bring up to 2.0 sections' worth" in text
    assert "a fault in a mapping of it may bring up to 1.0 sections' worth" in text
    assert "cannot be said" in align.describe_padding(sections, "mu", 196_608, None)
