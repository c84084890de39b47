"""The page-path diagram, drawn for a real file mapping after touching a page: it has the four
rows and the counts it shows are those pagemap and mincore measured."""

from __future__ import annotations

import mmap
import os

import matplotlib
import numpy as np

from mmlab import diagram, pagemap

matplotlib.use("Agg")
PAGE = mmap.PAGESIZE


def test_page_path_of_a_real_mapping(tmp_path):
    import matplotlib.pyplot as plt

    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(256 * PAGE))
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        _ = mm[100 * PAGE]
        fig, ax = plt.subplots()
        found = diagram.show_page_path(mm, path, [100], window=32, ax=ax)
        assert np.array_equal(found.mapped, pagemap.present(mm))
    assert found.mapped[100] and found.cached[100]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 4 and labels[0].startswith("virtual") and "file" in labels[3]
    mapped = int(found.mapped.sum())
    assert f"-> {mapped:,} mapped" in ax.get_title()
    note = next(t.get_text() for t in ax.texts if t.get_text().startswith("Shown"))
    outside = np.r_[found.mapped[:84], found.mapped[116:]].sum()  # window 84..115 around 100
    assert f"{int(outside):,} of them mapped" in note
    plt.close(fig)


def test_window_follows_the_touched_pages():
    assert diagram._window(np.array([500]), 1000, 48) == (476, 524)
    assert diagram._window(np.array([2]), 1000, 48) == (0, 48)
    assert diagram._window(np.array([]), 10, 48) == (0, 10)


def test_a_figure_of_its_own_adds_the_whole_file_strip():
    import matplotlib.pyplot as plt

    cached = np.zeros(300, bool)
    cached[90:130] = True
    ax = diagram.draw_page_path([100], np.arange(300) == 100, cached, window=32)
    strip = [a for a in ax.figure.axes if a is not ax]
    assert len(strip) == 1 and "whole file (300 pages)" in strip[0].get_title()
    assert strip[0].images[0].get_array().sum() == 40
    plt.close("all")


def test_explain_names_the_readahead_mark_on_a_laptop():
    # read_ahead_kb 128: two major faults, each window leaves its PG_readahead page unmapped
    mapped, cached = np.zeros(200, bool), np.zeros(200, bool)
    mapped[96:128] = True
    mapped[[104, 124]] = False
    cached[80:144] = True
    found = diagram.PagePath(np.array([100, 103, 120]), mapped, cached)
    text = diagram.explain(found, 0, 2, None, 128)
    assert "2 fewer than those windows" in text and "PG_readahead" in text
    assert "not cached at the fault" not in text
    assert "= 2 x read_ahead_kb" in text and "a typical laptop" not in text
    assert "unreadable here; the default 64 KiB fits the 30 PTEs" in text
