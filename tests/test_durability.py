"""Notebook 08's measurements and explanations: the dirty page's life, the blog's writer under
flush policies, the race's explanations, and the doctor's advice for 08."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from mmlab.course import doctor_durability, durability, durableviews
from mmlab.course.advice import CLEAR, DIFFERENT, NOT_SHOWN, _Facts
from mmlab.instruments import flushcost
from mmlab.instruments.facts import Fact, Unknown
from mmlab.instruments.writeback import Rules

PAGE = mmap.PAGESIZE
RULES = Rules(Fact(30.0, "a"), Fact(5.0, "b"), Fact("10%", "c"), Fact("20%", "d"))


def _life(started, clean, system_dirty=2**20, filesystem="ext4", rules=RULES):
    return durability.DirtyLife(
        256, 256, started, clean, False, 45.0, "cachestat", False, system_dirty, filesystem, rules
    )


def test_writeback_after_expiry_is_the_expiry_rule():
    why = durableviews.why_clean(_life(31.2, 31.3))
    assert "expiry rule" in why and "between 30 and 35 s" in why


def test_early_writeback_above_the_background_threshold_is_the_background_rule():
    why = durableviews.why_clean(_life(2.0, 2.5, system_dirty=2**50))
    assert "background rule" in why


def test_early_writeback_below_the_threshold_is_something_else():
    why = durableviews.why_clean(_life(2.0, 2.5))
    assert "something else" in why and "expiry" not in why.split(".")[0]


def test_a_timeout_says_what_happened():
    assert "still not clean 45 s" in durableviews.why_clean(_life(None, None))
    assert "no storage" in durableviews.why_clean(_life(0.1, 0.1, filesystem="tmpfs"))


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm")
def test_on_tmpfs_the_life_says_there_is_no_storage(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    path = Path("/dev/shm") / f"mmlab-test-{tmp_path.name}.bin"
    try:
        life = durability.watch_dirty(path, 8 * PAGE, RULES, "tmpfs", timeout=0.5)
    finally:
        path.unlink(missing_ok=True)
    assert life.pages == 8 and life.timeout_s == 0.5
    assert "no storage" in durableviews.why_clean(life)
    assert "no storage" in durableviews.why_dirty_after_write(life)


def _records(n: int) -> list[tuple[str, float]]:
    return [("C" * (i % 20 + 1) + "O", float(i)) for i in range(n)]


def test_flushing_per_record_dirties_a_page_per_flush(tmp_path):
    runs = durability.blog_writer(_records(300), tmp_path, (1, 10, None), repeats=1)
    assert runs.flushes == {"flush per record": 301, "flush every 10": 31, "flush once": 1}
    assert runs.write_bytes["flush per record"] >= 300 * PAGE
    assert runs.write_bytes["flush once"] < 2 * runs.data_bytes + PAGE
    assert runs.amplification("flush per record") > 10 * runs.amplification("flush once")
    why = durableviews.why_amplification(runs, "flush per record")
    assert f"{PAGE:,}" in why and "page size / record size" in why and "the final flush" in why
    assert "true, but costly" in durableviews.claim_verdict(runs)
    assert "300 QM9 records" in durableviews.claim_measured(runs)
    assert "x the data" in durableviews.claim_measured(runs)
    assert len(runs.lines()) == 4 + (runs.idle_bytes is not None)
    assert not list(tmp_path.iterdir())  # the writer's files are gone


def test_the_amplification_why_does_its_arithmetic_on_the_numbers_it_prints(tmp_path):
    import re

    runs = durability.blog_writer(_records(300), tmp_path, (1, None), repeats=1, idle=False)
    why = durableviews.why_amplification(runs, "flush per record")
    divisions = re.findall(r"([\d,]+(?:\.\d+)?) / ([\d,]+(?:\.\d+)?) = ([\d,]+(?:\.\d+)?)", why)
    assert len(divisions) >= 3  # the record's average size, the model, the measured extra
    for a, b, c in divisions:
        a, b, c = (float(x.replace(",", "")) for x in (a, b, c))
        decimals = len(str(c).split(".")[1]) if c != int(c) else 0
        assert round(a / b, decimals) == c, (a, b, c)
    assert f"{runs.amplification('flush per record'):.2f}x the data" in why
    assert f"{runs.amplification('flush per record'):.2f}x the data" in "\n".join(runs.lines())


def test_the_writers_figure_has_no_overlaps(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmlab.course.figcheck import overlaps

    runs = durability.blog_writer(_records(50), tmp_path, (1, None), repeats=1, idle=False)
    ax = runs.plot()
    assert overlaps(ax.figure) == []
    plt.close(ax.figure)


def test_the_page_model_counts_pages_each_flush_touched():
    assert durability.pages_model([10] * 4, 1, 16) == 6 * 16
    assert durability.pages_model([10] * 4, None, 16) == 3 * 16
    assert "records per flush" in durableviews.below_two(_records(500))


def test_the_widget_runs_one_policy_beside_the_measured_ones(tmp_path, capsys):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = _records(100)
    base = durability.blog_writer(records, tmp_path, (1, None), repeats=1, idle=False)
    runs = durableviews.try_policy(records, tmp_path, 10, base)
    assert list(runs.flushes) == ["flush per record", "flush every 10", "flush once"]
    assert runs.write_bytes["flush once"] == base.write_bytes["flush once"]
    assert "run now, once" in capsys.readouterr().out
    plt.close("all")


def test_the_reserved_writer_writes_the_blogs_layout(tmp_path):
    from mmlab.data import seedformat

    records = _records(40)
    size = seedformat.data_size(records)
    durability.reserve(tmp_path / "a", size)
    assert os.stat(tmp_path / "a").st_blocks * 512 >= size  # its blocks are reserved
    durability.write_blog(tmp_path / "a", records, 7)
    seedformat.write(tmp_path / "b", records, size, None)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_the_wait_follows_the_settings():
    assert "up to 45 s" in durableviews.wait_line(RULES)
    slow = Rules(Fact(30.0, "a"), Fact(60.0, "b"), Fact("10%", "c"), Fact("20%", "d"))
    assert "battery" in durableviews.wait_line(slow)
    unknown = Rules(Unknown("x"), Fact(5.0, "b"), Fact("10%", "c"), Fact("20%", "d"))
    assert "60 s" in durableviews.wait_line(unknown)


def test_the_race_is_explained_from_its_numbers(tmp_path):
    race = flushcost.flush_race(tmp_path / "race.bin", 8 * PAGE, repeats=1)
    values = race.values()
    assert values["race_pages"] == 8
    assert "fdatasync" in durableviews.why_fsync_ratio(race, Fact("none", "test"))
    if race.dirty_unknown:
        assert "cannot be counted" in durableviews.why_async(race)
    else:
        assert "starts no writing" in durableviews.why_async(race)
        assert values["dirty_after_async"] == 8 and values["dirty_after_sync"] == 0


def _facts(**values):
    keys = ("cachestat", "filesystem", "dirty_expire_centisecs", "dirty_background_ratio")
    keys += ("memory_available", "journal", "cgroup_memory_limit")
    facts = {k: Unknown("not given") for k in (*keys, "block_device")}
    facts |= {k: Fact(v, "test") for k, v in values.items()}
    return _Facts(facts)


def test_the_doctor_warns_that_tmpfs_never_writes_back():
    sections = doctor_durability.notebook_08(
        _facts(cachestat=True, filesystem="tmpfs", dirty_expire_centisecs=3000)
    )
    life = sections[0].advice()
    assert life.verdict == NOT_SHOWN and "never written back" in " ".join(life.reasons)
    assert [s.section for s in sections] == ["1", "2", "3", "4"]


def test_the_doctor_is_clear_on_a_disk_with_cachestat():
    device = {"name": "vda", "kind": "virtio", "dev": "254:0", "detail": ""}
    sections = doctor_durability.notebook_08(
        _facts(
            cachestat=True,
            filesystem="ext4",
            dirty_expire_centisecs=3000,
            dirty_background_ratio=10,
            memory_available=8 * 2**30,
            block_device=device,
            journal="data=ordered",
            cgroup_memory_limit="unlimited",
        )
    )
    assert all(s.advice().verdict == CLEAR for s in sections)


def test_the_doctor_warns_when_the_background_threshold_is_near():
    sections = doctor_durability.notebook_08(
        _facts(
            cachestat=True,
            filesystem="ext4",
            dirty_expire_centisecs=3000,
            dirty_background_ratio=1,
            memory_available=2**30,
        )
    )
    life = sections[0].advice()
    assert life.verdict != CLEAR and "background writeback may start" in " ".join(life.reasons)


def test_the_doctor_flags_a_long_flusher_period():
    sections = doctor_durability.notebook_08(_facts(dirty_writeback_centisecs=6000))
    said = "\n".join(reason for s in sections for _, reason, _ in s.items)
    assert "every 60 s" in said and "battery" in said
    sections = doctor_durability.notebook_08(_facts(dirty_writeback_centisecs=500))
    said = "\n".join(reason for s in sections for _, reason, _ in s.items)
    assert "every 5 s" in said and "battery" not in said


def test_the_doctor_names_the_journal_and_a_container_limit():
    sections = doctor_durability.notebook_08(
        _facts(cachestat=True, filesystem="ext4", journal="none", cgroup_memory_limit=2**30)
    )
    life, crash = sections[0].advice(), sections[2].advice()
    assert "journal: none" in " ".join(crash.reasons) and "journal" in crash.facts
    assert life.verdict == DIFFERENT and "container" in " ".join(life.reasons)
    unlimited = doctor_durability.notebook_08(
        _facts(cachestat=True, filesystem="ext4", cgroup_memory_limit="unlimited")
    )
    assert "container" not in " ".join(unlimited[0].advice().reasons)


def test_a_failing_watch_leaves_no_file(tmp_path, monkeypatch):
    def fail(path, interval):
        raise KeyboardInterrupt  # as a Ctrl-C while the watch starts

    monkeypatch.setattr(durability, "dirty_sampler", fail)
    with pytest.raises(KeyboardInterrupt):
        durability.watch_dirty(tmp_path / "life.bin", 8 * PAGE, RULES, "ext4", timeout=0.5)
    assert not list(tmp_path.iterdir())


def test_the_device_is_read_between_the_timed_calls_not_inside_them(tmp_path, monkeypatch):
    events = []
    write = durability.write_blog

    class Writes:
        def __init__(self, path):
            self.unknown, self.nbytes = None, 0

        def __enter__(self):
            events.append("device read")
            return self

        def __exit__(self, *exc_info):
            events.append("device read")

    def writing(*args):
        events.append("write")
        write(*args)
        events.append("written")

    monkeypatch.setattr(durability, "DeviceWrites", Writes)
    monkeypatch.setattr(durability, "write_blog", writing)
    runs = durability.blog_writer(_records(20), tmp_path, (1, None), repeats=2, idle=False)
    calls = [i for i, e in enumerate(events) if e == "write"]
    assert len(calls) == 4 and all(events[i + 1] == "written" for i in calls)
    assert runs.device_bytes == {"flush per record": 0, "flush once": 0}


def test_the_journal_of_a_mapped_device_is_looked_up_by_its_kernel_name(tmp_path, monkeypatch):
    from mmlab.instruments import fsinfo

    (tmp_path / "dm-7").touch()
    (tmp_path / "vg-root").symlink_to("dm-7")  # as /dev/mapper/vg-root -> ../dm-7
    mount = fsinfo._Mount("253:7", "/", "/", "", "ext4", str(tmp_path / "vg-root"), "rw")
    monkeypatch.setattr(fsinfo, "_mount_of", lambda path: mount)
    monkeypatch.setattr(fsinfo, "_statfs_magic", lambda path: None)
    found = fsinfo.journal(tmp_path)
    task = Path("/sys/fs/ext4/dm-7/journal_task")
    assert task.as_posix() in (found.reason if not found.known else found.source)
