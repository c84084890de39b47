"""Notebook 06's hands-on checks judge by measuring: plausible wrong answers fail them.

``flat_workers`` must fail a dataset that still holds the list's string objects however it is
dressed up (``gc.freeze()`` first, a tuple, a NumPy array of objects), and one that returns the
wrong strings; it must pass a different right answer than the notebook's (a fixed-width NumPy
string array holds no object per string). ``shared_array`` must fail a mapped array copied
into the process and a wrong array, and pass ``np.memmap`` of the data as well as the
notebook's ``np.load(..., mmap_mode="r")``.
"""

from __future__ import annotations

import gc
import os
import sys
import time

import numpy as np
import pytest

from mmlab.course import check, epochs, workers
from mmlab.course.handson import sharing

MiB = 2**20

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="USS and PSS come from /proc/PID/smaps_rollup"
)


@pytest.fixture(autouse=True)
def quick_in_a_temp_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MMLAB_QUICK", "1")
    monkeypatch.chdir(tmp_path)  # shared_array writes its file under data/


def test_the_checks_are_found_by_name():
    assert check.flat_workers is sharing.flat_workers
    assert check.shared_array is sharing.shared_array


def test_packed_strings_return_the_source_strings():
    strings = ["C", "CC#N", "", "O=C1NC=CN1é"]
    packed = sharing.PackedStrings(strings)
    assert len(packed) == 4 and [packed[i] for i in range(4)] == strings


def test_the_reference_keeps_workers_flat_and_the_naive_list_does_not():
    verdict = check.flat_workers(sharing.PackedStrings)
    assert verdict.passed, verdict.text()
    m = verdict.measured
    assert m["naive_extra"] > m["objects_bytes"] / 2  # the naive list really copied
    assert m["yours_extra"] <= m["tolerance"] < m["naive_extra"]


def test_a_fixed_width_numpy_string_array_is_also_flat():
    verdict = check.flat_workers(lambda smiles: np.array(smiles))
    assert verdict.passed, verdict.text()


def _freeze_then_list(smiles):
    gc.freeze()  # stops the collector's writes, not the refcount writes of reading
    return smiles


@pytest.mark.parametrize(
    "wrong",
    [_freeze_then_list, tuple, lambda smiles: np.array(smiles, dtype=object)],
    ids=["gc.freeze()", "tuple", "object array"],
)
def test_datasets_that_keep_the_string_objects_fail(wrong):
    verdict = check.flat_workers(wrong)
    assert not verdict.passed, verdict.text()
    assert verdict.measured["gc_frozen"] is (wrong is _freeze_then_list)
    assert verdict.measured["yours_extra"] > verdict.measured["tolerance"]
    assert gc.get_freeze_count() == 0  # the check undid the student's gc.freeze()


def test_a_flat_dataset_of_the_wrong_strings_fails():
    verdict = check.flat_workers(lambda smiles: sharing.PackedStrings(smiles[::-1]))
    assert not verdict.passed and "dataset[0]" in verdict.off[0]


def test_wrong_items_seen_only_in_the_workers_fail():
    class RightOnlyInTheParent(sharing.PackedStrings):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            return item if i in (0, len(self) // 2, len(self) - 1) else item.lower()

    verdict = check.flat_workers(RightOnlyInTheParent)
    assert not verdict.passed and "not the source's SMILES string" in verdict.off[0]


def test_a_student_exception_becomes_a_verdict():
    def broken(smiles):
        raise RuntimeError("not written yet")

    verdict = check.flat_workers(broken)
    assert not verdict.passed and "not written yet" in verdict.off[0]


def test_a_mapped_array_is_shared_and_np_load_is_not():
    verdict = check.shared_array(lambda path: np.load(path, mmap_mode="r"))
    assert verdict.passed, verdict.text()
    m = verdict.measured
    # np.load gives each child a private copy: its USS grows by about the array's size
    assert m["naive_uss_extra"] == pytest.approx(m["array_bytes"], rel=0.25)
    # shared pages: the children's PSS grows by the array once, not once per child
    assert m["yours_pss_sum"] < 1.5 * m["array_bytes"]
    assert m["yours_pss_sum"] == pytest.approx(m["reference_pss_sum"], abs=m["tolerance"])
    unsolved = check.shared_array(np.load)
    assert not unsolved.passed


def test_np_memmap_of_the_data_is_shared_too():
    def memmap(path):
        header = np.load(path, mmap_mode="r")  # the shape, dtype and offset of the data
        return np.memmap(path, header.dtype, "r", header.offset, header.shape)

    verdict = check.shared_array(memmap)
    assert verdict.passed, verdict.text()


@pytest.mark.parametrize(
    "wrong",
    [
        lambda path: np.load(path, mmap_mode="r").copy(),
        lambda path: np.array(np.load(path, mmap_mode="r")),
    ],
    ids=["copy of the mapping", "np.array of the mapping"],
)
def test_a_private_copy_of_a_mapping_fails(wrong):
    verdict = check.shared_array(wrong)
    assert not verdict.passed, verdict.text()
    assert verdict.measured["yours_uss_extra"] > verdict.measured["tolerance"]


def test_the_wrong_array_fails():
    verdict = check.shared_array(lambda path: np.fromfile(path))  # the .npy header too
    assert not verdict.passed and "shape" in verdict.off[0]


def _exits(path):
    os._exit(3)  # a child that dies before it answers


def _loops(path):
    while True:
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("stuck", "said"), [(_exits, "exited (code 3)"), (_loops, "did not return within")]
)
def test_a_child_that_exits_or_loops_gets_a_verdict_and_no_child_is_left(stuck, said, monkeypatch):
    import multiprocessing

    monkeypatch.setattr(sharing, "_MIN_WAIT", 1.0)
    earlier = set(multiprocessing.active_children())  # e.g. DataLoader workers still exiting
    began = time.perf_counter()
    verdict = check.shared_array(stuck)
    assert not verdict.passed and said in verdict.off[0], verdict.text()
    assert time.perf_counter() - began < 60
    assert set(multiprocessing.active_children()) <= earlier


