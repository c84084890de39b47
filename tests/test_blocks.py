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
    assert small["maps_added_round_1"] == 0 and small["anon_added_round_1"] == 0
    assert large["anon_added_round_1"] >= 2 * 40 * 2**20 and large["anon_after_free_1"] <= 0
    if large["mmapped_blocks_round_1"] is not None:
        assert large["mmapped_blocks_round_1"] == large["mmapped_blocks_round_2"] == 2
        assert small["mmapped_blocks_round_1"] == 0
        assert medium["mmapped_blocks_round_1"] == 4 and medium["mmapped_blocks_round_2"] == 0


def test_describe_says_which_case_happened():
    run = blocks.run(blocks.THRESHOLD_CAP, 2)
    text = run.describe()
    assert "2 blocks mapped" in text and "over the threshold's cap" in text
    assert ("merged" in run.merging()) or ("not merged" in run.merging())
    assert "{" not in text  # words, not a dict


def test_fit_caps_the_count_to_half_the_usable_memory():
    assert blocks.fit(64 * 2**20, 16, 512 * 2**20) == 4
    assert blocks.fit(64 * 2**20, 16, None) == 16 and blocks.fit(2**30, 8, 2**20) == 1


def test_plot_lines_up_the_phases():
    import matplotlib.pyplot as plt

    runs = [blocks.run(2**20, 3), blocks.run(64 * 2**10, 10)]
    axes = blocks.plot(runs)
    drawn = [x for x in axes[1].lines if x.get_drawstyle() == "steps-post"]
    assert len(axes) == 4 and len(drawn) == 2
    labels = [t.get_text() for t in axes[0].get_xticklabels()]
    assert labels == ["start", "malloc 1", "free 1", "malloc 2", "free 2", "malloc_trim"]
    plt.close("all")


def test_try_size_caps_runs_and_describes(capsys):
    import matplotlib.pyplot as plt

    r = blocks.try_size(64 * 2**20, 16, 256 * 2**20)
    out = capsys.readouterr().out
    assert r.count == 2 and "16 blocks would not fit in half of 256 MiB" in out
    assert "2 x 64 MiB" in out and "{" not in out
    plt.close("all")
