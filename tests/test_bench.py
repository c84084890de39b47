"""bench: interleaved comparisons with medians and spread, and the read() vs mmap race.

No speed targets: the statistics are checked on a fake clock, the race on what it measured
(same bytes, every counter present) and on the order in which the calls ran.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
import pytest

from mmlab import bench
from mmlab.instruments.measure import Measurement

SMALL_COPY = 2**20  # the memory-copy reference, kept small in tests


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(3 * 2**20 + 12345))
    return path


@pytest.fixture
def agg():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


class FakeClock:
    """A clock that only moves when a callable says how long it took."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def takes(self, *durations: float):
        """A callable that takes durations[0] on its first call, durations[1] next, ..."""
        remaining = list(durations)

        def run() -> None:
            self.now += remaining.pop(0)

        return run


def assert_interleaved(order, names, rounds):
    """Every round runs each name once, rounds in sequence, each rotated by one."""
    assert len(order) == len(names) * rounds
    for r in range(rounds):
        block = order[r * len(names) : (r + 1) * len(names)]
        assert [round_ for round_, _ in block] == [r] * len(names)
        ran = [name for _, name in block]
        assert sorted(ran) == sorted(names)
        k = r % len(names)
        assert ran == names[k:] + names[:k]


def bar_container(ax):
    from matplotlib.container import BarContainer

    return next(c for c in ax.containers if isinstance(c, BarContainer))


# compare(): the order of the calls


def test_compare_interleaves_and_sets_up_every_call():
    log = []
    funcs = {name: (lambda name=name: log.append(("run", name))) for name in "abc"}
    result = bench.compare(
        funcs, repeats=4, warmup=1, setup=lambda name: log.append(("setup", name))
    )
    assert_interleaved(result.order, ["a", "b", "c"], 4)
    # warm-up round first (untimed, not in order), then each timed call right after its setup
    assert log[:6] == [(step, name) for name in "abc" for step in ("setup", "run")]
    timed = log[6:]
    assert timed[0::2] == [("setup", name) for _, name in result.order]
    assert timed[1::2] == [("run", name) for _, name in result.order]


def test_setup_may_take_no_argument():
    calls = []
    result = bench.compare(
        {"a": lambda: None, "b": lambda: None},
        repeats=3,
        warmup=0,
        setup=lambda: calls.append(1),
    )
    assert len(calls) == len(result.order) == 6


# compare(): the statistics, on a fake clock


def test_medians_and_spread_on_a_fake_clock():
    clock = FakeClock()
    funcs = {
        "a": clock.takes(1, 5, 3, 2, 4),  # sorted 1 2 3 4 5: median 3, IQR 2-4
        "b": clock.takes(2, 2, 2, 2, 2),
    }
    result = bench.compare(funcs, repeats=5, warmup=0, timer=clock, nbytes=1000, reference="b")
    a, b = result["a"], result.reference
    assert b.name == "b" and b.is_reference and list(result) == [a]
    assert a.seconds.samples == (1, 5, 3, 2, 4)  # round order kept
    assert (a.seconds.median, a.seconds.q1, a.seconds.q3) == (3, 2, 4)
    assert (a.seconds.min, a.seconds.max) == (1, 5)
    assert a.rate.median == pytest.approx(1000 / 3)
    assert a.gb_s == pytest.approx(1000 / 3 / 1e9)
    # a's speed as a multiple of b's, round by round: 2/1, 2/5, 2/3, 2/2, 2/4
    assert a.of_reference.samples == pytest.approx((2, 0.4, 2 / 3, 1, 0.5))
    assert a.of_reference.median == pytest.approx(2 / 3)
    assert result.relative("a", "b").samples == a.of_reference.samples
    assert result.relative("b", "a").samples == pytest.approx((0.5, 2.5, 1.5, 1, 2))
    assert a.of_reference.verdict(above="faster", below="slower").startswith("no clear")
    assert result.notes == []  # five rounds: enough