@pytest.mark.parametrize("judge", [check.flat_workers, check.shared_array])
def test_without_smaps_rollup_a_check_says_not_available_here(judge, monkeypatch):
    monkeypatch.setattr(sharing, "_HAS_SMAPS_ROLLUP", False)
    verdict = judge(lambda x: x)
    assert not verdict.passed and verdict.off[0].startswith("not available here")


# -- the reveals' explanations follow the run's numbers -----------------------------------


def _run(label, growth, seconds=1.0, worker_cpu=0.2, main_cpu=0.1, after_uss=0):
    start = [{"private_dirty": 0, "uss": 0}] * 2
    end = [{"private_dirty": growth, "uss": after_uss}] * 2
    return workers.EpochRun(label, seconds, 0.1, 1000, 100, start, end, worker_cpu, main_cpu)


def test_the_workers_reveals_name_what_happened():
    fp = {"objects": 100 * MiB, "array_data": 30 * MiB}
    runs = [_run("list", 105 * MiB), _run("numpy", 5 * MiB), _run("store", 6 * MiB)]
    assert epochs.numpy_arm(runs, fp) == "flat"
    assert "100.0 MiB copied (100% of the objects)" in epochs.why_list_growth(runs, fp)
    grown = [runs[0], _run("numpy", 60 * MiB), runs[2]]
    assert epochs.numpy_arm(grown, fp) == "grows"
    assert "grew more than the store's" in epochs.why_numpy_arm(grown, fp)
    frozen = _run("frozen", 104 * MiB)
    assert epochs.freeze_effect(runs[0], frozen) == "same"
    assert epochs.freeze_effect(runs[0], _run("frozen", 50 * MiB)) == "less"
    assert "tracks 0 of 2" in epochs.why_freeze(runs[0], frozen, [("C", 1.0), ("O", 2.0)])


def test_the_speed_reveal_says_which_way_it_went():
    alone = {"list": 1.0, "numpy": 1.0, "store": 1.0}
    work = dict.fromkeys(alone, 0.005)
    slow = [_run(k, 0, seconds=3.0, worker_cpu=0.8, main_cpu=1.0) for k in alone]
    assert epochs.workers_effect(slow, alone) == "slower"
    why = epochs.why_workers_speed(slow, work, alone, 2, "2 CPUs")
    assert "in none of the 3 arms" in why and "one sample each" in why and "they waited" in why
    cheap = [_run(k, 0, seconds=3.0, worker_cpu=0.2, main_cpu=0.05) for k in alone]
    assert "could have beaten no workers by over 10% in all 3" in epochs.why_workers_speed(
        cheap, work, alone, 2, "2 CPUs"
    )
    fast = [_run(k, 0, seconds=0.5) for k in alone]
    assert epochs.workers_effect(fast, alone) == "faster"


def test_the_readers_reveals_follow_the_steps():
    from mmlab.course import sharing as readers

    def step(n, rss, pss, first_uss, cached, uss=0):
        return {
            "readers": n,
            "rss": rss,
            "pss": pss,
            "uss": uss,
            "first_uss": first_uss,
            "cached": cached,
        }

    steps = [
        step(0, 0, 0, 0, 0),
        step(1, 10, 10, 10, 12, 10),
        step(2, 20, 10, 0, 12),
        step(1, 10, 10, 10, 12, 10),
        step(0, 0, 0, 0, 12),
    ]
    ratio, why = readers.why_rss_over_pss(steps)
    assert ratio == 2 and "1/2" in why
    assert readers.uss_change(steps) == "falls"
    assert readers.after_exit(steps) == "cached"
    from mmlab.instruments.sysinfo import Fact, Unknown

    def report(fs, limit):
        facts = {"filesystem": fs, "memory_available": Unknown("no"), "cgroup_memory_limit": limit}
        return type("R", (), facts)()

    why = readers.why_after_exit(steps, report(Fact("ext4", "m"), Fact(2**31, "c")))
    assert "the available memory unknown" in why and "may hold 2.0 GiB" in why
    assert "cannot drop them" in readers.why_after_exit(
        steps, report(Fact("tmpfs", "m"), Fact("unlimited", "c"))
    )
    steps[-1] = step(0, 0, 0, 0, 0)
    assert readers.after_exit(steps) == "freed"
