"""mmlab.scale: the store's doubling done by Dask across workers, checked value by value.

One LocalCluster (2 worker processes) is shared by the tests that pass a scheduler address;
one test starts and closes its own through ``scheduler=None``, as the lab does.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("distributed")
pytest.importorskip("dask.dataframe")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from mmlab import RecordStore, scale  # noqa: E402
from mmlab.data import scaleviews  # noqa: E402
from mmlab.store import arrow  # noqa: E402

N = 3_000
SHARD_ROWS = 700  # 5 shards, the last one short
FIELDS = ("U0", "mu", "alpha")


def _columns(seed: int = 14) -> tuple[list[str], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    values = {name: rng.normal(scale=100, size=N) for name in FIELDS}
    u0 = values["U0"]
    u0[[3, 500, 2_999]] = np.nan
    u0[[4, 1_400]] = -0.0
    u0[5], u0[6] = np.inf, -np.inf
    u0[7] = np.finfo(np.float64).max  # doubles to inf
    u0[8] = 5e-324  # the smallest subnormal: doubling it is exact
    values["mu"][9] = np.nan
    values["alpha"][10] = -0.0
    smiles = [f"C{i}" if i % 7 else f"Ç{i}é→😀" for i in range(N)]
    smiles[11] = ""
    return smiles, values


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    smiles, values = _columns()
    path = tmp_path_factory.mktemp("scale") / "small.mms"
    RecordStore.from_columns(path, smiles, values).close()
    return path


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def local_run(source, tmp_path_factory):
    """The lab's call: a LocalCluster of 2 workers started and closed by the function."""
    out = tmp_path_factory.mktemp("local") / "doubled"
    return scale.double_distributed(source, out, shard_rows=SHARD_ROWS)


def _read(out) -> pa.Table:
    shards = sorted(out.glob("*.parquet"))
    return pa.concat_tables([pq.read_table(p, partitioning=None) for p in shards])


def _assert_doubled(out, source, field="U0", factor=2.0):
    """Checked here with no help from mmlab.scale: pyarrow reads the output."""
    table = _read(out)
    assert table.column_names == ["smiles", *FIELDS]
    smiles, values = _columns()
    assert table.column("smiles").to_pylist() == smiles
    for name in FIELDS:
        got = table.column(name).to_numpy()
        with np.errstate(over="ignore", invalid="ignore"):  # max * 2 is inf, as IEEE says
            want = values[name] * factor if name == field else values[name]
        # bit for bit: -0.0 stays -0.0, NaN stays NaN (both NaN), inf stays inf
        nan = np.isnan(want)
        np.testing.assert_array_equal(np.isnan(got), nan)
        assert np.array_equal(got[~nan].view(np.uint64), want[~nan].view(np.uint64)), name
    with RecordStore.open(source) as store:  # the store itself is untouched
        np.testing.assert_array_equal(store.column(field), values[field])


def test_local_cluster_of_two_workers_doubles_every_value(local_run, source):
    """The issue's test: on a LocalCluster of 2 workers, in quick mode, every value equals
    the store's (U0 doubled, the rest unchanged)."""
    run = local_run
    assert run.ok and run.published and run.verification.ok
    _assert_doubled(run.out, source)
    assert run.local and run.workers == 2 and run.threads == 2
    assert run.records == N and run.shards == 5 == len(list(run.out.glob("*.parquet")))
    assert sorted(p.name for p in run.out.iterdir())[0] == "part-00000.parquet"
    assert list(run.seconds) == ["export", "start cluster", "plan", "compute + write", "verify"]
    assert all(s >= 0 for s in run.seconds.values())
    assert run.scheduler.startswith("tcp://")
    # nothing left beside the output: no temporary input shards, no temporary output
    assert sorted(p.name for p in run.out.parent.iterdir()) == ["doubled"]
    # the way back: the output is a store again
    with RecordStore.from_arrow(run.out.parent / "back.mms", run.out) as back:
        assert back.fields == FIELDS and len(back) == N