def test_ratios_use_the_sizes_when_they_differ():
    clock = FakeClock()
    funcs = {"small": clock.takes(1, 1, 1), "big": clock.takes(2, 2, 2)}
    result = bench.compare(
        funcs, repeats=3, warmup=0, timer=clock, nbytes={"small": 100, "big": 400}
    )
    # 100 B/s against 200 B/s: half the speed, although it takes half the time
    assert result.relative("small", "big").median == pytest.approx(0.5)
    assert result.fastest().name == "big"


def test_spread_statistics_and_verdicts():
    spread = bench.Spread.of([4, 1, 3, 2])
    assert (spread.median, spread.q1, spread.q3) == (2.5, 1.75, 3.25)
    assert spread.samples == (4, 1, 3, 2)
    assert f"{spread:.1f}" == "2.5 [1.8–3.2]"
    assert spread.text(".2f", "x") == "2.50x [1.75–3.25]"
    assert spread.scaled(2).median == 5
    assert bench.Spread.of([1.2, 1.3, 1.1]).verdict() == "higher in 3 of 3 rounds"
    assert bench.Spread.of([0.8, 0.9, 0.7]).verdict() == "lower in 3 of 3 rounds"
    assert bench.Spread.of([0.8, 1.2, 1.3, 0.9]).verdict() == (
        "no clear difference (higher in 2 of 4 rounds)"
    )
    with pytest.raises(ValueError):
        bench.Spread.of([])


def test_default_rounds_and_quick_mode(monkeypatch):
    funcs = {"a": lambda: None}
    monkeypatch.delenv("MMLAB_QUICK", raising=False)
    full = bench.compare(funcs)
    assert full.rounds == bench.DEFAULT_REPEATS >= 5 and not full.quick and full.notes == []
    monkeypatch.setenv("MMLAB_QUICK", "1")
    quick = bench.compare(funcs)
    assert quick.rounds == 3 and quick.quick
    assert "quick mode" in quick.notes[0] and "rough" in quick.notes[0]
    assert "rough" in repr(quick)
    monkeypatch.delenv("MMLAB_QUICK")
    assert "rough" in bench.compare(funcs, repeats=2).notes[0]


def test_missing_counters_are_none_with_a_reason(monkeypatch):
    from contextlib import contextmanager

    @contextmanager
    def no_counters(label="", file=None):
        yield Measurement(label=label, wall_s=0.001)  # no faults, no I/O counters

    monkeypatch.setattr("mmlab.instruments.compare.measure", no_counters)
    row = bench.compare({"a": lambda: None}, repeats=1).rows[0]
    for key in ("minor_faults", "major_faults", "storage_bytes", "cached_pages_delta"):
        assert getattr(row, key) is None and row.unavailable[key]
    assert "n/a" in bench.compare({"a": lambda: None}, repeats=1).table()


# the result is a table


def test_the_result_is_a_table(monkeypatch, agg):
    clock = FakeClock()
    funcs = {"x": clock.takes(1, 1, 1), "y": clock.takes(2, 3, 4), "ref": clock.takes(1, 1, 1)}
    result = bench.compare(funcs, repeats=3, warmup=0, timer=clock, nbytes=10, reference="ref")
    rows = list(result)
    assert all(isinstance(row, bench.Row) for row in rows) and len(result) == 2
    assert [row.name for row in rows] == result.names == ["x", "y"]
    records = result.to_records()
    assert [r["name"] for r in records] == ["x", "y", "ref"]
    assert [r["reference"] for r in records] == [False, False, True]
    assert records[1]["seconds"] == 3 and records[1]["seconds_q1"] == 2.5
    assert records[1]["of_reference"] == pytest.approx(1 / 3)
    assert [r["name"] for r in result.to_records(reference=False)] == ["x", "y"]
    with pytest.raises(KeyError):
        result["z"]

    pd = pytest.importorskip("pandas")
    frame = result.to_pandas()
    assert isinstance(frame, pd.DataFrame) and list(frame.index) == ["x", "y", "ref"]
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if it were not installed
    with pytest.raises(ImportError, match="needs pandas"):
        result.to_pandas()


