"""measure(): faults, storage bytes read and written, memory by kind and the page cache."""

from __future__ import annotations

import dataclasses
import gc
import importlib
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mmlab import pagecache
from mmlab.instruments.measure import Measurement, measure

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
    gc.collect()
    gc.disable()  # a collection inside the block would fault pages of its own
    try:
        with measure() as m:
            _write_each_page(fresh)
    finally:
        gc.enable()
    # getrusage counts the whole process: another thread (a sampler) may fault once meanwhile
    assert 1 <= m.minor_faults <= pages + 1
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
    from mmlab.instruments.measure import counters

    fresh = mmap.mmap(-1, 16 * 2**20)  # not malloc, whose arenas may already be resident
    start = counters()
    _write_each_page(fresh)
    change = counters() - start
    assert change.wall_s > 0 and change.minor_faults >= 1
    assert change.rss >= 15 * 2**20


# -- storage bytes written --------------------------------------------------------------------


def _on_disk(tmp_path) -> None:
    if pagecache.on_tmpfs(tmp_path):
        pytest.skip("tmp_path is on tmpfs, whose pages are never written to storage")


def test_write_and_fsync_count_storage_bytes_written(tmp_path):
    _on_disk(tmp_path)
    data = os.urandom(4 * 2**20)
    fd = os.open(tmp_path / "out.bin", os.O_WRONLY | os.O_CREAT)
    try:
        with measure() as m:
            os.write(fd, data)
            os.fsync(fd)
    finally:
        os.close(fd)
    assert m.write_bytes >= len(data)
    assert m.cancelled_write_bytes == 0  # nothing was truncated
    assert f"storage written {m.write_bytes / 2**20:,.1f} MiB" in repr(m)
    assert "written to storage" in m._repr_html_()


def test_flushing_each_small_write_is_write_amplification(tmp_path):
    # The blog's pattern: change a few bytes of a mapped page, flush, again. Each msync
    # cleans the page, so the next write dirties it again and it goes to storage again.
    _on_disk(tmp_path)
    path = tmp_path / "records.bin"
    path.write_bytes(bytes(PAGE))
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), PAGE) as mm:
        mm.flush()  # clean to start with: write_bytes() above left the page dirty
        with measure() as m:
            for i in range(64):
                mm[0:8] = i.to_bytes(8, "little")
                mm.flush()
    assert m.write_bytes >= 64 * PAGE  # 512 bytes of data, at least 256 KiB to storage
    assert m.minor_faults >= 64  # each write after a flush faults to dirty the page again


def test_empty_block_reads_nothing():
    # measure()'s own read of /proc/self/io counts in rchar; it is taken back out.
    with measure() as m:
        pass
    assert m.rchar_bytes == 0 and m.read_bytes == 0 and m.write_bytes == 0


# -- memory by kind ------------------------------------------------------------------------


MiB = 2**20


def _kinds_changes(m: Measurement, total: str = "rss") -> dict[str, int]:
    return {kind: m.delta(f"{total}_{kind}") for kind in ("anon", "file", "shmem")}


def test_private_anonymous_memory_is_anon():
    fresh = mmap.mmap(-1, 32 * MiB, flags=mmap.MAP_PRIVATE)
    with measure(memory_kinds=True, uss_pss=True) as m:
        _write_each_page(fresh)
    rss, pss = _kinds_changes(m), _kinds_changes(m, "pss")
    assert rss["anon"] >= 30 * MiB and pss["anon"] >= 30 * MiB
    assert abs(rss["file"]) < 4 * MiB and abs(rss["shmem"]) < MiB
    assert "anon +3" in repr(m)


def test_shared_anonymous_memory_is_shmem():
    # Python's mmap.mmap(-1, n) is MAP_SHARED: shared memory, not anonymous memory.
    fresh = mmap.mmap(-1, 32 * MiB)
    with measure(memory_kinds=True) as m:
        _write_each_page(fresh)
    changes = _kinds_changes(m)
    assert changes["shmem"] >= 30 * MiB
    assert abs(changes["anon"]) < 4 * MiB and abs(changes["file"]) < 4 * MiB


