"""Memory limits for a child: which mechanisms a cgroup tree allows, and runs under each.

The mechanisms are found on fake /proc and /sys trees (a writable v1 memory cgroup; a v2 tree
without the memory controller, with it but not delegated to children, and with both); the
systemd scope's D-Bus call is checked argument by argument (no user session here). Runs use
the real kernel: a value and an exception come back, an allocation past the budget fails as
the mechanism says (MemoryError under RLIMIT_DATA, SIGKILL from the OOM killer under a
cgroup), a hanging child is killed at its timeout, and no cgroup is left behind.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from mmlab.instruments import memlimit, memlimitrun

MiB = 2**20

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="memory limits for a child are Linux's"
)


def _fake_proc(tmp_path: Path, cgroup: str, mountinfo: str) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text(mountinfo)
    return proc


def _put(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _by_name(found: list[memlimit.Mechanism]) -> dict[str, memlimit.Mechanism]:
    return {m.name: m for m in found}


V2_MOUNT = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"


def test_a_writable_v1_memory_cgroup_is_the_strongest(tmp_path):
    proc = _fake_proc(
        tmp_path,
        "4:memory:/jobs/me\n0::/\n",
        "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
    )
    leaf = tmp_path / "sys/fs/cgroup/memory/jobs/me"
    leaf.mkdir(parents=True)
    found = memlimit.mechanisms(proc, tmp_path)
    assert [m.name for m in found] == ["cgroup v1", "cgroup v2", "systemd scope", "RLIMIT_DATA"]
    chosen = memlimit.best(proc, tmp_path)
    assert chosen.name == "cgroup v1" and chosen.parent == str(leaf)
    assert chosen.limits_page_cache and "page cache" in chosen.models
    assert list(leaf.iterdir()) == []  # the probe cgroup was removed


def test_v2_needs_the_memory_controller_delegated_beside_our_cgroup(tmp_path):
    proc = _fake_proc(tmp_path, "0::/user.slice/job\n", V2_MOUNT)
    parent = tmp_path / "sys/fs/cgroup/user.slice"
    (parent / "job").mkdir(parents=True)
    _put(parent, "cgroup.controllers", "cpu io\n")
    v2 = _by_name(memlimit.mechanisms(proc, tmp_path))["cgroup v2"]
    assert not v2.usable and "no memory controller" in v2.reason

    _put(parent, "cgroup.controllers", "cpu io memory\n")
    _put(parent, "cgroup.subtree_control", "cpu\n")
    v2 = _by_name(memlimit.mechanisms(proc, tmp_path))["cgroup v2"]
    assert not v2.usable and "subtree_control" in v2.reason

    _put(parent, "cgroup.subtree_control", "cpu memory\n")
    _put(parent, "cgroup.procs", "")
    v2 = _by_name(memlimit.mechanisms(proc, tmp_path))["cgroup v2"]
    assert v2.usable and v2.parent == str(parent)  # beside job, not inside it


def test_without_cgroups_rlimit_data_is_chosen_and_says_why_not_the_others(tmp_path):
    proc = _fake_proc(tmp_path, "0::/\n", "22 27 0:21 / /proc rw - proc proc rw\n")
    chosen = memlimit.best(proc, tmp_path)
    assert chosen.name == "RLIMIT_DATA" and chosen.usable
    assert not chosen.limits_page_cache and "never thrashes" in chosen.models
    assert "cgroup v1: no cgroup v1 memory hierarchy" in chosen.reason


def test_the_scope_call_is_systemd_runs_start_transient_unit():
    argv = memlimit.scope_command(4242, 64 * MiB, "mmlab-1.scope")
    assert argv[:7] == [
        "busctl",
        "--user",
        "call",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        "StartTransientUnit",
    ]
    signature, unit, mode, count = argv[7:11]
    assert signature == "ssa(sv)a(sa(sv))" and unit == "mmlab-1.scope" and mode == "fail"
    properties = argv[11:-1]
    assert int(count) == 3 == len([p for p in properties if p[0].isupper()])
    assert properties[properties.index("PIDs") : properties.index("PIDs") + 4] == [
        "PIDs",
        "au",
        "1",
        "4242",
    ]
    at = properties.index("MemoryMax")
    assert properties[at : at + 3] == ["MemoryMax", "t", str(64 * MiB)]
    assert argv[-1] == "0"  # no auxiliary units


def test_other_platforms_get_a_clear_error(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(memlimit.UnsupportedPlatformError, match="Linux"):
        memlimit.mechanisms()


# -- runs on this kernel --------------------------------------------------------------------

RLIMIT = _by_name(memlimit.mechanisms())["RLIMIT_DATA"]
BEST = memlimit.best()
CGROUP = BEST if BEST.limits_page_cache and BEST.name != "systemd scope" else None
need_cgroup = pytest.mark.skipif(CGROUP is None, reason=f"no cgroup here: {BEST.reason}")


def _allocate(n: int) -> int:
    return len(bytearray(n))


def _raise() -> None:
    raise ValueError("wrong input")


@pytest.mark.parametrize("mechanism", [RLIMIT, BEST], ids=["rlimit", "best"])
def test_a_value_comes_back_within_the_budget(mechanism):
    done = memlimitrun.run(_allocate, 4 * MiB, budget=64 * MiB, mechanism=mechanism)
    assert done.outcome == "completed" and done.value == 4 * MiB
    assert done.within_budget and done.samples["t"]


def test_an_exception_comes_back_with_its_message():
    done = memlimitrun.run(_raise, budget=64 * MiB, mechanism=RLIMIT)
    assert done.outcome == "raised ValueError" and "wrong input" in done.error


_RLIMIT_CHILD = """
from mmlab.instruments import memlimit, memlimitrun
RLIMIT = next(m for m in memlimit.mechanisms() if m.name == memlimit.RLIMIT)
def allocate(n):
    return len(bytearray(n))