def test_plot_draws_medians_spread_and_the_reference_band(agg):
    clock = FakeClock()
    funcs = {"x": clock.takes(1, 2, 3), "y": clock.takes(2, 3, 4), "ref": clock.takes(1, 1, 2)}
    result = bench.compare(funcs, repeats=3, warmup=0, timer=clock, nbytes=10, reference="ref")
    ax = result.plot()
    bars = bar_container(ax)
    assert [bar.get_width() for bar in bars] == pytest.approx([5 / 1e9, 10 / 3 / 1e9])
    assert bars.errorbar is not None  # the IQR
    labels = ax.get_legend_handles_labels()[1]
    assert "ref, IQR" in labels and "ref, median" in labels
    # without sizes it plots times
    plain = bench.compare({"a": lambda: None}, repeats=1).plot()
    assert plain.get_xlabel() in ("s", "ms", "µs")


# read_vs_mmap


@pytest.mark.parametrize(
    ("pattern", "cache", "madvise"),
    [
        ("sequential", "warm", None),
        ("random", "cold", "random"),
        ("sequential", "cold", "populate"),
    ],
)
def test_every_method_sees_the_same_bytes(data_file, pattern, cache, madvise):
    methods = bench.METHODS + bench.EXTRA_METHODS
    result = bench.read_vs_mmap(
        data_file,
        pattern=pattern,
        cache=cache,
        repeats=2,
        block_size=65536,
        madvise=madvise,
        methods=methods,
        copy_bytes=SMALL_COPY,
    )
    assert result.names == list(methods) and result.reference.name == "memory copy"
    assert len({row.checksum for row in result}) == 1
    assert all(row.rate.median > 0 and row.of_reference.median > 0 for row in result)
    assert_interleaved(result.order, [*methods, "memory copy"], 2)
    assert "same bytes" in result.summary()
    if cache == "cold":
        # every call started from an evicted file, so each brought the file in from storage
        for row in result:
            assert row.cached_pages_delta > 0, row.name
            assert row.storage_bytes > 0, row.name
    text = result.table()
    assert "memory copy" in text and "2 rounds, interleaved" in repr(result)
    assert "<table>" in result._repr_html_()


def test_every_method_reports_bytes_and_faults(data_file):
    result = bench.read_vs_mmap(data_file, repeats=1, cache="cold", copy_bytes=SMALL_COPY)
    for row in [*result, result.reference]:
        for key in ("minor_faults", "major_faults", "storage_bytes", "cached_pages_delta"):
            value = getattr(row, key)
            assert (value is not None) != (key in row.unavailable), (row.name, key)
            if sys.platform.startswith("linux"):
                assert isinstance(value, int), (row.name, key)
        assert len(row.measurements) == 1
    # a mapping takes page faults to read the file; read() takes none
    assert result["mmap slice"].minor_faults + result["mmap slice"].major_faults > 0
    assert result["numpy.memmap sum"].minor_faults + result["numpy.memmap sum"].major_faults > 0


def test_the_memmap_method_is_a_real_numpy_memmap(data_file, monkeypatch):
    opened = []

    class Spy(np.memmap):
        def __new__(cls, filename, *args, **kwargs):
            opened.append((filename, kwargs.get("mode")))
            return super().__new__(cls, filename, *args, **kwargs)

    monkeypatch.setattr(np, "memmap", Spy)
    result = bench.read_vs_mmap(
        data_file, methods=("read", "numpy.memmap sum"), repeats=1, copy_bytes=SMALL_COPY
    )
    # warm-up, one timed round and the checksum pass: each opens the file as a numpy.memmap
    assert opened == [(data_file, "r")] * 3
    assert result["numpy.memmap sum"].checksum == result["read"].checksum


