"""read_vs_mmap: every method reads the same bytes, and the table carries the instruments."""

from __future__ import annotations

import os

import pytest

from mmlab import bench


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(3 * 2**20 + 12345))
    return path


@pytest.mark.parametrize(
    ("pattern", "cache", "madvise"),
    [
        ("sequential", "warm", None),
        ("random", "cold", "random"),
        ("sequential", "cold", "populate"),
    ],
)
def test_every_method_sees_the_same_bytes(data_file, pattern, cache, madvise):
    result = bench.read_vs_mmap(
        data_file, pattern=pattern, cache=cache, repeats=1, block_size=65536, madvise=madvise
    )
    assert [r["method"] for r in result.rows] == list(bench.METHODS)
    assert len({r["checksum"] for r in result.rows}) == 1
    assert all(r["gb_s"] > 0 and r["fraction_of_copy"] > 0 for r in result.rows)
    assert result.bandwidth > 0
    if cache == "cold":
        # every run started from an evicted file, so each brought the whole file in
        assert all(r["cached_pages_delta"] > 0 for r in result.rows)
    assert "memory copy" in result.table() and "<table>" in result._repr_html_()


def test_plot(data_file):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = bench.read_vs_mmap(data_file, repeats=1, methods=("read", "mmap slice"))
    ax = result.plot()
    assert len(ax.patches) == 2
    plt.close(ax.figure)


@pytest.mark.parametrize(
    "kwargs",
    [{"pattern": "zigzag"}, {"cache": "hot"}, {"madvise": "dontneed"}, {"methods": ("mmap2",)}],
)
def test_bad_arguments(data_file, kwargs):
    with pytest.raises(ValueError):
        bench.read_vs_mmap(data_file, **kwargs)


def test_memory_bandwidth_is_plausible():
    assert 1e8 < bench.memory_bandwidth(16 * 2**20) < 1e12


def test_access_orders():
    assert bench.access_order(10, "sequential").tolist() == list(range(10))
    assert sorted(bench.access_order(10, "random").tolist()) == list(range(10))
    assert bench.access_order(10, "strided", stride=4).tolist() == [0, 4, 8]
    assert len(bench.access_order(100, "random", count=5)) == 5
    with pytest.raises(ValueError):
        bench.access_order(10, "diagonal")


def test_sample_file_and_touch_pages(tmp_path):
    import mmap

    path = bench.sample_file(tmp_path / "s.bin", 10 * mmap.PAGESIZE)
    data = path.read_bytes()
    assert len(data) == 10 * mmap.PAGESIZE and len(set(data)) > 200  # real, varied bytes
    stamp = path.stat().st_mtime_ns
    assert bench.sample_file(path, 10 * mmap.PAGESIZE).stat().st_mtime_ns == stamp  # reused
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        total = bench.touch_pages(mm, [0, 3, 9])
    assert total == data[0] + data[3 * mmap.PAGESIZE] + data[9 * mmap.PAGESIZE]