inherited = bytearray(96 * 2**20)  # the child inherits this: the budget counts above it
past = memlimitrun.run(allocate, 48 * 2**20, budget=32 * 2**20, mechanism=RLIMIT)
within = memlimitrun.run(allocate, 16 * 2**20, budget=32 * 2**20, mechanism=RLIMIT)
print(past.outcome, within.completed)
"""


def test_rlimit_data_refuses_an_allocation_past_the_budget_above_what_was_inherited():
    # In a fresh interpreter: RLIMIT_DATA caps VmData, and free heap a parent holds (holes
    # a long test session leaves below live objects) is already in VmData, so a child may
    # reuse it beyond the budget: a property of the limit, shown here from a known state.
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", _RLIMIT_CHILD], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["MemoryError", "True"], done.stderr


@need_cgroup
def test_a_cgroup_kills_private_memory_past_its_limit_and_is_removed():
    before = set(os.listdir(CGROUP.parent))
    done = memlimitrun.run(_allocate, 96 * MiB, budget=32 * MiB, mechanism=CGROUP)
    assert done.outcome == memlimitrun.OOM_KILLED and done.oom_kills >= 1
    assert done.cgroup_peak <= 32 * MiB
    assert set(os.listdir(CGROUP.parent)) == before


def test_a_hanging_child_is_killed_at_the_timeout():
    done = memlimitrun.run(time.sleep, 30, budget=64 * MiB, mechanism=BEST, timeout=0.3)
    assert done.outcome == "killed at the timeout (SIGKILL)"


def test_each_sample_is_handed_to_the_hook():
    seen = []
    memlimitrun.run(time.sleep, 0.2, budget=64 * MiB, mechanism=BEST, on_sample=seen.append)
    assert len(seen) >= 3 and seen[-1].completed


def test_an_unusable_mechanism_is_refused():
    broken = memlimit.Mechanism("cgroup v1", False, "no permission")
    with pytest.raises(OSError, match="no permission"):
        memlimitrun.run(len, (), budget=MiB, mechanism=broken)


def test_an_interrupted_run_leaves_no_child_and_no_cgroup():
    where = BEST.parent
    before = set(os.listdir(where)) if where else set()

    def interrupt(run: memlimitrun.LimitedRun) -> None:
        raise KeyboardInterrupt

    others = {c.pid for c in psutil.Process().children()}  # e.g. multiprocessing's tracker
    with pytest.raises(KeyboardInterrupt):
        memlimitrun.run(time.sleep, 30, budget=64 * MiB, mechanism=BEST, on_sample=interrupt)
    assert {c.pid for c in psutil.Process().children()} <= others  # the child was reaped
    if where:
        assert set(os.listdir(where)) == before


def _death_signal_and_oom_score() -> tuple[int, str]:
    import ctypes

    signal = ctypes.c_int()
    ctypes.CDLL(None).prctl(2, ctypes.byref(signal), 0, 0, 0)  # PR_GET_PDEATHSIG
    with open("/proc/self/oom_score_adj") as f:
        return signal.value, f.read().strip()


def test_the_child_dies_with_its_parent_and_is_the_first_the_oom_killer_picks():
    import signal

    done = memlimitrun.run(_death_signal_and_oom_score, budget=64 * MiB, mechanism=BEST)
    assert done.value == (signal.SIGKILL, "1000")


def _limited(name: str, **samples) -> memlimitrun.LimitedRun:
    mechanism = memlimit.Mechanism(name, True, "a test", "/nowhere")
    done = memlimitrun.LimitedRun(mechanism, 32 * MiB)
    done.samples = {key: list(values) for key, values in samples.items()}
    return done


def test_a_cgroup_without_a_peak_counter_reports_the_sampled_charge_or_unknown():
    sampled = _limited("cgroup v2", t=[0.0, 0.1], usage=[MiB, 5 * MiB])
    assert sampled.peak == 5 * MiB and "sampled" in sampled.peak_source
    sampled.cgroup_peak = 6 * MiB
    assert sampled.peak == 6 * MiB and "own peak counter" in sampled.peak_source
    nothing = _limited("cgroup v2", t=[])
    assert nothing.peak is None and nothing.within_budget is None
    assert nothing.peak_source.startswith("unknown")
    rlimit = _limited("RLIMIT_DATA", t=[0.0, 0.1], rss_anon=[0.0, 3 * MiB], usage=[9 * MiB])
    assert rlimit.peak == 3 * MiB  # never the cgroup's charge for RLIMIT_DATA


def test_a_zombie_sample_is_not_a_measurement():
    done = _limited("cgroup v1", t=[0.0, 0.1, 0.2], rss_anon=[0.0, 4 * MiB, float("nan")])
    assert done.private_peak == 4 * MiB


def test_an_unreadable_counter_is_unknown_not_zero():
    nan = float("nan")
    done = _limited("cgroup v2", t=[0.0, 0.1], read_bytes=[nan, nan], refaults=[nan, nan])
    done.start = {"read_bytes": None, "refaults": None}
    assert done.read_bytes is None and done.refaults is None
    assert done.read_bytes_source.startswith("unknown")
    assert done.peak is None  # no usage sampled, no peak counter
    known = _limited("cgroup v2", t=[0.0, 0.1], read_bytes=[10.0, 30.0], usage=[nan, 2.0])
    known.start = {"read_bytes": 10.0}
    assert known.read_bytes == 20 and known.peak == 2


def test_an_unreadable_result_is_an_outcome_not_an_exception():
    done = memlimitrun.LimitedRun(RLIMIT, MiB)
    memlimitrun._outcome(done, 0, b"\x80\x05truncated", timed_out=False)
    assert done.outcome.startswith("result could not be read")


def test_a_cgroup_that_cannot_be_removed_says_why_instead_of_raising(tmp_path, monkeypatch):
    from mmlab.instruments import memgroup

    monkeypatch.setattr(memgroup.time, "sleep", lambda s: None)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "left").write_text("")  # rmdir fails with ENOTEMPTY, as a busy cgroup does EBUSY
    group = memgroup.Cgroup(busy, 2)
    assert "could not remove" in group.remove()
    assert memgroup.Cgroup(tmp_path / "gone", 2).remove() is None


def test_a_scope_not_yet_placed_reads_as_unknown():
    from mmlab.instruments import memgroup

    scope = memgroup.Scope(MiB)
    assert scope.peak() is None and scope.oom_kills() is None
    assert set(scope.usage().values()) == {None}


def test_lru_gen_is_unknown_without_sysfs(monkeypatch):
    from mmlab.instruments import sysinfo

    monkeypatch.setattr(sysinfo.os.path, "isdir", lambda path: False)
    assert not sysinfo._lru_gen().known