def test_plot_and_sweep(data_file, agg):
    sweep = {
        block: bench.read_vs_mmap(
            data_file,
            block_size=block,
            repeats=1,
            methods=("read", "mmap slice"),
            copy_bytes=SMALL_COPY,
        )
        for block in (4096, 65536)
    }
    ax = sweep[4096].plot()
    assert len(bar_container(ax)) == 2
    ax = bench.plot_sweep(sweep, title="warm")
    labels = ax.get_legend_handles_labels()[1]
    band = "memory copy: median (line), IQR of the race's rounds"
    assert sorted(labels) == [band, "mmap slice", "read"]
    assert ax.get_title() == "warm"
    bench.plot_sweep({4096: sweep[4096]})  # one block size still draws a band
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, layout="constrained")
    cases = {("sequential", "warm", b): r for b, r in sweep.items()}
    for _ in range(2):  # redrawn as LiveFigure does: still one legend
        bench.plot_sweeps(cases, [("sequential", "warm"), ("random", "warm")], axes)
    assert axes[0].get_ylim() == axes[1].get_ylim() and len(figure.legends) == 1
    assert not axes[1].lines  # a case not run yet stays empty
    plt.close(figure)
    text = bench.sweep_summary({("sequential", "warm", b): r for b, r in sweep.items()})
    assert text.count("fastest") == 2 and "mmap slice / read" in text
    assert "major faults/MiB from storage" in text and "4 KiB blocks against 64 KiB" in text


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pattern": "zigzag"},
        {"cache": "hot"},
        {"madvise": "dontneed"},
        {"methods": ("mmap2",)},
        {"methods": ()},
        {"repeats": 0},
    ],
)
def test_bad_arguments(data_file, kwargs):
    with pytest.raises(ValueError):
        bench.read_vs_mmap(data_file, **kwargs)


def test_compare_bad_arguments():
    with pytest.raises(ValueError):
        bench.compare({})
    with pytest.raises(ValueError):
        bench.compare({"a": lambda: None}, reference="b")
    with pytest.raises(ValueError):
        bench.compare({"a": lambda: None}, repeats=0)


def test_memory_bandwidth_is_plausible():
    assert 1e8 < bench.memory_bandwidth(16 * 2**20) < 1e12


def test_access_orders():
    assert bench.access_order(10, "sequential").tolist() == list(range(10))
    assert sorted(bench.access_order(10, "random").tolist()) == list(range(10))
    assert bench.access_order(10, "strided", stride=4).tolist() == [0, 4, 8]
    assert len(bench.access_order(100, "random", count=5)) == 5
    with pytest.raises(ValueError):
        bench.access_order(10, "diagonal")


def test_sample_file_and_touch_pages(tmp_path):
    import mmap

    path = bench.sample_file(tmp_path / "s.bin", 10 * mmap.PAGESIZE)
    data = path.read_bytes()
    assert len(data) == 10 * mmap.PAGESIZE and len(set(data)) > 200  # real, varied bytes
    stamp = path.stat().st_mtime_ns
    assert bench.sample_file(path, 10 * mmap.PAGESIZE).stat().st_mtime_ns == stamp  # reused
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        total = bench.touch_pages(mm, [0, 3, 9])
    assert total == data[0] + data[3 * mmap.PAGESIZE] + data[9 * mmap.PAGESIZE]


def test_the_fastest_is_never_called_ahead_when_the_rounds_put_it_behind():
    clock = FakeClock()
    # a's median time is the lower (2.0 against 2.5), yet a is slower in 4 of the 5 rounds
    funcs = {"a": clock.takes(1, 1, 2, 5, 5), "b": clock.takes(0.9, 0.9, 2.5, 4.9, 4.9)}
    result = bench.compare(funcs, repeats=5, warmup=0, timer=clock, nbytes=100)
    assert [row.name for row in result.ranked()] == ["a", "b"]
    text = result.lead("a", "b")
    assert text.startswith("behind b in 4 of 5 rounds") and "neither is clearly faster" in text
    assert "ahead" not in text
    podium = result.podium()
    assert podium.startswith("fastest here (highest median): a") and "slowest here" in podium
    sweep = bench.sweep_summary({})
    assert sweep == ""


def test_ratios_never_round_onto_the_other_side_of_one():
    spread = bench.Spread.of([0.998, 0.965, 0.999, 0.97, 0.9999])
    assert spread.text(".2f", "x") == "1.00x [0.97–1.00]"  # as plain rounding shows it
    shown = spread.text(".2f", "x", than=1.0)
    assert shown == "0.998x [0.970–0.999]"
    assert spread.verdict() == "lower in 5 of 5 rounds"
    assert bench.Spread.of([1.0004, 1.2, 1.3]).text(".2f", than=1.0).startswith("1.20 [1.1")
    from mmlab.instruments.stats import _num

    assert _num(0.9996) == "1.000" and _num(0.9996, than=1.0) == "0.9996"


