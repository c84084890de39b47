"""mmlab.sharing: notebook 06's readers, their summaries and plot; the three datasets."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from mmlab import RecordStore
from mmlab.course import sharing
from mmlab.data.dataset import ArrayDataset, ListDataset, StoreDataset

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="smaps_rollup and mincore are Linux's"
)


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "s.mms"
    with RecordStore.create(path, ("a", "b"), capacity=5000) as s:
        s.extend((f"C{i}O", [i, -i]) for i in range(3000))
    return path


def test_the_three_datasets_return_the_same_items(store):
    arms = [ListDataset(store), ArrayDataset(store), StoreDataset(store)]
    assert {len(arm) for arm in arms} == {3000}
    for i in (0, 1234, 2999):
        items = [arm[i] for arm in arms]
        assert {smiles for smiles, _ in items} == {f"C{i}O"}
        for _, values in items:
            assert values.dtype == np.float32
            np.testing.assert_array_equal(values, [i, -i])


def test_data_pages_leave_out_the_reserved_capacity(store):
    sizes = sharing.data_pages(store)
    assert sizes["file"] == os.path.getsize(store)
    assert 0 < sizes["data"] < sizes["file"]
    assert sizes["data"] + sizes["reserved"] == sizes["file"]
    assert sizes["data"] % os.sysconf("SC_PAGE_SIZE") == 0
    assert sizes["heap_unused"] + sizes["padding"] == sizes["reserved"]
    assert sizes["heap_unused"] > 0 and sizes["padding"] > 0


def test_a_second_reader_takes_the_first_ones_uss_and_the_cache_stays(store):
    with sharing.Readers(store) as readers:
        readers.join()
        one = sharing.snapshot(store, readers.pids)
        readers.join()
        two = sharing.snapshot(store, readers.pids)
    gone = sharing.snapshot(store, [])
    assert one["readers"] == 1 and two["readers"] == 2 and gone["readers"] == 0
    assert one["uss"] == one["rss"] > 0
    assert two["first_uss"] < one["first_uss"] / 2
    # fault-around may map the second reader a few more of the cached pages than the first
    assert two["rss"] >= 1.8 * one["rss"]
    assert one["pss"] <= two["pss"] < 0.6 * two["rss"]
    assert gone["cached"] >= one["rss"] * 0.9  # pages stay cached after the readers exit
    assert gone["rss"] == gone["pss"] == gone["all_uss"] == 0


def test_plots_draw(store):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [sharing.snapshot(store, [])]
    sizes = sharing.data_pages(store)
    fig = sharing.plot_readers(steps, sizes["file"], sizes["data"])
    assert len(fig.axes) == 2
    # A reader caught exiting is a NaN sample: the line skips it instead of breaking.
    series = np.array([1.0, np.nan, 3.0]) * 2**20
    sampler = type(
        "S", (), {"times": np.arange(3.0), "marks": [], "series": lambda self, n: series}
    )()
    fig = sharing.plot_readers(steps, sizes["file"], sizes["data"], sampler=sampler)
    assert all(np.isfinite(line.get_ydata()).all() for line in fig.axes[0].lines)
    plt.close("all")


def _step(readers: int, rss: int, uss: int, cached: int, first_uss: int) -> dict:
    pss = 100 if readers else 0
    return {"readers": readers, "rss": rss, "pss": pss, "uss": uss, "cached": cached} | {
        "first_uss": first_uss
    }


def test_readers_summary_judges_from_the_run():
    sizes = {"file": 120, "data": 100, "reserved": 20}
    steps = [
        _step(0, 0, 0, 0, 0),
        _step(1, 100, 100, 120, 100),
        _step(2, 200, 0, 120, 0),
        _step(1, 100, 100, 120, 100),
        _step(0, 0, 0, 120, 0),
    ]
    values, measured, verdict = sharing.readers_summary(steps, sizes)
    assert (
        values["readers"] == 2 and values["sum_rss"] == 200 and values["cached_after_exit"] == 120
    )
    assert "2 readers" in measured and verdict.startswith("true")
    steps[-1]["cached"] = 0  # the pages left the cache with the last reader
    assert sharing.readers_summary(steps, sizes)[2].startswith("partly")


def test_exit_and_pss_lines_say_what_happened():
    sizes = {"file": 120, "data": 100, "reserved": 20, "heap_unused": 12, "padding": 8}
    steps = [_step(0, 0, 0, 0, 0), _step(1, 100, 100, 120, 100), _step(2, 200, 0, 120, 0)]
    steps += [_step(1, 100, 100, 120, 100), _step(0, 0, 0, 120, 0)]
    assert sharing.exit_lines(steps)[-1].endswith("stayed cached.")
    assert "2 readers" in sharing.pss_lines(steps, sizes)[1]
    steps[-1]["cached"] = 0
    assert "dropped" in sharing.exit_lines(steps)[-1]


def test_step_lines_name_each_count():
    from mmlab.course import sharing as readers

    step = {"readers": 1, "rss": 2**21, "pss": 2**20, "uss": 2**20, "cached": 3 * 2**20}
    step |= {"all_pss_anon": 0, "all_pss_file": 2**20}
    (line,) = readers.step_lines([step])
    assert line.startswith("1 reader : store pages RSS    2.0 MiB, PSS    1.0")
    assert "page cache    3.0 MiB" in line
