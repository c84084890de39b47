"""malloc's blocks in a fresh child: large ones mapped and unmapped, small ones from the heap
and resident after free, the threshold raised by freeing a mapped block; the plot draws."""

from __future__ import annotations

import matplotlib

from mmlab.course import blocks

matplotlib.use("Agg")


def test_large_small_and_medium_blocks():
    large = blocks.run(40 * 2**20, 2).summary()
    small = blocks.run(64 * 2**10, 64).summary()
    medium = blocks.run(2**20, 4).summary()
    assert large["rss_kept_after_free_1"] < 0.05 * large["rss_grown"]
    assert small["rss_kept_after_free_1"] > 0.8 * small["rss_grown"]
    assert small["maps_added_round_1"] == 0
    if large["mmapped_blocks_round_1"] is not None:
        assert large["mmapped_blocks_round_1"] == large["mmapped_blocks_round_2"] == 2
        assert small["mmapped_blocks_round_1"] == 0
        assert medium["mmapped_blocks_round_1"] == 4 and medium["mmapped_blocks_round_2"] == 0


def test_plot_lines_up_the_phases():
    import matplotlib.pyplot as plt

    runs = [blocks.run(2**20, 3), blocks.run(64 * 2**10, 10)]
    axes = blocks.plot(runs)
    assert len(axes) == 3 and len([x for x in axes[1].lines if x.get_marker() == "."]) == 2
    labels = [t.get_text() for t in axes[0].get_xticklabels()]
    assert labels == ["start", "malloc 1", "free 1", "malloc 2", "free 2", "malloc_trim"]
    plt.close("all")
