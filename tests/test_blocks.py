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


def test_describe_gives_rss_after_each_free():
    text = blocks.run(2**20, 3).describe()  # round 1 mapped (given back), round 2 heap (kept)
    kept = text.split("kept ")[1]
    assert "after free 1" in kept and "after free 2" in kept and "after malloc_trim(0)" in kept
    after_1, after_2 = (int(part.split("%")[0]) for part in kept.split(", ")[:2])
    assert after_1 < 50 < after_2


def test_usable_memory_is_the_lowest_headroom(monkeypatch):
    from mmlab.instruments.facts import Fact, Unknown

    class Report:
        memory_available = Fact(8 * 2**30, "meminfo")

    room = [(300 * 2**20, "300 MiB left under the cgroup limit (/x)")]
    monkeypatch.setattr(blocks, "_cgroup_headroom", lambda: room)
    assert blocks.usable_memory(Report()) == room[0]  # the container's headroom, not the host's
    monkeypatch.setattr(blocks, "_cgroup_headroom", lambda: [])
    assert blocks.usable_memory(Report())[0] == 8 * 2**30
    Report.memory_available = Unknown("no /proc/meminfo")
    size, why = blocks.usable_memory(Report())
    assert size == 256 * 2**20 and "cautious" in why


def test_the_claim_follows_the_runs():
    small, large = blocks.run(64 * 2**10, 64), blocks.run(40 * 2**20, 2)
    shown = blocks.claim_mmap_vs_malloc(small, large)
    assert shown["verdict"].startswith("misleading") and "2 blocks of 40 MiB" in shown["measured"]
    swapped = blocks.claim_mmap_vs_malloc(large, small)  # the halves the wrong way round
    assert swapped["verdict"].startswith("not shown here")


def test_identical_lines_keep_their_own_markers():
    import matplotlib.pyplot as plt

    runs = [blocks.run(2**20, 3), blocks.run(40 * 2**20, 2)]  # both mapped in round 1
    axes = blocks.plot(runs)
    first, second = axes[0].lines[:2]
    assert first.get_marker() != second.get_marker()
    assert first.get_markevery() != second.get_markevery()
    plt.close("all")
