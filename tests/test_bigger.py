"""Notebook 07's store, workloads, their explanations and the claims.

The store is built once (all of QM9, twice) and kept; the workloads run under a budget two fifths
of it, so the naive loads must fail (refused or killed: the list of records too, as it is built
with readahead off) and the mapped stream complete with the right means. The explanations are
checked on made-up runs, one per outcome, so each sentence the notebook may print is exercised
without depending on this machine's timing. (The sweep's are in test_workingset.py.)
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from test_workingset import _sweep

from mmlab.course import bigger, biggerplots
from mmlab.course.advice import CLEAR, DIFFERENT, NOT_SHOWN, _Facts
from mmlab.course.doctor_memory import notebook_07
from mmlab.instruments import memlimit
from mmlab.instruments.facts import Fact, Unknown
from mmlab.instruments.memlimitrun import OOM_KILLED, LimitedRun

MiB = 2**20
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="limits are Linux's")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return bigger.build_store(tmp_path_factory.mktemp("bigger") / "two.mms", 2)


def test_the_store_holds_qm9_copies_and_is_kept_when_it_does(store):
    from mmlab.data import qm9
    from mmlab.store import RecordStore

    with RecordStore.open(store) as s:
        assert len(s) == 2 * qm9.QM9_MOLECULES
    before = store.stat().st_mtime_ns
    assert bigger.build_store(store, 2) == store and store.stat().st_mtime_ns == before


def test_passes_read_the_working_set_each_time(store):
    done = bigger.passes(store, 4 * MiB, count=3)
    assert len(done) == 3 and all(seconds > 0 and read >= 0 for seconds, read in done)


@linux
def test_naive_loads_fail_and_the_mapped_stream_completes_under_part_of_the_store(store):
    budget = store.stat().st_size * 2 // 5  # well above one readahead window
    runs = bigger.workloads(store, budget, timeout=3.0)
    failed = ("MemoryError", OOM_KILLED)
    assert runs["read()"].outcome in failed and runs["list(store)"].outcome in failed
    stream = runs["mapped columns"]
    assert stream.completed and stream.within_budget
    assert np.allclose(stream.value, bigger.column_means(store), rtol=1e-12)
    lines = biggerplots.workload_lines(runs, store.stat().st_size)
    assert len(lines) >= 4 and all(name in " ".join(lines) for name in runs)


def test_the_list_holds_every_record(store):
    from mmlab.store import RecordStore

    with RecordStore.open(store) as s:
        assert bigger.list_records(store) == len(s)


def _run(name: str, outcome: str, **counters) -> LimitedRun:
    mechanism = memlimit.Mechanism(name, True, "a test", "/nowhere")
    done = LimitedRun(mechanism, 32 * MiB, outcome=outcome, seconds=1.0)
    done.samples = {key: [0.0, float(v)] for key, v in counters.items()} | {"t": [0.0, 1.0]}
    return done


@pytest.mark.parametrize(
    ("name", "outcome", "words"),
    [
        ("RLIMIT_DATA", "MemoryError", "refused the reservation"),
        ("cgroup v1", OOM_KILLED, "reached 30.0 MiB at the last sample"),
        ("cgroup v1", "completed", "the limit did not hold"),
    ],
)
def test_why_naive_names_what_happened(name, outcome, words):
    runs = {"read()": _run(name, outcome, read_bytes=100 * MiB, rss_anon=30 * MiB)}
    assert words in biggerplots.why_naive(runs, 200 * MiB)
    if outcome == OOM_KILLED:  # 100 MiB read for 30 copied: the rest was read again
        assert "70.0 MiB more" in biggerplots.why_naive(runs, 200 * MiB)
    assert (
        biggerplots.naive_outcome(runs)
        == {
            "MemoryError": "MemoryError",
            OOM_KILLED: "killed",
            "completed": "completed",
        }[outcome]
    )


@pytest.mark.parametrize(
    ("outcome", "read", "words"),
    [
        ("killed at the timeout (SIGKILL)", 500, "thrashing"),
        ("killed at the timeout (SIGKILL)", 50, "stalled rather than thrashed"),
        (OOM_KILLED, 50, "the OOM killer ended it"),
        ("MemoryError", 50, "MemoryError"),
    ],
)
def test_why_list_names_what_happened(outcome, read, words):
    done = _run("cgroup v1", outcome, read_bytes=read * MiB, rss_anon=30 * MiB)
    assert words in biggerplots.why_list(done, 100 * MiB)


@pytest.mark.parametrize(
    ("name", "read_ahead_kb", "words"),
    [
        ("cgroup v1", 8192, "168.0 MiB in flight, more than"),
        ("cgroup v1", 128, "well within"),
        ("cgroup v1", None, "unknown"),
        ("RLIMIT_DATA", 8192, "does not limit the page cache"),
    ],
)
def test_the_readahead_aside_is_sized_from_the_numbers(name, read_ahead_kb, words):
    listed = _run(name, OOM_KILLED)  # a 32 MiB budget
    assert words in biggerplots.readahead_aside(read_ahead_kb, listed)


def test_a_cgroup_peak_that_is_unknown_is_said_so():
    stream = _run("cgroup v2", "completed", read_bytes=90 * MiB, rss_anon=0)
    assert "unknown" in biggerplots.why_stream(stream, 100 * MiB)
    assert "unknown" in biggerplots.workload_lines({"mapped columns": stream}, 100 * MiB)[1]


def test_the_claims_follow_the_sweep():
    runs = {
        "read()": _run("RLIMIT_DATA", "MemoryError"),
        "list(store)": _run("RLIMIT_DATA", "MemoryError"),
        "mapped columns": _run("RLIMIT_DATA", "completed", read_bytes=90 * MiB),
    }
    flat = _sweep(None, name="RLIMIT_DATA")
    values, premise, verdict, way_out, way_verdict = bigger.summary(runs, flat, 100 * MiB)
    assert values["first_slow"] is None and verdict.startswith("partly shown")
    assert "no degradation is shown" in verdict and "nothing swapped" in verdict
    assert "stayed fast (no page-cache limit)" in premise
    assert way_verdict.startswith("true") and "completed" in way_out
    cliff = bigger.summary(runs, _sweep(92 * MiB), 100 * MiB)
    assert "with swap it would first slow down, explained only" in cliff[2]
    runs["mapped columns"].outcome = OOM_KILLED
    assert bigger.summary(runs, cliff_sweep := _sweep(92 * MiB), 100 * MiB)[4].startswith(
        "not shown"
    )
    assert cliff_sweep.cliff()[1] == 92 * MiB


def _facts(**values) -> _Facts:
    facts = {
        "memory_limit_mechanism": Fact("cgroup v1", "a test"),
        "eviction_works": Fact(True, "a test"),
        "filesystem": Fact("ext4", "a test"),
        "proc_self_io": Fact(True, "a test"),
        "cold_touch": Unknown("not measured in this test"),
        "read_ahead_kb": Fact(128, "a test"),
    }
    for key, value in values.items():
        facts[key] = value if isinstance(value, Unknown) else Fact(value, "a test")
    return _Facts(facts)


def test_the_doctor_says_what_each_mechanism_shows():
    assert [s.advice().verdict for s in notebook_07(_facts())] == [CLEAR, CLEAR, CLEAR]
    rlimit = [s.advice() for s in notebook_07(_facts(memory_limit_mechanism="RLIMIT_DATA"))]
    assert [a.verdict for a in rlimit] == [DIFFERENT] * 3
    assert "no working set thrashes" in " ".join(rlimit[1].reasons)
    none = notebook_07(_facts(memory_limit_mechanism=Unknown("nothing works")))
    assert {s.advice().verdict for s in none} == {NOT_SHOWN}
    cached = notebook_07(_facts(eviction_works=False))
    assert cached[1].advice().verdict == NOT_SHOWN


@linux
def test_pages_that_cannot_be_evicted_are_still_reported(store):
    import mmap

    from mmlab.instruments.pagecache import EvictionWarning

    with open(store, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        mm[:: mmap.PAGESIZE * 64]  # touch: pages this process maps cannot be dropped
        with pytest.warns(EvictionWarning, match="still mapped by this process"):
            assert bigger.limited(len, (), budget=64 * MiB, evict=store).value == 0


def test_the_doctor_names_swap_the_notebooks_own_limit_and_the_reclaim_policy():
    laptop = notebook_07(_facts(swap_total=8 * 2**30, lru_gen=True, cgroup_memory_limit=2**28))
    loads, sweep = laptop[0].advice(), laptop[1].advice()
    assert "swap here (8" in " ".join(loads.reasons) and loads.verdict == DIFFERENT
    assert "MGLRU reclaims by generations" in " ".join(sweep.reasons)
    here = notebook_07(_facts(swap_total=0, lru_gen=False))
    assert "no swap here" in " ".join(here[0].advice().reasons)
    assert "no MGLRU" in " ".join(here[1].advice().reasons)


def test_why_list_accounts_for_the_charge_with_the_copies_of_inherited_pages():
    done = _run("cgroup v1", OOM_KILLED, rss_anon=20 * MiB, anon=28 * MiB, file=3 * MiB)
    done.samples["usage"] = [0.0, 32 * MiB]
    why = biggerplots.why_list(done, 100 * MiB)
    assert "charged 32.0 MiB: 28.0 MiB private" in why and "3.0 MiB page cache" in why
    assert "1.0 MiB of kernel memory" in why and "the other 8.0 MiB" in why
    assert "copy-on-write" in why
    bare = _run("RLIMIT_DATA", OOM_KILLED, rss_anon=20 * MiB)
    assert "reports no private charge" in biggerplots.why_list(bare, 100 * MiB)


def test_the_charge_is_compared_at_a_sample_where_the_child_was_alive():
    done = _run("cgroup v1", OOM_KILLED)
    done.samples |= {
        "t": [0.0, 0.5, 1.0],
        "rss_anon": [0.0, 20.0 * MiB, float("nan")],  # a zombie's memory: gone
        "anon": [0.0, 28.0 * MiB, 30.0 * MiB],
        "file": [0.0, 3.0 * MiB, 0.0],
        "usage": [0.0, 32.0 * MiB, 31.0 * MiB],
    }
    why = biggerplots.why_list(done, 100 * MiB)
    assert "(0.50 s)" in why and "the other 8.0 MiB" in why and "nan" not in why


def test_unknown_storage_reads_stay_unknown(store, monkeypatch):
    monkeypatch.setattr(bigger, "storage_read_bytes", lambda pid: None)
    assert bigger.storage_read() is None
    assert all(read is None for _, read in bigger.passes(store, MiB, count=2))
    done = _run("cgroup v1", OOM_KILLED, rss_anon=30 * MiB)  # no read_bytes sampled
    runs = {"read()": done, "list(store)": done, "mapped columns": done}
    assert done.read_bytes is None
    assert "unknown" in biggerplots.why_naive(runs, 200 * MiB)
    assert "unknown" in biggerplots.why_list(done, 100 * MiB)
    assert "storage reads unknown" in biggerplots.workload_lines(runs, 100 * MiB)[1]
