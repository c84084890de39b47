"""RSSSampler: samples, marks, children (grandchildren too), memory by kind, and plots."""

from __future__ import annotations

import contextlib
import mmap
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from mmlab import RSSSampler

CHILD = "import sys, time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); print('ready', flush=True); time.sleep(30)"  # noqa: E501


def fresh_memory(nbytes: int) -> mmap.mmap:
    """``nbytes`` of private anonymous memory, every page written: a fresh mapping, because
    malloc may hand back heap pages an earlier test left resident, which add no RSS."""
    block = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    block.write(b"x" * nbytes)
    return block


def test_sample_count_matches_duration_over_interval():
    with RSSSampler(interval=0.01) as sampler:
        time.sleep(0.5)
    # about 50 samples, plus the first and last; a loaded machine may skip a few
    assert 25 <= len(sampler) <= 60
    assert len(sampler.times) == len(sampler.rss)
    assert np.all(np.diff(sampler.times) > 0)
    assert sampler.rss.min() > 0


def test_sees_memory_allocated_while_running():
    with RSSSampler(interval=0.005) as sampler:
        time.sleep(0.05)
        sampler.mark("allocate")
        block = fresh_memory(100 * 2**20)
        time.sleep(0.05)
    assert sampler.rss.max() - sampler.rss[0] >= 90 * 2**20
    assert sampler.marks[0][1] == "allocate"
    block.close()


def test_sees_a_child_processs_memory():
    with subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout.readline().strip() == "ready"
        try:
            with RSSSampler(interval=0.01, children=True, uss_pss=True) as sampler:
                time.sleep(0.1)
        finally:
            child.kill()
    assert sampler.series("children_rss").max() >= 190 * 2**20
    assert sampler.series("children_uss").max() >= 190 * 2**20
    assert sampler.series("n_children").max() >= 1
    assert sampler.pss.max() > 0


def test_fault_series_are_cumulative():
    with RSSSampler(interval=0.01, faults=True) as sampler:
        block = fresh_memory(20 * 2**20)
        time.sleep(0.05)
    minor = sampler.series("minor_faults")
    assert minor[-1] > minor[0] and np.all(np.diff(minor) >= 0)
    del block


def test_errors_and_repr():
    with pytest.raises(ValueError):
        RSSSampler(interval=0)
    sampler = RSSSampler().start()
    with pytest.raises(RuntimeError, match="already running"):
        sampler.start()
    sampler.stop()
    assert "stopped" in repr(sampler) and "peak RSS" in repr(sampler)
    with pytest.raises(KeyError, match="no series 'uss'"):
        sampler.series("uss")


def test_plot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with RSSSampler(interval=0.01) as sampler:
        sampler.mark("here")
        time.sleep(0.05)
    ax = sampler.plot()
    assert ax.get_ylabel() == "MiB" and len(ax.lines) >= 2  # RSS and the mark
    plt.close(ax.figure)


# -- memory by kind ------------------------------------------------------------------------

MiB = 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")
KINDS = ("anon", "file", "shmem")


def _sum_of_kinds(sampler: RSSSampler, total: str) -> np.ndarray:
    return sum(sampler.series(f"{total}_{kind}") for kind in KINDS)


def test_rss_by_kind_adds_up_in_every_sample():
    with RSSSampler(interval=0.005, memory_kinds=True) as sampler:
        time.sleep(0.03)
        block = fresh_memory(64 * MiB)  # private anonymous memory
        time.sleep(0.03)
    anon = sampler.series("rss_anon")
    assert anon.max() - anon[0] >= 60 * MiB
    assert np.all(np.abs(_sum_of_kinds(sampler, "rss") - sampler.rss) <= 2 * PAGE)
    assert sampler.unavailable == {}
    del block


def test_pss_by_kind_adds_up_to_pss():
    with RSSSampler(interval=0.01, memory_kinds=True, uss_pss=True) as sampler:
        time.sleep(0.05)
    assert len(sampler) >= 2
    assert np.all(np.abs(_sum_of_kinds(sampler, "pss") - sampler.pss) <= 2 * PAGE)
    assert np.all(sampler.uss <= sampler.pss) and np.all(sampler.pss <= sampler.rss)


def test_children_by_kind():
    with subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout.readline().strip() == "ready"
        try:
            with RSSSampler(interval=0.01, children=True, memory_kinds=True) as sampler:
                time.sleep(0.05)
        finally:
            child.kill()
    assert sampler.series("children_rss_anon").max() >= 190 * MiB
    children = sampler.series("children_rss")
    assert np.all(np.abs(_sum_of_kinds(sampler, "children_rss") - children) <= 2 * PAGE)


GRANDPARENT = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
    "print('ready', flush=True); time.sleep(30)"
)


def test_finds_every_descendant_and_closes_what_it_opened():
    import psutil

    fds_before = len(os.listdir("/proc/self/fd"))
    others = len(psutil.Process().children(recursive=True))  # e.g. multiprocessing's tracker
    children = [
        subprocess.Popen([sys.executable, "-c", GRANDPARENT], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready"
        descendants = [
            process
            for child in children
            for process in [psutil.Process(child.pid), *psutil.Process(child.pid).children()]
        ]
        with RSSSampler(interval=0.01, children=True, faults=True) as sampler:
            time.sleep(0.05)
            children[0].kill()  # gone while sampled; its own child is no longer ours
            children[0].wait()
            time.sleep(0.05)
    finally:
        for process in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):  # the one killed above
                process.kill()
        for child in children:
            child.wait()
            child.stdout.close()
    n = sampler.series("n_children")
    assert len(descendants) == 4 and n[0] == 4 + others and n[-1] == 2 + others
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_every_nan_is_explained():
    with RSSSampler(interval=0.01, memory_kinds=True, uss_pss=True, faults=True) as sampler:
        time.sleep(0.03)
    for name in sampler.names:
        if np.isnan(sampler.series(name)).any():
            assert name in sampler.unavailable
    for name in sampler.unavailable:
        assert np.isnan(sampler.series(name)).all()


def test_plot_stacks_memory_by_kind():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with RSSSampler(interval=0.01, memory_kinds=True) as sampler:
        time.sleep(0.03)
    ax = sampler.plot(stack="kind")
    assert len(ax.collections) == 3 and ax.get_title() == "RSS by kind"
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["anonymous", "file-backed", "shmem"]
    plt.close(ax.figure)

    with RSSSampler(interval=0.01, memory_kinds=True, uss_pss=True) as sampler:
        time.sleep(0.03)
    ax = sampler.plot(stack="kind", series=("rss",))
    assert ax.get_title() == "PSS by kind" and len(ax.lines) == 1
    plt.close(ax.figure)

    with RSSSampler(interval=0.01) as sampler:
        pass
    with pytest.raises(ValueError, match="memory_kinds=True"):
        sampler.plot(stack="kind")
    with pytest.raises(ValueError, match="stack must be"):
        sampler.plot(stack="kinds")
    plt.close("all")