def test_the_run_prints_and_records_plain_task_dicts(local_run):
    run = local_run
    text = str(run)
    assert text == repr(run)
    for words in ("export", "start cluster", "plan", "compute + write", "verified", "dashboard"):
        assert words in text
    if run.dashboard is None:
        assert run.dashboard_note
    else:
        assert run.dashboard.startswith("http")
    kinds = run.task_kinds()
    assert kinds["read_parquet"] == 5 and kinds["toparquetdata"] == 5
    task = run.tasks[0]
    assert set(task) >= {"key", "kind", "worker", "thread", "action", "start", "stop"}
    assert all(type(v) in (str, int, float) for t in run.tasks for v in t.values())
    assert min(t["start"] for t in run.tasks) == 0.0
    assert run.task_span == max(t["stop"] for t in run.tasks) > 0  # from the first start
    assert all(t["stop"] >= t["start"] for t in run.tasks)
    assert len({t["worker"] for t in run.tasks}) == 2  # both workers did some of it
    assert run.verify().ok  # again, later, against the store at run.store


def test_plot_task_stream_puts_the_legend_outside_the_bars(local_run):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = scale.plot_task_stream(local_run)
    try:
        assert len(ax.get_yticks()) == local_run.threads
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "read_parquet" in labels
        span = max(t["stop"] for t in local_run.tasks)
        for label in labels:  # every kind named draws a bar wide enough to see
            widths = [t["stop"] - t["start"] for t in local_run.tasks
                      if label in (t["kind"], t["action"])]  # fmt: skip
            assert max(widths) >= scaleviews.VISIBLE * span
        ax.figure.canvas.draw()
        legend = ax.get_legend().get_window_extent()
        assert legend.x0 >= ax.get_window_extent().x1  # beside the axes, over no bar
    finally:
        plt.close(ax.figure)


def test_plot_phases_and_to_dict(local_run):
    import json

    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = scale.plot_phases(local_run, in_place_seconds=0.002)
    try:
        assert [t.get_text() for t in ax.get_yticklabels()][1] == "RecordStore, in place"
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend[:2] == ["export", "start cluster"] and "2.00 ms" in ax.texts[-1].get_text()
    finally:
        plt.close(ax.figure)
    data = json.loads(json.dumps(local_run.to_dict()))
    assert data["verified"] is True and data["records"] == N and data["workers"] == 2
    assert data["seconds"] == local_run.seconds and len(data["tasks"]) == len(local_run.tasks)


def test_compare_with_in_place_explains_from_the_run(local_run):
    lines = scale.compare_with_in_place(local_run, 1e-3, local_run.store_bytes)
    text = "\n".join(lines)
    assert "slower" in text and "estimate" in text and "Why" in text
    assert "export" in text and "page cache" in text and "object storage" in text
    assert "summed task time" in text and "wall span" in text and "worker time" not in text
    with pytest.raises(ValueError):
        scale.compare_with_in_place(local_run, 0)


def test_a_scheduler_address_runs_the_same_code(cluster, source, tmp_path):
    out = tmp_path / "doubled"
    run = scale.double_distributed(
        source, out, scheduler=cluster.scheduler_address, shard_rows=SHARD_ROWS, factor=-3
    )
    assert run.ok and not run.local
    assert run.scheduler == cluster.scheduler_address and run.workers == 2
    _assert_doubled(out, source, factor=-3.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doubled"]
    assert cluster.status.name == "running"  # a cluster it did not start, it leaves running


def test_an_existing_out_is_refused_unless_overwrite(cluster, source, tmp_path):
    out = tmp_path / "doubled"
    out.mkdir()
    (out / "part-0.parquet").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="overwrite"):
        scale.double_distributed(source, out, scheduler=cluster.scheduler_address)
    assert (out / "part-0.parquet").read_bytes() == b"old"
    parquet = tmp_path / "input"
    run = scale.double_distributed(
        source,
        out,
        scheduler=cluster.scheduler_address,
        shard_rows=SHARD_ROWS,
        parquet=parquet,
        overwrite=True,
    )
    assert run.ok and not (out / "part-0.parquet").exists()
    _assert_doubled(out, source)
    # the kept input shards are reused as they are: no export the second time
    shards = {p.name: p.stat().st_mtime_ns for p in parquet.iterdir()}
    again = scale.double_distributed(
        source, out, scheduler=cluster.scheduler_address, parquet=parquet, overwrite=True
    )
    assert again.ok and run.exported and not again.exported
    assert {p.name: p.stat().st_mtime_ns for p in parquet.iterdir()} == shards
    assert "reused" in str(again)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doubled", "input"]


def test_an_unknown_field_is_refused_before_any_cluster(source, tmp_path):
    # nothing listens on port 9: had it tried to connect, it would fail otherwise
    with pytest.raises(KeyError, match="unknown field 'U1'"):
        scale.double_distributed(
            source, tmp_path / "out", field="U1", scheduler="tcp://127.0.0.1:9"
        )
    assert list(tmp_path.iterdir()) == []


