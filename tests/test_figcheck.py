"""The figure checker finds a legend over data, labels over each other and text cut off by the
figure's edge; and the course's figures that had such defects come out clean, drawn through the
same functions the notebooks call, with the notebooks' matplotlibrc and without it."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from mmlab import bench
from mmlab.course import blocks, diagram, plots, sharing, workers
from mmlab.course.figcheck import check_open_figures, overlaps
from mmlab.instruments.stats import BenchResult, Row, Spread

MiB = 2**20
NOTEBOOK_RC = Path(__file__).resolve().parents[1] / "notebooks" / "matplotlibrc"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(params=["default", "notebooks"])
def rc(request):
    """Each figure twice: matplotlib's defaults, and the look the notebooks' kernels load."""
    fname = str(NOTEBOOK_RC) if request.param == "notebooks" else None
    with matplotlib.rc_context(fname=fname):
        yield request.param


# -- the checker itself -----------------------------------------------------------------------


def test_a_legend_over_a_bar_is_reported():
    fig, ax = plt.subplots(layout="constrained")
    ax.bar([0, 1, 2], [10, 10, 10], label="blog")
    ax.legend(loc="center")
    found = overlaps(fig)
    assert any("legend ['blog']" in p and "covers patch 2 (Rectangle)" in p for p in found), found


def test_a_clean_figure_and_a_legend_outside_the_axes_are_not():
    fig, ax = plt.subplots(layout="constrained")
    ax.bar([0, 1, 2], [10, 10, 10], label="bars")
    ax.plot([0, 1, 2], [5, 9, 2], "o-", label="line")
    ax.text(0, 11, "a label")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    assert overlaps(fig) == []


def test_a_legend_over_line_points_or_a_label_is_reported():
    fig, (points, label) = plt.subplots(1, 2, layout="constrained")
    points.plot(np.arange(10), np.full(10, 5.0), "o", label="flat")
    points.legend(loc="center")
    label.plot([0, 1], [0, 1], label="diagonal")
    label.text(0.5, 0.95, "+16", transform=label.transAxes, ha="center", va="center")
    label.legend(loc="upper center")
    found = overlaps(fig)
    assert any("data point(s) of Line2D 'flat'" in p for p in found), found
    assert any("covers text '+16'" in p for p in found), found


def test_two_labels_over_each_other_are_reported():
    fig, ax = plt.subplots(layout="constrained")
    ax.plot([0, 1], [0, 1])
    ax.text(0.5, 0.5, "reader 1 joins")
    ax.annotate("reader 2 joins", (0.52, 0.5))
    found = overlaps(fig)
    assert found == ["text 'reader 1 joins' and text 'reader 2 joins' overlap in axes '(untitled)'"]


def test_a_label_cut_off_by_the_edge_is_reported():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1], label="x")
    ax.text(0.9, 0.5, "a label that runs past the edge", transform=ax.transAxes)
    fig.legend(loc="upper left", bbox_to_anchor=(0.95, 1.0))
    found = overlaps(fig)
    assert any("'a label that runs past the edge'" in p and "cut off" in p for p in found)
    assert any(p.startswith("legend ['x'] of the figure is cut off") for p in found), found
    assert next(p for p in check_open_figures() if "cut off" in p).startswith("figure ")


# -- the course's figures ---------------------------------------------------------------------


def _result(medians_ms, names, *, size=None, reference_ms=None, title=""):
    """A comparison whose rows take ``medians_ms`` (2% apart round to round)."""
    spread = np.array([0.98, 0.99, 1.0, 1.01, 1.02])
    rows = []
    for name, ms in zip(names, medians_ms, strict=True):
        t = ms / 1e3 * spread
        rate = {"rate": Spread.of(size / t), "nbytes": size} if size else {}
        rows.append(Row(name, Spread.of(t), **rate))
    ref = None
    if reference_ms is not None:
        t = np.full(5, reference_ms / 1e3)
        ref = Row("memory copy", Spread.of(t), rate=Spread.of(size / t), is_reference=True)
    return BenchResult(rows, ref, 5, [], title=title, params={"size": size or 0})


def test_05_causes_no_legend_hides_a_bar(rc):
    names = ["blog loop, flush every record", "blog loop, flush once"]
    names += ["RecordStore, Python loop, one flush", "RecordStore, vectorized, one flush"]
    for medians in ([2668, 18.6, 3.12, 0.811], [310, 9.0, 2.1, 1.5]):  # full size, quick
        result = _result(medians, names, title="doubling U0 of 20,000 records")
        causes = ["flush once", "column layout (no parsing)", "one vectorized operation"]
        ax = plots.plot_causes(result, causes, title=result.title)
        assert overlaps(ax.figure) == []
    cached = {name: 0 for name in ("header", "offsets", "heap", "mu", "alpha", "gap", "zpve")}
    ax = plots.plot_sections(cached | {"U0": 3000}, title="after doubling U0: pages cached")
    assert overlaps(ax.figure) == []


def test_01_blocks_and_page_path(rc):
    runs = [blocks.run(64 * 2**10, 200), blocks.run(2**20, 8), blocks.run(40 * MiB, 2)]
    axes = blocks.plot(runs)
    assert overlaps(axes[0].figure) == []
    for file_mib, first_file_page in ((64, 0), (32, 0), (32, 16)):  # full, quick, offset
        pages = file_mib * MiB // 4096
        touched = [pages // 4, pages // 4 + 3, pages // 4 + 20]  # as notebook 01 touches
        mapped = np.zeros(pages, bool)
        mapped[pages // 4 : pages // 4 + 32] = True
        cached = np.zeros(pages + first_file_page, bool)
        cached[pages // 4 - 1024 : pages // 4 + 1024] = True  # one read-around window
        ax = diagram.draw_page_path(
            touched, mapped, cached, window=48, first_file_page=first_file_page
        )
        assert overlaps(ax.figure) == [], (file_mib, first_file_page)


class _Sampler:
    """What ``plot_readers`` reads of an ``RSSSampler``: times, marks and summed series."""

    def __init__(self, marks, end):
        self.marks, self.times = marks, np.arange(0, end, 0.1)

    def series(self, name):
        top = {"children_pss_anon": 36, "children_pss_file": 95, "children_uss": 110}[name]
        return (
            np.interp(self.times, [0, 0.3, self.times[-1] - 0.2, self.times[-1]], [0, top, top, 0])
            * MiB
        )


@pytest.mark.parametrize(
    "readers, join_s, leave_s", [(4, 0.38, 0.35), (3, 0.15, 0.33), (3, 0.02, 0.3)]
)
def test_06_readers_marks_and_legends(rc, readers, join_s, leave_s):
    marks = [(k * join_s, f"+{k + 1}") for k in range(readers)]
    marks += [(readers * join_s + k * leave_s, f"-{k + 1}") for k in range(readers)]
    alive = [*range(readers + 1), *range(readers - 1, -1, -1)]
    steps = [{"readers": n, "rss": n * 88 * MiB, "pss": 88 * MiB * (n > 0)} for n in alive]
    for s in steps:
        s |= {"uss": 88 * MiB * (s["readers"] == 1), "cached": 96 * MiB}
    sampler = _Sampler(marks, readers * (join_s + leave_s) + 0.5)
    fig = sharing.plot_readers(steps, 98 * MiB, 88 * MiB, sampler=sampler)
    assert overlaps(fig) == []


def test_06_workers(rc):
    def run(label, dirty_mib, seconds):
        start = [{"private_dirty": 0, "private_clean": 0, "uss": 0}] * 2
        end = [{"private_dirty": int(dirty_mib * MiB), "private_clean": 0, "uss": 0}] * 2
        return workers.EpochRun(label, seconds, 0.5, 130_831, 511, start, end, 1.0, 0.5)

    runs = [run("Python list", 124.4, 3.06), run("NumPy in RAM", 4.3, 2.75)]
    runs.append(run("mapped store", 6.1, 3.38))
    fig = workers.plot_workers(runs, {"objects": 120 * MiB, "array_data": 38 * MiB})
    assert overlaps(fig) == []


def test_04_memory_copy_legend_covers_no_bar(rc):
    size = 256 * MiB
    names = ["read", "readinto", "pread", "mmap slice", "numpy.memmap sum"]
    speeds = [10.3, 10.2, 10.4, 10.5, 13.4]  # GB/s; the sum beats the copy's 12.5
    race = _result([size / g / 1e6 for g in speeds], names, size=size, reference_ms=size / 12.5e6)
    assert overlaps(race.plot().figure) == []
    runs = [(pattern, cache) for cache in ("warm", "cold") for pattern in ("sequential", "random")]
    table = {}
    for k, (pattern, cache) in enumerate(runs):
        for block, scale in ((4096, 0.4), (65536, 0.8), (2**20, 1.0)):
            gbs = [g * scale / (1 + 3 * k) for g in speeds]
            table[pattern, cache, block] = _result(
                [size / g / 1e6 for g in gbs], names, size=size, reference_ms=size / 12.5e6
            )
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), layout="constrained")
    fig.suptitle("GB/s by method")
    bench.plot_sweeps(table, runs, axes)
    assert overlaps(fig) == []
