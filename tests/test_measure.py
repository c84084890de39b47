"""measure(): faults, storage bytes, RSS and the page cache, on any Linux machine."""

from __future__ import annotations

import mmap
import os

import numpy as np
import pytest

from mmlab import pagecache
from mmlab.measure import Measurement, measure

PAGE = mmap.PAGESIZE


def _write_each_page(mm: mmap.mmap) -> None:
    np.frombuffer(mm, np.uint8)[::PAGE] = 1


@pytest.mark.parametrize("pages", [1, 16, 256])
def test_touching_fresh_anonymous_pages_counts_faults(pages):
    # A dry run first, so the interpreter's own first-time faults are out of the way.
    warm_up = mmap.mmap(-1, pages * PAGE)
    with measure():
        _write_each_page(warm_up)
    fresh = mmap.mmap(-1, pages * PAGE)
    with measure() as m:
        _write_each_page(fresh)
    assert 1 <= m.minor_faults <= pages
    assert m.major_faults == 0


def test_cold_mapped_read_shows_storage_bytes_and_cache(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(8 * 2**20))
    pagecache.evict(path)
    with measure(file=path) as m, open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        total = int(np.frombuffer(mm, np.uint8)[::PAGE].sum())
        del total
    assert m.cached_pages_before == 0 and m.cached_pages_after == m.file_pages == 2048
    assert m.read_bytes >= 8 * 2**20  # readahead may fetch more, never less
    assert m.minor_faults + m.major_faults >= 1
    assert m.rchar_bytes < 2**20  # no read() calls: the bytes came through the mapping
    mm.close()


def test_read_calls_count_as_rchar(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 2**20)
    with measure() as m, open(path, "rb", buffering=0) as f:
        f.read()
    assert m.rchar_bytes >= 2**20


def test_rss_grows_with_touched_memory():
    fresh = mmap.mmap(-1, 64 * 2**20)
    with measure(uss_pss=True) as m:
        _write_each_page(fresh)
    assert m.rss_delta >= 60 * 2**20
    assert m.uss_after - m.uss_before >= 60 * 2**20
    assert m.pss_after >= m.uss_after


def test_times_and_reprs():
    with measure("label") as m:
        sum(range(100_000))
    assert m.wall_s > 0 and m.cpu_s > 0
    assert repr(m).startswith("<Measurement label: wall ")
    assert "storage read" in repr(m) and "faults" in repr(m)
    assert "<table>" in m._repr_html_() and "minor page faults" in m._repr_html_()


def test_decorator_keeps_the_latest_measurement():
    @measure()
    def work(n):
        return sum(range(n))

    assert work(10) == 45
    assert isinstance(work.measurement, Measurement)
    assert work.measurement.label == "work"


def test_missing_counters_show_as_not_available():
    m = Measurement()
    assert "n/a minor" in repr(m) and "storage read n/a" in repr(m)


def test_counters_subtract_to_a_change():
    from mmlab.measure import counters

    fresh = mmap.mmap(-1, 16 * 2**20)  # not malloc, whose arenas may already be resident
    start = counters()
    _write_each_page(fresh)
    change = counters() - start
    assert change.wall_s > 0 and change.minor_faults >= 1
    assert change.rss >= 15 * 2**20
