"""Notebook 08's words: the fsync/fdatasync verdict never contradicts its reason, the
journal lines follow the file system, and the dirty-page plot draws without overlaps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmlab.course import durability, durableviews
from mmlab.instruments.facts import Fact, Unknown
from mmlab.instruments.spread import Spread
from mmlab.instruments.writeback import Rules

NONE, ORDERED = Fact("none", "test"), Fact("data=ordered", "test")


@dataclass
class _Row:
    seconds: Spread


@dataclass
class _Race:
    result: dict
    nbytes: int = 2**20

    def cpu_s(self, name):
        return 0.0001


def _race(fsync, fdatasync):
    return _Race({"os.fsync": _Row(Spread.of(fsync)), "os.fdatasync": _Row(Spread.of(fdatasync))})


def test_a_small_difference_is_no_measurable_difference():
    why = durableviews.why_fsync_ratio(_race([1.0, 1.01, 1.02, 0.99, 1.0], [1.0] * 5), NONE)
    assert why.startswith("no measurable difference") and "middle half" in why
    assert "no journal" in why  # the reason names what this file system does


def test_fsync_clearly_longer_says_so_and_why():
    why = durableviews.why_fsync_ratio(_race([1.5, 1.4, 1.6, 1.5, 1.45], [1.0] * 5), ORDERED)
    assert why.startswith("fsync took longer") and "journal" in why


def test_fdatasync_clearly_longer_is_not_explained_by_the_file_system():
    why = durableviews.why_fsync_ratio(_race([0.8, 0.82, 0.78, 0.8, 0.81], [1.0] * 5), NONE)
    assert why.startswith("fdatasync took longer") and "does not explain" in why
    assert "variation" not in why


def test_journal_lines_follow_the_file_system():
    assert "fsck" in "\n".join(durableviews.journal_lines(NONE, "ext4"))
    assert "replayed" in "\n".join(durableviews.journal_lines(ORDERED, "ext4"))
    assert "lived in memory" in "\n".join(durableviews.journal_lines(NONE, "tmpfs"))
    cow = Fact("copy-on-write (log tree)", "test")
    assert "never a mix" in "\n".join(durableviews.journal_lines(cow, "btrfs"))
    assert "unknown" in durableviews.journal_lines(Unknown("no way"), "nfs")[0]


def test_this_machines_journal_is_a_fact_or_says_why(tmp_path):
    info = durableviews.read_journal(tmp_path)
    assert info.known or info.reason
    if info.known:
        assert info.value == "none" or info.value.startswith(("data=", "journal", "log", "copy"))


class _Sampler:
    times = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    cached = np.array([0, 256, 256, 256, 256])
    dirty = np.array([0, 256, 256, 0, 0, 0])  # one row more: the thread added it meanwhile
    writeback = np.array([0, 0, 0, 256, 0])
    marks = ((1.0, "written"), (3.5, "clean"))


def test_the_dirty_page_plot_has_no_overlaps():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmlab.course.figcheck import overlaps

    rules = Rules(Fact(2.0, "a"), Fact(1.0, "b"), Fact("10%", "c"), Fact("20%", "d"))
    figure, ax = plt.subplots(figsize=(9, 3.4), layout="constrained")
    durability.draw_life(_Sampler(), rules, ax)
    assert overlaps(figure) == []
    labels = ax.get_legend_handles_labels()[1]
    assert "dirty" in labels and "cached (the file)" in labels
    assert any("expiry rule" in label for label in labels)
    plt.close(figure)


def test_the_shown_ratio_is_the_median_the_why_prints():
    near = Spread.of([1.004, 1.006, 1.012, 0.999])
    assert durableviews.shown_ratio(near) == near.text(".2f", than=1).split(" [")[0]
    assert durableviews.shown_ratio(near) != "1.00"  # never rounded onto 1
    assert durableviews.shown_ratio(Spread.of([2.04, 2.05, 2.06])) == "2.05"
