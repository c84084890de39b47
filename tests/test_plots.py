"""The course's figures: each speed-up annotated with its one cause; cached pages by section."""

from __future__ import annotations

import pytest

from mmlab import bench
from mmlab.course import plots


def test_plot_causes_annotates_each_speed_up():
    import matplotlib

    matplotlib.use("Agg")
    result = bench.compare(
        {"slow": lambda: sum(range(20_000)), "fast": lambda: None}, repeats=3, warmup=0
    )
    ax = plots.plot_causes(result, ["doing nothing"])
    texts = [t.get_text() for t in ax.texts]
    assert any("faster" in t and "doing nothing" in t for t in texts)
    assert ax.get_legend() is None  # nothing to cover the bars
    with pytest.raises(ValueError, match="causes"):
        plots.plot_causes(result, [])


def test_cached_by_section_counts_the_pages_of_each_range(tmp_path):
    import mmap
    import os

    from mmlab import pagecache

    page = mmap.PAGESIZE
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * (8 * page))
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    resident = pagecache.residency(path)
    counted = plots.cached_by_section(path, {"a": (0, 3 * page), "b": (3 * page, 5 * page)})
    assert counted == {"a": int(resident[:3].sum()), "b": int(resident[3:].sum())}


def test_bar_labels_have_no_exponent():
    assert plots._number(3165.4) == "3,165"
    assert plots._number(18.54) == "18.5"
    assert plots._number(0.01234) == "0.0123"


def test_plot_sections_outlines_each_sections_size():
    import matplotlib

    matplotlib.use("Agg")
    import mmap

    page = mmap.PAGESIZE
    sections = {"U0": (0, 3 * page), "mu": (3 * page, 2 * page + 1)}
    ax = plots.plot_sections({"U0": 3, "mu": 0}, sections=sections)
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == [3, 3, 3, 0]  # the outlines (U0 3 pages, mu 3 pages), then the cached