def test_sweep_explained_computes_its_reasons(data_file):
    table = {
        (pattern, cache, block): bench.read_vs_mmap(
            data_file,
            pattern=pattern,
            cache=cache,
            block_size=block,
            repeats=1,
            copy_bytes=SMALL_COPY,
        )
        for pattern, cache in (("sequential", "warm"), ("random", "cold"))
        for block in (4096, 65536)
    }
    assert "772 blocks of 4 KiB" in table["sequential", "warm", 4096].title
    text = bench.sweep_explained(table, read_ahead_kb=128)
    assert "mmap slice against read, round by round" in text
    assert "What one block costs beyond its bytes" in text and "µs" in text
    assert "Pages mapped per minor fault" in text and "pages per fault here" in text
    assert "read_ahead_kb of this file's disk: 128 KiB" in text
    assert "holds 32 blocks of 4 KiB" in text
    assert "unknown" in bench.sweep_explained(table)


def test_few_rounds_need_every_round_to_agree():
    # three rounds, IQR above 1 but one round below: not clear with fewer than 5 rounds
    assert bench.Spread.of([1.22, 1.27, 0.98]).verdict().startswith("no clear difference")
    assert bench.Spread.of([1.22, 1.27, 1.04]).verdict() == "higher in 3 of 3 rounds"
    five = bench.Spread.of([1.2, 1.3, 1.25, 1.22, 0.9])  # IQR above 1: enough rounds
    assert five.verdict() == "higher in 4 of 5 rounds"


def _fake(pattern, cache, block, seconds, size=2**25, quick=True, major=0, storage=0):
    """A sweep entry: per method its per-round times; the reference takes 0.01 s a round."""
    from mmlab.instruments.stats import BenchResult, Row, Spread

    rows = [
        Row(
            name,
            Spread.of(times),
            rate=Spread.of(size / t for t in times),
            of_reference=Spread.of(size / t / (size / 0.01) for t in times),
            major_faults=major if name == "mmap slice" else 0,
            minor_faults=16,
            storage_bytes=storage,
            nbytes=size,
        )
        for name, times in seconds.items()
    ]
    n = len(next(iter(seconds.values())))
    ref = Row(
        "memory copy",
        Spread.of([0.01] * n),
        rate=Spread.of([size / 0.01] * n),
        nbytes=size,
        is_reference=True,
    )
    return BenchResult(rows, ref, n, [], params={"size": size, "block_size": block}, quick=quick)


def test_sweep_texts_quick_warm_cold_sequential_and_read_around():
    slow, fast = {"read": [0.02] * 3, "mmap slice": [0.015] * 3}, {"read": [0.01] * 3}
    fast["mmap slice"] = [0.008] * 3
    cold = {"read": [0.14] * 3, "mmap slice": [0.12] * 3}
    table = {
        ("sequential", "warm", 4096): _fake("sequential", "warm", 4096, slow),
        ("sequential", "warm", 2**20): _fake("sequential", "warm", 2**20, fast),
        ("sequential", "cold", 4096): _fake("sequential", "cold", 4096, cold),
        ("random", "cold", 4096): _fake("random", "cold", 4096, cold, major=5, storage=2**25),
    }
    summary = bench.sweep_summary(table)
    assert "quick mode, warm races" in summary and "warm sequential 1,024 KiB 1.25x" in summary
    explained = bench.sweep_explained(table, read_ahead_kb=8192)
    assert "quick mode: the warm verdicts are provisional" in explained
    assert "two system calls (lseek, then read)" in explained
    assert "leftover tail bytes" not in explained  # the memmap sum did not run here
    # read's per-block cost: (0.02 - 0.01) / (8192 - 32) blocks, times 8,192 blocks
    assert "read's 1.23 µs x 8,192 blocks = 10 ms of a 140 ms call (7%)" in explained
    # mmap ahead by 17% in every round, with read's per-block cost under 10% of its call
    assert "under 10% of its call, so it does not explain this" in explained
    assert "less than one 8,192 KiB window per major fault here" in explained
    assert "full-size run can map more pages" not in explained  # 512 pages: the most
    assert "less than one" not in bench.sweep_explained(table, read_ahead_kb=4096)


