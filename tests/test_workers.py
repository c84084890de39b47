"""mmlab.course.workers: DataLoader epochs measured per worker, and the sentences they print."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from mmlab import RecordStore
from mmlab.course import epochs, workers
from mmlab.data.dataset import ArrayDataset, ListDataset, StoreDataset

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="smaps_rollup")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "s.mms"
    with RecordStore.create(path, ("a", "b"), capacity=5000) as s:
        s.extend((f"C{i}O", [i, -i]) for i in range(3000))
    return path


def test_private_memory_adds_up():
    mem = workers.private_memory(os.getpid())
    assert mem["uss"] == mem["private_clean"] + mem["private_dirty"] > 0
    assert mem["pss_anon"] > 0 and mem["pss_shmem"] >= 0


def test_run_epoch_measures_each_worker(store):
    pytest.importorskip("torch")
    run = workers.run_epoch(ArrayDataset(store), "arrays", workers=2, batch_size=500)
    assert run.items == 3000 and run.batches == 6
    assert len(run.start) == len(run.end) == 2
    assert 0 < run.first_batch_s <= run.seconds
    assert run.worker_cpu_s >= 0 and run.main_cpu_s >= 0
    assert np.isfinite(run.growth()) and run.after("uss") > 0


def test_forkserver_and_freeze_and_early_stop(store):
    pytest.importorskip("torch")
    run = workers.run_epoch(
        StoreDataset(store), "store", workers=1, batch_size=100, start_method="forkserver",
        max_batches=3, freeze=True,
    )  # fmt: skip
    assert run.start_method == "forkserver" and run.batches == 3
    import gc

    assert gc.get_freeze_count() == 0  # unfrozen after the epoch


def test_footprint_splits_objects_and_array_data(store):
    fp = workers.footprint(ListDataset(store))
    assert fp["array_data"] == 3000 * 2 * 4
    assert fp["objects"] > 3000 * (sys.getsizeof(("", "")) + 49)


def _run(label, start, end, cpu=1.0):
    mem = [{"private_dirty": start, "private_clean": 0, "uss": start}] * 2
    after = [{"private_dirty": end, "private_clean": 0, "uss": end}] * 2
    return workers.EpochRun(label, 2.0, 0.5, 1000, 10, mem, after, cpu, 0.5)


def test_lines_and_summary_judge_from_the_run():
    mib = 2**20
    fp = {"objects": 100 * mib, "array_data": 30 * mib}
    runs = [_run("Python list", 0, 104 * mib), _run("NumPy in RAM", 0, 4 * mib)]
    runs.append(_run("mapped store", 0, 5 * mib))
    assert "refcounted objects, not RAM" in workers.copy_lines(runs, fp)[-1]
    values, _, verdict = workers.workers_summary(runs, fp)
    assert values["list_copied"] == 100 * mib and verdict.startswith("true")
    runs[0] = _run("Python list", 0, 30 * mib)
    assert "cannot tell" in workers.copy_lines(runs, fp)[-1]
    assert workers.workers_summary(runs, fp)[2].startswith("not shown")
    frozen = _run("frozen", 0, 98 * mib)
    fake_list = type("D", (), {"items": [(1, 2)] * 10})()
    lines = workers.freeze_lines(_run("Python list", 0, 104 * mib), frozen, fake_list)
    assert "nothing to protect" in lines[-1] and "0 of 10" in lines[1]
    pair = [_run("n", 0, 60 * mib), _run("s", 0, 10 * mib)]
    assert "own full copy" in workers.start_method_lines(pair, 50 * mib)[-1]
    per_batch = {r.label: 0.05 for r in runs}
    alone = {r.label: 0.5 for r in runs}
    lines = epochs.speed_lines(runs, per_batch, alone, cpus=2)
    assert "handing each batch over" in lines[-1] and "in none of the 3 arms" in lines[-1]
    assert "3 of 3 arms were over 1.2x slower" in lines[-3] and "one sample each" in lines[-2]


def test_plot_draws(store):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [_run("a", 0, 10 * 2**20), _run("b", 0, 2**20)]
    fig = workers.plot_workers(runs, {"objects": 2**20, "array_data": 0})
    assert len(fig.axes) == 2
    plt.close("all")


def test_usable_cpus_takes_the_cgroup_quota():
    from mmlab.instruments.sysinfo import Fact

    report = type("R", (), {"cpus_usable": Fact(64, "a"), "cgroup_cpu_limit": Fact(1.5, "q")})()
    cpus, said = epochs.usable_cpus(report)
    assert cpus == 1.5 and "affinity 64" in said and "quota 1.5" in said
    report.cgroup_cpu_limit = Fact("unlimited", "q")
    assert epochs.usable_cpus(report)[0] == 64


def test_epoch_lines_print_no_negative_zero():
    line = workers.epoch_lines([_run("a", 1000, 0)])[0]
    assert "-0.0" not in line and "+0.0" in line