def test_an_interruption_mid_write_leaves_no_output(cluster, source, tmp_path):
    out = tmp_path / "doubled"
    seen = []

    def interrupt(phase, done, total):
        if phase == "compute + write":
            seen.append([p.name for p in tmp_path.iterdir()])
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        scale.double_distributed(
            source,
            out,
            scheduler=cluster.scheduler_address,
            shard_rows=SHARD_ROWS,
            progress=interrupt,
        )
    assert any(name.endswith(".writing") for name in seen[0])  # it was mid-write
    assert list(tmp_path.iterdir()) == []  # no output, no temporary input or output


def test_a_task_failing_on_a_worker_leaves_no_output(cluster, source, tmp_path):
    """One shard's U0 holds strings: its multiply fails on a worker while others write."""
    parquet = tmp_path / "input"
    arrow.export_parquet(source, parquet, shard_rows=SHARD_ROWS)
    bad = parquet / "part-00003.parquet"
    table = pq.read_table(bad)
    column = pa.array([f"x{i}" for i in range(table.num_rows)])
    pq.write_table(table.set_column(1, "U0", column), bad)
    out = tmp_path / "doubled"
    with pytest.raises(Exception) as failure:
        scale.double_distributed(source, out, scheduler=cluster.scheduler_address, parquet=parquet)
    assert not isinstance(failure.value, KeyError | FileExistsError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input"]


def test_verify_leaves_the_store_unwritten(local_run, source):
    with RecordStore.open(source, "r+") as store:
        assert scale.verify(local_run.out, store).ok
        assert store._may_have_written is False  # read through the Arrow snapshot


def test_a_parquet_file_is_refused_up_front(source, tmp_path):
    (tmp_path / "input.parquet").write_bytes(b"not a folder")
    with pytest.raises(NotADirectoryError, match="must name a directory"):
        scale.double_distributed(source, tmp_path / "out", parquet=tmp_path / "input.parquet")


def test_verify_finds_a_changed_value(local_run, source, tmp_path):
    out = tmp_path / "copy"
    out.mkdir()
    for shard in local_run.out.glob("*.parquet"):
        (out / shard.name).write_bytes(shard.read_bytes())
    assert scale.verify(out, source).ok
    shard = out / "part-00001.parquet"
    table = pq.read_table(shard)
    u0 = table.column("U0").to_numpy().copy()
    u0[2] = np.nextafter(u0[2], np.inf)  # one ulp: bit for bit means bit for bit
    pq.write_table(table.set_column(1, "U0", pa.array(u0)), shard)
    checked = scale.verify(out, source)
    assert not checked.ok and not checked
    assert f"record {SHARD_ROWS + 2:,}: U0" in str(checked)
    assert "FAILED" in str(checked)
    # a NaN written as a null (what pandas' float64 columns do) is not the store's NaN
    shard.write_bytes((local_run.out / shard.name).read_bytes())
    first = out / "part-00000.parquet"
    table = pq.read_table(first)
    pq.write_table(
        table.set_column(1, "U0", pa.array(table.column("U0").to_numpy(), from_pandas=True)), first
    )
    assert "part-00000.parquet: U0 holds 2 null(s)" in str(scale.verify(out, source))
    first.write_bytes((local_run.out / first.name).read_bytes())
    (out / "part-00004.parquet").unlink()
    shard.write_bytes((local_run.out / shard.name).read_bytes())
    assert "the shards hold 2,800 records, the store 3,000" in str(scale.verify(out, source))


def test_without_dask_it_says_what_to_install(source, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "dask" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"pip install mmlab\[scale\]"):
        scale.double_distributed(source, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_import_mmlab_scale_does_not_import_dask():
    code = (
        "import sys; from mmlab import scale; "
        "print(sorted({'dask', 'distributed', 'pandas', 'pyarrow'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_no_dashboard_link_says_why(monkeypatch):
    import importlib.util

    class NoDashboard:
        @property
        def dashboard_link(self):
            raise KeyError("dashboard")  # what a scheduler without bokeh gives

    assert scale._dashboard(NoDashboard(), local=False)[0] is None
    assert "serves no dashboard" in scale._dashboard(NoDashboard(), local=False)[1]
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bokeh" else real(name, *a)
    )
    link, note = scale._dashboard(NoDashboard(), local=True)
    assert link is None and "bokeh is not installed" in note and "mmlab[scale]" in note
