"""Lab 09's race (mmlab.course.practice) and its views: what each step measured, on small data.

No speed is asserted: only what a run must show whatever the machine (Arrow's doubling
writes a new file, the store's dirties its column only, every format doubled exactly, the
verdicts follow the numbers they are built from).
"""

from __future__ import annotations

import numpy as np
import pytest

from mmlab.course import practice, practicejudge, practiceviews
from mmlab.data import peers
from mmlab.instruments.spread import Spread

pytest.importorskip("pyarrow")
pytest.importorskip("lmdb")

N = 3_000
U0 = peers.FIELDS.index("U0")


@pytest.fixture(scope="module")
def source():
    rng = np.random.default_rng(9)
    smiles = ["C" * int(k) + "é" for k in rng.integers(1, 30, size=N)]
    return smiles, rng.normal(size=(N, len(peers.FIELDS)))


@pytest.fixture(scope="module")
def race(tmp_path_factory, source):
    smiles, values = source
    root = tmp_path_factory.mktemp("race") / "race"
    return practice.race(root, smiles, values, reads=200, rounds=3, epoch=False)


def test_race_runs_every_format_in_order_with_the_same_reads(race):
    assert list(race.runs) == list(practice.KINDS)
    assert race.records == N and race.reads == 200 == len(race.indices)
    assert len(set(race.indices.tolist())) == race.reads  # distinct records, no free re-reads
    for run in race.runs.values():
        assert len(run.warm_get.samples) == len(run.take.samples) == 3
        assert run.disk_bytes > 0 and run.build.seconds > 0
        assert run.epoch is None and run.worker_memory("pss_file") == []


def test_close_formats_are_built_and_doubled_in_rounds_the_far_ones_once(race):
    for kind, run in race.runs.items():
        if kind in practice.REPEATED:
            assert len(run.builds.samples) == len(run.doubles.samples) >= 5, kind
            assert race.ratio(kind, "double") * race["store"].doubles.median == pytest.approx(
                run.doubles.median
            )
        else:
            assert run.builds is None and run.doubles is None, kind


def test_disk_size_is_taken_right_after_the_build(race):
    store, lmdb = race["store"], race["lmdb"]
    assert store.disk_after == store.disk_bytes  # an in-place update grows no file
    assert lmdb.disk_after >= lmdb.disk_bytes  # LMDB's copy-on-write commit keeps freed pages


def test_race_refuses_an_existing_directory(tmp_path, source):
    with pytest.raises(FileExistsError):
        practice.race(tmp_path, *source, epoch=False)


