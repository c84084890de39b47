"""Residency and eviction: 0% after evict on disk, 100% after a full read, refused on tmpfs."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from mmlab import pagecache


@pytest.fixture
def disk_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(4 * 2**20 + 100))  # not a whole number of pages
    if pagecache.on_tmpfs(path):
        pytest.skip("the temporary directory is on tmpfs here")
    return path


def test_evict_then_read_fully(disk_file):
    report = pagecache.evict(disk_file)
    assert report.resident_after == 0 and report.reason is None
    resident = pagecache.residency(disk_file)
    assert len(resident) == -(-disk_file.stat().st_size // mmap.PAGESIZE)
    assert resident.mean() == 0.0
    disk_file.read_bytes()
    assert pagecache.residency(disk_file).mean() == 1.0


def test_cache_stats_agree_with_residency(disk_file):
    disk_file.read_bytes()
    try:
        stats = pagecache.cache_stats(disk_file)
    except pagecache.UnsupportedPlatformError:
        pytest.skip("this kernel has no cachestat")
    assert stats.cached == pagecache.residency(disk_file).sum()


def test_eviction_is_impossible_on_tmpfs():
    shm = Path("/dev/shm")
    if not shm.is_dir() or not pagecache.on_tmpfs(shm):
        pytest.skip("no tmpfs at /dev/shm")
    path = shm / f"mmlab-test-{os.getpid()}.bin"
    try:
        path.write_bytes(b"y" * 2**20)
        with pytest.warns(pagecache.EvictionWarning, match="tmpfs"):
            report = pagecache.evict(path)
        assert report.resident_after == report.pages and "tmpfs" in report.reason
    finally:
        path.unlink(missing_ok=True)


def test_a_mapping_held_open_is_named_as_the_reason(disk_file):
    with open(disk_file, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        mm.madvise(mmap.MADV_WILLNEED)
        bytes(mm)  # fault every page into this process
        with pytest.warns(pagecache.EvictionWarning, match="still mapped by this process"):
            report = pagecache.evict(disk_file)
    assert report.resident_after > 0


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty"
    empty.touch()
    assert len(pagecache.residency(empty)) == 0
    with pytest.raises(FileNotFoundError):
        pagecache.residency(tmp_path / "missing")


def test_plot_residency(disk_file):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pagecache.evict(disk_file)
    with open(disk_file, "rb") as f:
        f.read(2**20)
    ax = pagecache.plot_residency(pagecache.residency(disk_file))
    assert "pages cached" in ax.get_title()
    plt.close(ax.figure)