def test_the_strict_rule_asks_every_round_and_a_margin():
    from mmlab.instruments.stats import MARGIN, Spread

    rule = {"margin": MARGIN, "every": True}
    small = Spread.of([1.02, 1.03, 1.01, 1.04, 1.02])  # every round above 1, by 1-4%
    assert small.side() == 1 and small.side(**rule) == 0
    assert small.verdict(**rule) == "no clear difference (within 5%, higher in 5 of 5 rounds)"
    one_off = Spread.of([1.2, 1.3, 0.9, 1.2, 1.3])  # IQR above 1, one round below
    assert one_off.side() == 1 and one_off.side(**rule) == 0
    assert Spread.of([1.2] * 5).side(**rule) == 1 and Spread.of([0.8] * 5).side(**rule) == -1
    assert Spread.of([0.9998]).verdict(**rule) == "one round cannot tell"


def test_one_round_of_a_race_cannot_tell(data_file):
    methods = ("read", "mmap slice")
    r = bench.read_vs_mmap(data_file, repeats=1, methods=methods, copy_bytes=SMALL_COPY)
    assert r.margin == bench.MARGIN and r.rule == {"margin": bench.MARGIN, "every": True}
    assert "cannot tell" in r.podium()
    assert "one round cannot tell" in r.summary()
    assert 0 <= r.params["copy_huge"] <= 1  # smaps is readable on Linux


def test_a_case_raced_twice_is_judged_on_both_races():
    from mmlab.instruments.sweep import ratio_of

    key = ("sequential", "warm", 2**20)
    faster = _fake(*key, {"read": [0.02] * 5, "mmap slice": [0.017] * 5}, quick=False)
    slower = _fake(*key, {"read": [0.02] * 5, "mmap slice": [0.021] * 5}, quick=False)
    for r in (faster, slower):
        r.params |= {"pattern": "sequential", "cache": "warm"}
        r.margin = bench.MARGIN
    table = {key: faster}
    alone = ratio_of(table, key, "mmap slice", "read")
    assert alone.side() == 1 and alone.before is None
    both = ratio_of(table, key, "mmap slice", "read", first=slower)
    assert both.disagree and both.side() == 0
    assert "this run cannot tell" in both.text("mmap faster", "read")
    assert "one race alone gives a verdict and the other does not" in both.text(
        "mmap faster", "read"
    )
    assert "section 2's race" in bench.sweep_summary(table, first=slower)
    explained = bench.sweep_explained(table, first=slower)
    assert "no clear difference, or this run cannot tell: warm sequential 1,024 KiB" in explained
    again = ratio_of(table, key, "mmap slice", "read", first=faster)
    assert not again.disagree and again.side() == 1 and len(again.pooled.samples) == 10


def test_reasons_cpu_split_caches_and_noisy_block_costs():
    from mmlab.instruments.reasons import cache_fit
    from mmlab.instruments.stats import Spread

    warm = {"read": [0.02] * 5, "mmap slice": [0.0195] * 5}
    table = {
        ("sequential", "warm", 4096): _fake("sequential", "warm", 4096, warm, quick=False),
        ("sequential", "warm", 2**20): _fake("sequential", "warm", 2**20, warm, quick=False),
    }
    for r in table.values():
        r.margin = bench.MARGIN  # as read_vs_mmap sets it: 3% is within noise
    big = table["sequential", "warm", 2**20]
    big.rows = [
        dataclasses.replace(row, user_s=Spread.of([0.001] * 5), system_s=Spread.of([0.03] * 5))
        for row in big.rows
    ]
    explained = bench.sweep_explained(table)
    assert "read: 20 ms a call; CPU time 3% user, 97% kernel" in explained
    assert "copy_to_user" in explained and "cannot tell which copy is faster" in explained
    # equal times at both block sizes: a per-block cost of 0, below the noise
    assert "no method's cost per block rose above this run's noise" in explained
    assert "fits in" in cache_fit(2**20) or "unknown" in cache_fit(2**20)
    assert "huge pages back 50%" in cache_fit(2**20, 0.5)
