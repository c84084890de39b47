"""The write-back instruments: msync with any flags, the kernel's rules, dirty-page samplers,
device counters, and the interleaved race of flush calls (``mmlab.instruments.flushcost``)."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from mmlab.instruments import flushcost, writeback
from mmlab.instruments.cachestat import cache_stats
from mmlab.instruments.facts import Fact, Unknown
from mmlab.instruments.visibility import UnsupportedPlatformError

PAGE = mmap.PAGESIZE
TMPFS = Path("/dev/shm")


def _cachestat_or_skip(path: Path) -> None:
    try:
        cache_stats(path)
    except OSError as error:
        pytest.skip(f"no cachestat here: {error}")


def _mapped(path: Path, pages: int):
    with open(path, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, pages * PAGE)
        os.fsync(f.fileno())
    f = open(path, "r+b")  # noqa: SIM115 - closed by the caller with the map
    return f, mmap.mmap(f.fileno(), pages * PAGE)


def test_ms_async_leaves_pages_dirty_and_ms_sync_cleans_them(tmp_path):
    path = tmp_path / "f.bin"
    f, mm = _mapped(path, 16)
    _cachestat_or_skip(path)
    with f, mm:
        mm[:] = b"x" * len(mm)
        writeback.msync(mm, writeback.MS_ASYNC)
        assert writeback.dirty_pages(path) == 16
        writeback.msync(mm, writeback.MS_SYNC, 0, 4 * PAGE)
        assert writeback.dirty_pages(path) == 12
        writeback.msync(mm, writeback.MS_SYNC)
        assert writeback.dirty_pages(path) == 0


def test_msync_refuses_an_unaligned_or_outside_range(tmp_path):
    f, mm = _mapped(tmp_path / "f.bin", 2)
    with f, mm:
        with pytest.raises(ValueError, match="page-aligned"):
            writeback.msync(mm, writeback.MS_SYNC, 100)
        with pytest.raises(ValueError, match="inside the map"):
            writeback.msync(mm, writeback.MS_SYNC, 0, 3 * PAGE)


def test_the_rules_are_the_kernels_settings_in_seconds():
    rules = writeback.rules()
    expire = int(Path("/proc/sys/vm/dirty_expire_centisecs").read_text())
    period = int(Path("/proc/sys/vm/dirty_writeback_centisecs").read_text())
    assert rules.expire_s.value == expire / 100
    assert rules.period_s.value == period / 100
    assert rules.longest_wait == pytest.approx((expire + period) / 100)
    assert len(rules.lines()) == 4


def test_unknown_rules_say_why_and_promise_no_wait():
    rules = writeback.Rules(Unknown("hidden"), Fact(5.0, "x"), Fact("10%", "y"), Unknown("z"))
    assert rules.longest_wait is None
    text = "\n".join(rules.lines())
    assert "unknown (hidden)" in text and "5 s" in text and "10%" in text


def test_the_throttling_rule_says_it_slows_before_it_stops():
    rules = writeback.Rules(Fact(30.0, "a"), Fact(5.0, "b"), Fact("10%", "c"), Fact("20%", "d"))
    limit = rules.lines()[3]
    assert "slowed once" in limit and "halfway" in limit and "to 20%, and made to wait" in limit


def test_meminfo_counts_are_bytes_of_the_whole_system():
    dirty, under_writeback = writeback.meminfo_dirty()
    assert dirty >= 0 and under_writeback >= 0
    assert writeback.background_bytes().known


def test_the_meminfo_sampler_samples_and_draws(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    with writeback.MeminfoSampler(tmp_path, interval=0.005) as sampler:
        sampler.mark("here")
        for _ in range(3):
            writeback.meminfo_dirty()
    assert len(sampler.times) == len(sampler.dirty) == len(sampler.writeback) >= 2
    assert sampler.marks[0][1] == "here"
    assert "every file, every process" in sampler.plot().get_title()


def test_without_cachestat_the_sampler_falls_back_and_says_so(tmp_path, monkeypatch):
    def refuse(path):
        raise UnsupportedPlatformError("no cachestat in this test")

    monkeypatch.setattr(writeback, "cache_stats", refuse)
    sampler, said = writeback.dirty_sampler(tmp_path)
    assert isinstance(sampler, writeback.MeminfoSampler)
    assert "WHOLE system" in said and "no cachestat in this test" in said
    (tmp_path / "f").write_bytes(b"x")
    assert writeback.dirty_pages(tmp_path / "f") == "no cachestat in this test"


def test_device_writes_count_at_least_what_fsync_sent(tmp_path):
    stat = writeback.device_stat(tmp_path)
    if not stat.known:
        pytest.skip(stat.reason)
    with writeback.DeviceWrites(tmp_path) as device, open(tmp_path / "f.bin", "wb") as f:
        f.write(os.urandom(2**20))
        os.fsync(f.fileno())
    assert device.nbytes >= 2**20


@pytest.mark.skipif(not TMPFS.is_dir(), reason="no /dev/shm")
def test_tmpfs_has_no_device_counters_and_says_why():
    device = writeback.DeviceWrites(TMPFS)
    with device:
        pass
    assert device.nbytes is None and "tmpfs" in device.unknown


def test_the_flush_race_shows_each_calls_guarantee(tmp_path):
    path = tmp_path / "race.bin"
    race = flushcost.flush_race(path, 16 * PAGE, repeats=1, range_fraction=1 / 4)
    assert list(race.result.names) == list(flushcost.ARMS)
    assert race.range_bytes == 4 * PAGE
    assert not path.exists()  # the race deletes its file
    lines = "\n".join(race.lines())
    if race.dirty_unknown:
        assert "not counted" in lines
        return
    median = race.median
    assert median("dirty_after", "no flush") == median("dirty_after", "msync(MS_ASYNC)") == 16
    for synced in ("flush() = msync(MS_SYNC)", "os.fsync", "os.fdatasync"):
        assert median("dirty_after", synced) == 0
    assert median("dirty_after", "flush(range)") == 12
    if race.device_unknown is None:
        assert median("device_bytes", "os.fsync") >= 16 * PAGE
        assert "the whole device" in lines


def test_the_flush_race_refuses_less_than_a_page(tmp_path):
    with pytest.raises(ValueError, match="at least a page"):
        flushcost.flush_race(tmp_path / "race.bin", PAGE - 1, repeats=1)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("where", ["posix_fallocate", "mmap", "compare"])
def test_a_failing_flush_race_leaves_no_file_and_no_descriptor(tmp_path, monkeypatch, where):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt if where == "compare" else OSError(95, "not supported")

    if where == "mmap":
        monkeypatch.setattr(flushcost.mmap, "mmap", fail)
    else:
        monkeypatch.setattr(flushcost.os if where != "compare" else flushcost, where, fail)
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises((OSError, KeyboardInterrupt)):
        flushcost.flush_race(tmp_path / "race.bin", 4 * PAGE, repeats=1)
    assert not list(tmp_path.iterdir())
    assert len(os.listdir("/proc/self/fd")) == fds


def test_the_meminfo_sampler_documents_its_public_methods():
    for name in ("start", "stop", "mark", "marks", "times", "dirty", "writeback", "plot", "live"):
        assert getattr(writeback.MeminfoSampler, name).__doc__, name
