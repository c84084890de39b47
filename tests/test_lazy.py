"""mmlab.course.lazy and lazyview: sizes, one touch, the stride sweep, the honest live view."""

from __future__ import annotations

import mmap
from collections import Counter
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest

from mmlab.course import lazy, lazyexplain, lazyview
from mmlab.instruments import pagecache
from mmlab.instruments.access import mapped, sample_file, touch_pages
from mmlab.instruments.facts import Fact, Unknown

matplotlib.use("Agg")
PAGE = mmap.PAGESIZE


def _report(ra_kb=128, warm=16, folios=False, around=None, cold_cached=None):
    return SimpleNamespace(
        read_ahead_kb=Fact(ra_kb, "test") if ra_kb else Unknown("test"),
        fault_around_bytes=Fact(around, "test") if around else Unknown("test"),
        warm_touch=Fact({"pages_mapped": warm, "minor_faults": 1, "folio_pages": None}, "t"),
        large_folios=Fact(folios, "test"),
        cold_touch=Fact({"pages_cached": cold_cached}, "t") if cold_cached else Unknown("t"),
    )


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("lazy") / "sample.bin"
    return sample_file(path, 16 * 2**20)


def test_sizes_from_a_laptop_report():
    sizes = lazy.Sizes.of(_report())
    assert (sizes.readahead, sizes.fault_around, sizes.folio) == (128 * 1024 // PAGE, 16, 16)
    assert not sizes.fault_around_known
    assert "the kernel's default" in " ".join(sizes.lines())
    assert lazy.Sizes.of(_report(around=2 * PAGE)).fault_around == 2


def test_file_bytes_grows_to_forty_readahead_windows():
    laptop = lazy.Sizes.of(_report(ra_kb=128))
    assert lazy.file_bytes(64, laptop)[0] == 64 * 2**20  # 40 x 128 KiB is less
    server = lazy.Sizes.of(_report(ra_kb=8192))
    size, why = lazy.file_bytes(64, server)
    assert size == 40 * 8 * 2**20 and "instead of" in why
    assert lazy.file_bytes(64, lazy.Sizes.of(_report(ra_kb=None)))[0] == 64 * 2**20
    # btrfs: read_ahead_kb unknown, but the doctor's cold touch cached 1,024 pages (4 MiB)
    btrfs = lazy.Sizes.of(_report(ra_kb=None, cold_cached=1024))
    size, why = lazy.file_bytes(64, btrfs)
    assert size == 40 * 1024 * PAGE and "cold touch cached" in why


def test_touch_window_finds_the_run_of_cached_pages():
    resident = np.zeros(100, bool)
    resident[40:60] = True
    touch = lazy.Touch(50, True, 0, 1, PAGE, 1, 10, resident)
    assert touch.window() == (40, 60) and touch.cached == 20
    assert lazy.Touch(5, True, 0, 1, PAGE, 1, 0, resident).window() == (5, 5)


def test_touch_once_cold_then_warm(sample):
    if pagecache.evict(sample).resident_after != 0:
        pytest.skip("eviction does not work here")
    cold = lazy.touch_once(sample, 100)
    warm = lazy.touch_once(sample, 100, cold=False)
    assert cold.major_faults == 1 and warm.major_faults == 0
    assert cold.cached >= 1 and cold.mapped_pages >= 1 and warm.mapped_pages >= 1
    assert cold.cached_at_once <= cold.cached
    sizes = lazy.Sizes.of(_report())
    text = " ".join(lazyexplain.explain_touches(cold, warm, sizes))
    assert "readahead window" in text and "mapped" in text
    lazyview.plot_touch(cold, sizes)


def test_stride_sweep_counts_what_each_stride_did(sample):
    rows = lazy.stride_sweep(sample, [16, 1024])
    pages = 16 * 2**20 // PAGE
    assert [r.touched for r in rows] == [pages // 16, pages // 1024]
    for r in rows:
        for what in ("read", "mapped", "cached", "touched"):
            assert 0 <= r.fraction(what) <= 1.01
        assert r.mapped_pages >= r.touched  # every touched page is mapped
    sizes = lazy.Sizes.of(_report())
    assert len(lazyexplain.explain_strides(rows, sizes)) == 2
    lazyview.plot_strides(rows, sizes)
    measured, verdict = lazyexplain.claim_faults(lazy.touch_once(sample, 0), rows, sizes)
    assert "every 16th page" in measured and verdict.startswith("true")
    for r in rows:  # folio sizes met, or why they are unknown (not root)
        assert isinstance(r.folios, str) or sum(r.folios.values()) == min(r.touched, 256)


def test_folio_sizes_of_touched_pages(sample):
    with mapped(sample) as mm:
        touch_pages(mm, [0, 64])
        sizes = lazy.folio_sizes(mm, [0, 64])
    if isinstance(sizes, str):
        assert "root" in sizes or "unreadable" in sizes
    else:
        assert sum(sizes.values()) == 2 and min(sizes) >= 1
        assert "of 2" in lazy.folio_text(sizes)
    assert lazy.folio_text("unknown here") == "unknown here"


def test_explain_touches_names_read_around_folios():
    resident = np.zeros(4096, bool)
    resident[0:32] = True
    cold = lazy.Touch(16, True, 0, 1, 32 * PAGE, 16, 8, resident)
    warm = lazy.Touch(16, False, 1, 0, 0, 16, 32, resident, folio=Counter({1: 1}))
    text = " ".join(lazyexplain.explain_touches(cold, warm, lazy.Sizes.of(_report(folios=True))))
    assert "retried" in text and "1-page folios" in text


def test_hint_reach_counts_before_any_touch(sample):
    if pagecache.evict(sample).resident_after != 0:
        pytest.skip("eviction does not work here")
    pages = 16 * 2**20 // PAGE
    assert lazy.hint_reach(sample, None) == (0, 0)
    assert lazy.hint_reach(sample, "populate")[1] == pages
    reach = {"willneed": (0, 32), "populate": (pages, pages)}
    lines = lazyexplain.explain_reach(reach, pages, lazy.Sizes.of(_report()), 64)
    assert (
        "did not read the range" in lines[0]
        and "max(128 KiB, 256 KiB) = 256.0 KiB = 64 pages" in lines[0]
    )
    assert "did not read" not in lines[1]


def test_watch_leaves_the_drawing_out_of_the_counts(sample):
    pages = np.arange(0, 16 * 2**20 // PAGE, 64)
    with lazyview.Watch(sample, "test", every=0) as w, mapped(sample) as mm:
        for chunk in np.array_split(pages, 4):
            with w.step(len(chunk)):
                touch_pages(mm, chunk)
            junk = np.ones(8 * 2**20, np.uint8)  # 2,048 fresh pages faulted between steps
            del junk
            w.update()
    assert w.touched[-1] == len(pages) and len(w.steps) == 4
    # the touches fault at most once per page (plus a few for the index arrays); the junk
    # and the drawing between steps would add thousands
    assert w.totals.minor_faults + w.totals.major_faults <= len(pages) + 16
    assert w.figure.frames == 5 and "uncounted" in w.summary() and w.replayed == 0
    assert len(w.caches) == 4


def test_watch_replays_a_run_too_short_to_animate(sample):
    with lazyview.Watch(sample, "test", every=60) as w, mapped(sample) as mm:
        for chunk in np.array_split(np.arange(0, 4096, 64), 4):
            with w.step(len(chunk)):
                touch_pages(mm, chunk)
            w.update()  # draws the first time only: every=60
        counted = w.totals
    assert w.replayed == 4 and w.figure.frames == 1 + 4 + 1  # live, replay, final
    assert w.totals == counted and "replayed" in w.summary()


def test_explain_random_reports_pages_mapped_per_fault():
    def watch(minor, major, rss):
        return SimpleNamespace(
            totals=SimpleNamespace(minor_faults=minor, major_faults=major, rss=rss)
        )

    sizes = lazy.Sizes.of(_report())
    lines = lazyexplain.explain_random(
        watch(99, 1, 1600 * PAGE), watch(99, 1, 1600 * PAGE), 100, sizes
    )
    assert lines[0].endswith("1.00") and "16.0 pages mapped per fault" in lines[1]
    assert "fault-around, not large folios" in lines[1] and "most touches" in lines[2]
    lines = lazyexplain.explain_random(
        watch(9, 1, 5120 * PAGE), watch(9, 1, 5120 * PAGE), 10, sizes
    )
    assert "large folios" in lines[1]


def test_explain_cold_warm_names_the_hidden_wait():
    cold = SimpleNamespace(wall_s=0.5, cpu_s=0.01, major_faults=1, minor_faults=900)
    warm = SimpleNamespace(wall_s=0.004, cpu_s=0.004, major_faults=0, minor_faults=900)
    text = lazyexplain.explain_cold_warm(cold, warm, 0.005, kernel="6.18.0-1-amd64")
    assert "waited 490 ms" in text and "This kernel (6.18.0-1-amd64)" in text
    assert "counts it minor" in text
    old = lazyexplain.explain_cold_warm(cold, warm, 0.005, kernel="6.1.0-28-amd64")
    assert "counted as minor" in old and "This kernel" not in old  # no rule named for 6.1
    assert "account for the wait" in lazyexplain.explain_cold_warm(cold, warm, 0.4)


def test_explain_hints_reads_a_comparison(sample):
    from mmlab import bench

    def run(hint):
        def touch():
            with mapped(sample, hint) as mm:
                touch_pages(mm, np.arange(0, 4096, 16))

        return touch

    result = bench.compare(
        {"none": run(None), "random": run("random")},
        repeats=1,
        warmup=0,
        setup=lambda: pagecache.evict(sample),
    )
    (line,) = lazyexplain.explain_hints(result)
    assert line.startswith("random:") and "no hint" in line
    if result["random"].major_faults > 4 * max(result["none"].major_faults, 1):
        assert "each waited for in its own fault" in line
    lazyview.plot_hints(result)


def test_explain_first_says_lazy_or_not_and_survives_a_missing_counter():
    mapping = SimpleNamespace(read_bytes=0, unavailable={})
    touched = SimpleNamespace(read_bytes=80 * 2**20, major_faults=10, minor_faults=1)
    touched.unavailable = {}
    lines = lazyexplain.explain_first(mapping, touched, 2**20, 2**30)
    assert lines[-1].startswith("Lazy here")
    assert lazyexplain.explain_first(mapping, touched, 2**20, 100 * 2**20)[-1].startswith("NOT")
    touched.read_bytes, touched.unavailable = None, {"read_bytes": "no /proc/self/io"}
    assert "unknown" in lazyexplain.explain_first(mapping, touched, 0, 2**30)[0]
    assert lazyexplain.claim_lazy(mapping, touched, 0, 2**30, 10)[1] == "not checked here"
    touched.read_bytes = 80 * 2**20
    mapping.wall_s = mapping.minor_faults = mapping.major_faults = 0
    assert "touching 10 pages cold" in lazyexplain.claim_lazy(mapping, touched, 0, 2**30, 10)[0]


def test_page_paths_draw_this_runs_touches(sample):
    touch = lazy.touch_once(sample, 64, cold=False)
    if touch.present is None:
        pytest.skip("/proc/self/pagemap is unreadable here")
    assert touch.present[64] and int(touch.present.sum()) == touch.mapped_pages
    assert lazyview.plot_page_paths([touch]) is not None


def test_reads_a_file_system_does_not_count_are_unknown_not_zero():
    fuse = SimpleNamespace(read_bytes=0, major_faults=3)
    assert lazy.read_counted(fuse) is None
    assert lazy.read_counted(SimpleNamespace(read_bytes=None, major_faults=0)) is None
    assert lazy.read_counted(SimpleNamespace(read_bytes=0, major_faults=0)) == 0  # warm
    assert "not counted" in lazy.read_text(None)

    def row(name, read, majors):
        return SimpleNamespace(name=name, storage_bytes=read, major_faults=majors)

    uncounted = SimpleNamespace(rows=[row("none", 0, 5), row("random", 0, 80)])
    assert lazy.fewest_bytes(uncounted) is None
    counted = SimpleNamespace(rows=[row("none", 2**20, 5), row("random", 2**16, 16)])
    assert lazy.fewest_bytes(counted) == "random"


def test_explain_strides_does_not_guess_folios_or_uncounted_reads():
    sizes = lazy.Sizes(readahead=32, fault_around=16, fault_around_known=True, folio=None,
                       large_folios=None)  # fmt: skip
    unknown = "folio sizes are unknown: page frame numbers are shown only to root"
    rows = [lazy.StrideRow(64, 4096, 4000, 96, None, 8192, 8192, 262_144, 0.1, unknown)]
    (line,) = lazyexplain.explain_strides(rows, sizes)
    assert "read ?%" in line and "not counted" in line
    assert "folio sizes unknown here" in line and "read-around leaves" not in line