def test_touching_a_mapped_file_is_file_backed(tmp_path):
    if pagecache.on_tmpfs(tmp_path):
        pytest.skip("tmp_path is on tmpfs, whose files are shared memory (RssShmem)")
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(32 * MiB))
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = np.frombuffer(mm, np.uint8)
        with measure(memory_kinds=True) as m:
            total = int(view[::PAGE].sum())
        del view
    assert total >= 0
    changes = _kinds_changes(m)
    assert changes["file"] >= 30 * MiB
    assert abs(changes["anon"]) < 4 * MiB and abs(changes["shmem"]) < MiB


def test_kinds_add_up_to_rss_from_one_read():
    with measure(memory_kinds=True) as m:
        pass
    for when in ("before", "after"):
        kinds = [getattr(m, f"rss_{kind}_{when}") for kind in ("anon", "file", "shmem")]
        assert sum(kinds) == getattr(m, f"rss_{when}")


def test_memory_by_kind_of_another_process():
    from mmlab.instruments.measure import memory_by_kind

    code = "b = bytearray(100 * 2**20); b[::4096] = b'x' * len(b[::4096]); print(1, flush=True)"
    with subprocess.Popen(
        [sys.executable, "-c", code + "; import time; time.sleep(30)"], stdout=subprocess.PIPE
    ) as child:
        child.stdout.readline()
        try:
            memory = memory_by_kind(child.pid, uss_pss=True)
        finally:
            child.kill()
    assert memory.rss_anon >= 95 * MiB and memory.uss >= 95 * MiB
    assert memory.rss == memory.rss_anon + memory.rss_file + memory.rss_shmem
    assert abs(memory.pss - (memory.pss_anon + memory.pss_file + memory.pss_shmem)) <= 2 * PAGE
    assert memory.unavailable == {}


def test_memory_by_kind_of_a_zombie_and_of_no_process():
    from mmlab.instruments.measure import memory_by_kind

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while b"\nState:\tZ" not in Path(f"/proc/{child.pid}/status").read_bytes():
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.01)
    zombie = memory_by_kind(child.pid, uss_pss=True)  # exited, not yet reaped: no memory
    assert zombie.rss == zombie.rss_anon == zombie.pss == 0 and zombie.unavailable == {}
    child.wait()
    with pytest.raises(ProcessLookupError):
        memory_by_kind(child.pid)


# -- measured, or explicitly unknown -------------------------------------------------------


def _unexplained(m: Measurement) -> list[str]:
    """Fields that are None with no reason in ``m.unavailable`` (measure everything first)."""
    missing = []
    for f in dataclasses.fields(m):
        name = f.name.removesuffix("_before").removesuffix("_after")
        if getattr(m, f.name) is None and name not in m.unavailable:
            missing.append(f.name)
    return missing


def test_every_value_is_measured_or_explained(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(16 * PAGE))
    with measure("all", memory_kinds=True, uss_pss=True, file=path) as m:
        path.read_bytes()
    assert _unexplained(m) == []
    for name in m.unavailable:  # a reason only where there is no value
        assert getattr(m, name, None) is None and getattr(m, f"{name}_after", None) is None


def test_an_unreadable_counter_is_none_with_its_reason(monkeypatch, tmp_path):
    # mmlab.measure is the measuring class; the module is imported by its path
    measure_module = importlib.import_module("mmlab.instruments.measure")
    proc = importlib.import_module("mmlab.instruments.proc")
    monkeypatch.setattr(measure_module, "_IO", proc._SelfFile("no-such-counter"))
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(PAGE))
    with measure(memory_kinds=True, uss_pss=True, file=path) as m:
        pass
    assert m.read_bytes is m.write_bytes is m.cancelled_write_bytes is m.rchar_bytes is None
    assert "/proc/self/no-such-counter" in m.unavailable["write_bytes"]
    assert _unexplained(m) == []
    assert "storage written n/a" in repr(m)
    assert "n/a <small>(cannot read /proc/self/no-such-counter" in m._repr_html_()