def test_every_format_holds_u0_doubled_exactly(race, source):
    smiles, values = source
    rows = [0, N // 2, N - 1]
    for kind, run in race.runs.items():
        with peers.open_peer(kind, run.path) as peer:
            got_smiles, got = peer.take(rows)
        assert got_smiles == [smiles[i] for i in rows], kind
        assert np.array_equal(got[:, U0], 2 * values[rows, U0]), kind
        others = [k for k in range(len(peers.FIELDS)) if k != U0]
        assert np.array_equal(got[:, others], values[rows][:, others]), kind


def test_only_arrow_writes_a_new_file_to_double(race):
    assert race["arrow"].rewritten
    assert not any(run.rewritten for kind, run in race.runs.items() if kind != "arrow")


def test_arrow_writes_its_whole_file_and_the_store_about_its_column(race):
    store, arrow = race["store"], race["arrow"]
    if store.double.write_bytes is None:
        pytest.skip("no /proc/self/io here")
    assert arrow.double.write_bytes >= 0.9 * arrow.disk_bytes
    column = N * 8
    assert column <= store.double.write_bytes < column + 64 * 4096  # whole pages, some folios
    assert store.double.write_bytes < arrow.double.write_bytes


def test_cold_reads_start_with_the_files_out_of_the_page_cache(race):
    for kind, run in race.runs.items():
        assert run.cold.left_pages == 0, (kind, run.cold.note)
        assert run.cold.file_bytes > 0


def test_the_table_has_a_row_per_format_and_renders(race):
    table = practiceviews.table(race)
    assert [row[0] for row in table.rows] == [run.title for run in race.runs.values()]
    assert all(len(row) == len(table.header) for row in table.rows)
    assert "<table>" in table._repr_html_() and "RecordStore" in str(table)
    chosen = practicejudge.choose(race)
    assert len(chosen.rows) == len(race.runs)


def test_fastest_is_the_lowest_median(race):
    kind = practiceviews.fastest(race, "get")
    assert race[kind].warm_get.median == min(r.warm_get.median for r in race.runs.values())
    assert race.ratio("store", "double") == 1.0


def test_claims_follow_the_numbers(race):
    rows = {row["key"]: row for row in practicejudge.claims(race)}
    assert set(rows) >= {"task_store_double", "task_arrow_rewrites", "task_take_target"}
    for row in rows.values():
        assert row["verdict"].startswith(("holds here", "does not hold here", "no clear"))
        assert row["shown_in"].startswith("09")
    pairs = [(fast, slow) for fast in ("store", "memmap") for slow in ("arrow", "sqlite", "lmdb")]
    sides = [practicejudge._pair(race, fast, slow, "double")[0] for fast, slow in pairs]
    assert "reported, not judged" in rows["task_store_double"]["measured"]
    assert rows["task_store_double"]["verdict"].startswith("holds") == all(s > 0 for s in sides)
    assert rows["task_store_double"]["verdict"].startswith("does not") == any(s < 0 for s in sides)
    built = practiceviews._rounds_ratio(race, "arrow", "build")
    assert rows["task_build_target"]["verdict"].startswith("holds") == (built.side(1.0) > 0)


def test_recorded_values_are_per_format(race):
    values = practicejudge.recorded(race)
    assert values["task_records"] == N
    assert values["task_rewritten"]["arrow"] is True
    assert set(values["task_get_rounds"]) == set(practice.KINDS)


def test_the_whys_are_built_from_the_run(race):
    assert f"{N:,}" in practiceviews.why_arrow_double(race)
    fastest = practiceviews.SHORT[practiceviews.fastest(race, "get")]
    assert fastest in practiceviews.why_fastest_get(race)
    assert "LMDB" in practiceviews.why_lmdb_double(race)
    why = practiceviews.why_cold_read(race, 8192)
    assert "8,192" in why and f"{practiceviews.page_coverage(N, race.reads)[1]:.0%}" in why
    text = "\n".join(practiceviews.lines(race))
    assert "Warm random get" in text and "Durable is not atomic" in text
    assert "DataLoader epoch: not run." in text  # epoch=False
    assert "rounded up to whole" in text and "Build: " in text
    assert "Batch of" in text and ("fastest here" in text or "too close to call" in text)
    header = practiceviews.table(race).header
    assert any("worker 1 / worker 2" in h for h in header)
    assert any("open cold" in h for h in header) and any("gets cold" in h for h in header)


def test_plot_ratios_draws_a_bar_per_format_and_step(race):
    import matplotlib

    matplotlib.use("Agg")
    figure = practiceviews.plot_ratios(race)
    (ax,) = figure.axes
    assert len(ax.patches) == (len(race.runs) - 1) * len(practiceviews.STEPS)


def test_hf_gets_reads_the_arrow_file_or_says_why(race, tmp_path):
    hf = practice.hf_gets(race["arrow"].path, tmp_path / "hf.arrow", race.indices[:20], rounds=2)
    if hf.seconds_per_get is None:
        assert hf.reason
        assert len(practiceviews.hf_lines(hf, race)) == 1
    else:
        assert len(hf.seconds_per_get.samples) == len(hf.batch_per_record.samples) == 2
        assert hf.reason == ""
        lines = practiceviews.hf_lines(hf, race)
        assert len(lines) == 3 and "with_format" in lines[2]


def test_hf_lines_say_why_when_unknown(race):
    (line,) = practiceviews.hf_lines(practice.HFGets(None, "not installed"), race)
    assert "unknown" in line and "not installed" in line


def test_winner_names_two_formats_too_close_when_the_rounds_disagree(race):
    import dataclasses

    samples = race["store"].take.samples
    tied = dataclasses.replace(race["memmap"], take=Spread.of(samples[::-1]))
    swapped = dataclasses.replace(race["memmap"], take=Spread.of([v * 0.5 for v in samples]))
    runs = dict(race.runs)
    if len(set(samples)) > 1:
        runs["memmap"] = tied
        text = practiceviews.winner(practice.Race(N, race.reads, race.rounds, runs,
                                                  race.indices), "take", "Batch")  # fmt: skip
        assert "too close to call" in text and "store" in text and "numpy.memmap" in text
    runs["memmap"] = swapped
    text = practiceviews.winner(practice.Race(N, race.reads, race.rounds, runs, race.indices),
                                "take", "Batch")  # fmt: skip
    assert text.startswith("Batch: fastest here numpy.memmap") and "3 of 3 paired" in text


def test_page_coverage_grows_with_the_reads():
    pages, few = practiceviews.page_coverage(130_831, 10)
    assert pages >= 1 and 0 < few < practiceviews.page_coverage(130_831, 1024)[1] < 1


def test_round_ratios_take_each_round_against_the_same_round(race):
    ratio = practiceviews._round_ratio(race, "arrow", "get")
    assert isinstance(ratio, Spread) and len(ratio.samples) == 3


def test_one_epoch_measures_each_workers_memory(tmp_path, source):
    pytest.importorskip("torch")
    smiles, values = source
    small = practice.race(tmp_path / "r", smiles[:600], values[:600], kinds=("store", "arrow"),
                          reads=50, rounds=1, workers=2)  # fmt: skip
    for run in small.runs.values():
        assert run.epoch.items == 600
        assert len(run.worker_memory("private_dirty")) == 2
        assert len(run.worker_growth("private_dirty")) == 2
    assert "DataLoader epoch: every format's at most" in practiceviews.epoch_line(small)


def test_hf_recorded_says_none_where_unknown():
    assert practice.hf_recorded(practice.HFGets(None, "offline")) == {
        "task_hf_get_s": None,
        "task_hf_batch_s": None,
    }


def test_parquet_baseline_rewrites_every_shard_with_the_field_multiplied(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = tmp_path / "in"
    shards.mkdir()
    for k in range(3):
        table = pa.table({"smiles": ["C", "CC"], "U0": [1.0 + k, -2.0], "x": [3.0, 4.0]})
        pq.write_table(table, shards / f"part-{k}.parquet")
    seconds = practice.parquet_baseline(shards, tmp_path / "out", "U0", 2.0)
    assert seconds > 0
    for k in range(3):
        got = pq.read_table(tmp_path / "out" / f"part-{k}.parquet")
        assert got.column("U0").to_pylist() == [2.0 * (1.0 + k), -4.0]
        assert got.column("x").to_pylist() == [3.0, 4.0] and got.column("smiles")[1].as_py() == "CC"
