"""mmlab.machine and mmlab.doctor: every fact read, measured or unknown with a reason.

Deterministic on any Linux machine: the tests compare with what other tools say (df, stat),
build a tmpfs to see eviction fail (as root), drop root to see a hidden page cache named,
and feed fake /proc files to the cgroup readers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import run_in_child

from mmlab import doctor, machine
from mmlab.instruments.machine import FACT_KEYS, Fact, Unknown

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="mmlab.machine reads Linux's /proc and /sys"
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("doctor")


@pytest.fixture(scope="module")
def folder_report(folder):
    return machine.report(folder)


def assert_honest(facts: dict) -> None:
    """Each fact (as JSON) is a value with where it came from, or null with why."""
    assert list(facts) == list(FACT_KEYS)
    for key, fact in facts.items():
        if fact["value"] is None:
            assert set(fact) == {"value", "unknown"}, key
            assert fact["unknown"].strip(), f"{key} is unknown without a reason"
        else:
            assert set(fact) == {"value", "source"}, key
            assert fact["source"].strip(), f"{key} has no source"


def test_every_fact_is_measured_or_unknown_with_a_reason(folder_report):
    data = json.loads(json.dumps(folder_report.to_dict()))
    assert_honest(data["facts"])
    for key in FACT_KEYS:
        info = getattr(folder_report, key)
        assert isinstance(info, Fact | Unknown)
        assert info.known == (info.value is not None)
    with pytest.raises(ValueError, match="Unknown"):
        Fact(None, "a guess")


def test_facts_agree_with_the_system(folder_report):
    r = folder_report
    assert r.kernel.value == os.uname().release
    assert r.page_size.value == os.sysconf("SC_PAGE_SIZE")
    assert r.cpu_count.value == os.cpu_count()
    assert r.cpus_usable.value == len(os.sched_getaffinity(0))
    assert r.max_map_count.value == int(Path("/proc/sys/vm/max_map_count").read_text())
    assert 0 < r.memory_available.value <= r.memory_total.value
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert r.rlimit_nofile.value["soft"] in (soft, "unlimited")
    copy = r.memory_copy.value
    assert copy["min"] <= copy["q1"] <= copy["median"] <= copy["q3"] <= copy["max"]
    assert copy["rounds"] >= 5 and copy["unit"] == "bytes/s"


def _run(*command: str) -> str | None:
    """The command's output, or None where it is missing or does not take these options."""
    if shutil.which(command[0]) is None:
        return None
    result = subprocess.run(command, capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def test_file_system_type_matches_df_and_stat(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 10_000)
    r = machine.report(path)
    df = _run("df", "--output=fstype", str(path))  # GNU df reads /proc/self/mountinfo too
    stat = _run("stat", "-f", "-c", "%t", str(path))  # statfs(2)'s f_type, in hex
    if df is None and stat is None:
        pytest.skip("neither GNU df nor stat -f is available to compare with")
    if df is not None:
        assert r.filesystem.value == df.split()[-1]
    if stat is not None:
        assert f"f_type 0x{stat.strip()}" in r.filesystem.source
    assert sorted(tmp_path.iterdir()) == [path]  # the probe file is gone


def test_on_disk_eviction_works_and_a_cold_touch_faults(folder_report):
    r = folder_report
    if r.filesystem.value in ("tmpfs", "ramfs"):
        pytest.skip("the temporary directory is on tmpfs here")
    assert r.eviction_works.value is True
    touch = r.cold_touch.value
    assert touch["major_faults"] >= 1
    assert touch["pages_cached"] >= touch["pages_mapped"] >= 1
    if r.proc_self_io.value:
        assert touch["storage_bytes"] >= r.page_size.value
    assert r.warm_touch.value["pages_mapped"] >= 1
    assert r.flush.value["median"] > 0 and r.cold_read.value["median"] > 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_on_tmpfs_eviction_does_not_work(tmp_path):
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        r = machine.report(mount)
        assert list(mount.iterdir()) == []  # the probe file is gone
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert r.filesystem.value == "tmpfs"
    assert r.eviction_works.value is False and "tmpfs" in r.eviction_works.source
    assert not r.read_ahead_kb.known and "tmpfs" in r.read_ahead_kb.reason
    assert r.cold_touch.value["major_faults"] == 0
    advice = {(a.notebook, a.section): a for a in r.advice}
    readahead = advice["03", "2"]
    assert readahead.verdict == "not_shown"
    assert "tmpfs: eviction cannot work, cold-cache runs will be warm" in readahead.reasons[0]
    assert advice["04", "3-5"].verdict == "not_shown"
    assert advice["05", "2"].verdict == "different" and "msync" in advice["05", "2"].reasons[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
def test_a_file_whose_page_cache_is_hidden_is_named():
    folder = Path(tempfile.mkdtemp(prefix="mmlab-hidden-"))
    try:
        folder.chmod(0o755)
        path = folder / "shared.bin"
        path.write_bytes(os.urandom(2**20))
        path.chmod(0o644)  # readable by all, writable only by root, who owns it

        def as_nobody():
            os.setgid(65534)
            os.setuid(65534)
            r = machine.report(path, measure=False)
            assert r.mincore_trustworthy.value is False, r.mincore_trustworthy
            advice = {(a.notebook, a.section): a for a in r.advice}
            reasons = " ".join(advice["03", "2"].reasons)
            assert advice["03", "2"].verdict == "not_shown"
            assert "mincore untrustworthy for files here: residency plots" in reasons

        run_in_child(as_nobody)
        assert machine.report(path, measure=False).mincore_trustworthy.value is True
    finally:
        shutil.rmtree(folder)


def test_fingerprint_is_json_and_stable(folder):
    first, second = machine.fingerprint(folder), machine.fingerprint(folder)
    assert json.loads(json.dumps(first)) == first
    for fp in (first, second):
        assert fp.pop("memory_copy_gb_s") > 0
    assert first == second
    assert first["page_size"] == os.sysconf("SC_PAGE_SIZE")
    assert first["kernel"] == os.uname().release and first["filesystem"]
    assert "memory_copy_gb_s" not in machine.fingerprint(folder, bandwidth=False)


def test_text_and_html_show_every_fact_and_notebook(folder_report):
    text, html = str(folder_report), folder_report._repr_html_()
    for _, _, shown, _, _ in folder_report.rows():
        assert shown in text
    for notebook in ("01", "02", "03", "04", "05", "06", "07", "08", "09"):
        assert f"\n  {notebook} §" in text
    assert html.count("<table") == 2 and "read_ahead_kb" in html
    assert repr(folder_report).startswith("<MachineReport ")


def test_advice_covers_every_notebook_and_names_its_facts(folder_report):
    notebooks = {a.notebook for a in folder_report.advice}
    assert notebooks == {"all", "01", "02", "03", "04", "05", "06", "07", "08", "09"}
    for a in folder_report.advice:
        assert a.verdict in doctor.VERDICTS and a.reasons and all(r for r in a.reasons)
        assert set(a.facts) <= set(FACT_KEYS)


def _with(report, **changes):
    facts = dict(report.facts)
    facts.update({key: Fact(value, "a test") for key, value in changes.items()})
    return {(a.notebook, a.section): a for a in doctor.advise(facts)}


def test_advice_follows_the_facts(folder_report):
    advice = _with(folder_report, page_size=16384, allocation_granularity=16384)
    assert advice["02", "1"].verdict == "different"
    assert "mmap accepts [0]" in advice["02", "1"].reasons[0]
    assert "spans 1 page" in advice["01", "1-3"].reasons[0]
    advice = _with(folder_report, thp_enabled="always")
    assert advice["01", "4"].verdict == "different"
    assert "between about 500 and 1,000" in " ".join(advice["01", "4"].reasons)
    advice = _with(folder_report, cachestat=False)
    assert "/proc/self/smaps instead" in " ".join(advice["01", "6-7"].reasons)
    advice = _with(folder_report, rlimit_nofile={"soft": 1024, "hard": 4096})
    assert "section 5 holds fewer than 20,000" in " ".join(advice["02", "5-6"].reasons)
    assert "meet EMFILE first" in " ".join(advice["02", "5-6"].reasons)
    advice = _with(folder_report, max_map_count=2_000_000)  # above the children's cap
    assert advice["02", "5-6"].verdict == "not_shown"
    advice = _with(
        folder_report, max_map_count=2_000_000, rlimit_nofile={"soft": 2_000_000, "hard": 2_000_000}
    )
    reasons = " ".join(advice["02", "5-6"].reasons)
    from mmlab.course.mapcount import DEFAULT_CAP

    cap = f"neither limit is reached below {DEFAULT_CAP:,}"
    assert cap in reasons and "first" not in reasons
    advice = _with(folder_report, cgroup_memory_limit=512 * 2**20)
    assert advice["03", "5"].verdict in ("different", "not_shown")
    assert "the cgroup memory limit is 512.0 MiB" in " ".join(advice["03", "5"].reasons)
    advice = _with(folder_report, mincore_trustworthy=False)
    assert advice["05", "4"].verdict == "not_shown"
    advice = _with(folder_report, cachestat=False)
    assert "dirty-page count prints 'unknown'" in " ".join(advice["05", "4"].reasons)
    advice = _with(folder_report, smaps_rollup=False)
    assert advice["06", "2"].verdict == "not_shown"
    advice = _with(folder_report, read_ahead_kb=128, filesystem="ext4")
    assert "read_ahead_kb is 128" in " ".join(advice["06", "2"].reasons)
    assert {"read_ahead_kb", "filesystem"} <= set(advice["06", "2"].facts)


def test_05s_scaled_run_is_predicted_from_its_flush_count(folder_report, monkeypatch):
    from mmlab.data import blogsize

    flush = {"median": 0.002, "min": 0.001, "max": 0.003, "rounds": 5}
    monkeypatch.setattr(blogsize, "scaled_flushes", lambda: 50 * blogsize.FULL_RUN_MOLECULES)
    advice = _with(folder_report, filesystem="ext4", flush=flush)
    reasons = " ".join(advice["05", "2"].reasons)
    assert "50 flushes each" in reasons and "takes about 200 s" in reasons
    monkeypatch.setattr(blogsize, "scaled_flushes", lambda: None)
    advice = _with(folder_report, filesystem="ext4", flush=flush)
    reasons = " ".join(advice["05", "2"].reasons)
    n = blogsize.APPROX_FLUSHES_PER_MOLECULE
    assert f"about {n} flushes each, approximate" in reasons
    assert advice["05", "2"].verdict in ("clear", "different")
    rest = " ".join(advice["05", "5-6"].reasons)  # §6's flush-every arm, from the flush cost
    assert f"about {blogsize.COMPARE_FLUSHES * 0.002:,.0f} s" in rest


def test_a_missing_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        machine.report(tmp_path / "missing")


def _fake_proc(tmp_path, cgroup: str, mountinfo: str) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text(mountinfo)
    return proc


def _put(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_limit_is_the_tightest_on_the_path(tmp_path):
    proc = _fake_proc(
        tmp_path,
        "0::/user.slice/job\n",
        "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n",
    )
    _put(tmp_path, "sys/fs/cgroup/user.slice/memory.max", "536870912\n")
    _put(tmp_path, "sys/fs/cgroup/user.slice/job/memory.max", "max\n")
    _put(tmp_path, "sys/fs/cgroup/user.slice/job/cpu.max", "150000 100000\n")
    limit = machine.sysinfo.cgroup_memory_limit(proc, tmp_path)
    assert limit.value == 536870912 and "user.slice/memory.max" in limit.source
    assert machine.sysinfo.cgroup_cpu_limit(proc, tmp_path).value == 1.5


def test_cgroup_v1_in_a_container_and_no_limit(tmp_path):
    proc = _fake_proc(
        tmp_path,
        "4:memory:/docker/abc\n0::/\n",
        "35 31 0:32 /docker /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
    )
    _put(tmp_path, "sys/fs/cgroup/memory/abc/memory.limit_in_bytes", "9223372036854771712\n")
    limit = machine.sysinfo.cgroup_memory_limit(proc, tmp_path)
    assert limit.value == "unlimited" and "abc/memory.limit_in_bytes" in limit.source
    _put(tmp_path, "sys/fs/cgroup/memory/abc/memory.limit_in_bytes", "1073741824\n")
    assert machine.sysinfo.cgroup_memory_limit(proc, tmp_path).value == 2**30


def test_no_memory_controller_is_unknown_with_a_reason(tmp_path):
    proc = _fake_proc(tmp_path, "0::/\n", "22 27 0:21 / /proc rw - proc proc rw\n")
    limit = machine.sysinfo.cgroup_memory_limit(proc, tmp_path)
    assert not limit.known and "no memory controller" in limit.reason


def test_report_is_frozen(folder_report):
    with pytest.raises(dataclasses.FrozenInstanceError):
        folder_report.path = "elsewhere"


def test_a_notebooks_opening_view_asks_no_prediction_for_it(tmp_path):
    """The view a notebook opens with shows the facts that decide it, not what it will find:
    no probe touch, no 'clear' advice; warnings only, with the reasons that warn."""
    from mmlab.course.advice import CLEAR

    report = machine.report(tmp_path)
    view = report.for_notebook("03")
    assert "read_ahead_kb" in view.shown and "page_size" in view.shown
    assert not {"cold_touch", "warm_touch"} & set(view.shown)
    assert all(a.verdict != CLEAR and a.notebook in ("03", "all") for a in view.advice)
    assert all(set(a.reasons) <= set(a.warnings) for a in view.advice)
    everything = report.for_notebook("03", outcomes=True)
    assert "cold_touch" in everything.shown
    assert {a.section for a in everything.advice if a.notebook == "03"} >= {"1", "2"}
