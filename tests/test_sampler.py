"""RSSSampler: about duration/interval samples, marks, and a child process's memory."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from mmlab import RSSSampler

CHILD = "import sys, time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); print('ready', flush=True); time.sleep(30)"  # noqa: E501


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
        block = np.ones(100 * 2**20, dtype=np.uint8)
        time.sleep(0.05)
    assert sampler.rss.max() - sampler.rss[0] >= 90 * 2**20
    assert sampler.marks[0][1] == "allocate"
    del block


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
        block = np.ones(20 * 2**20, dtype=np.uint8)
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
