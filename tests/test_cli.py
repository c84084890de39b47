"""The command line: info, get, double, export and doctor; clear errors, non-zero exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import smiles_of

from mmlab import RecordStore
from mmlab.cli import main


def test_info(filled, capsys):
    assert main(["info", str(filled)]) == 0
    out = capsys.readouterr().out
    assert "count=100" in out and "U0" in out and "heap" in out


def test_get(filled, capsys):
    assert main(["get", str(filled), "-1"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == smiles_of(99)
    assert "U0 = -198.0" in out


def test_double(filled, capsys):
    assert main(["double", str(filled), "alpha"]) == 0
    assert "doubled alpha in 100 records" in capsys.readouterr().out
    with RecordStore.open(filled) as store:
        np.testing.assert_array_equal(store.column("alpha"), 2 * (np.arange(100) + 0.5))
        np.testing.assert_array_equal(store.column("mu"), np.arange(100))


def test_errors_are_clear_and_exit_non_zero(filled, tmp_path, capsys):
    assert main(["get", str(filled), "100"]) == 1
    assert "out of range" in capsys.readouterr().err
    assert main(["double", str(filled), "nope"]) == 1
    assert "unknown field 'nope'" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing.mms")]) == 1
    assert "No such file" in capsys.readouterr().err
    (tmp_path / "junk").write_bytes(b"junk" * 100)
    assert main(["info", str(tmp_path / "junk")]) == 1
    assert "not an mmlab record store" in capsys.readouterr().err


def test_python_dash_m(filled):
    result = subprocess.run(
        [sys.executable, "-m", "mmlab", "get", str(filled), "0"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == smiles_of(0)
    usage = subprocess.run([sys.executable, "-m", "mmlab"], capture_output=True, text=True)
    assert usage.returncode == 2 and "COMMAND" in usage.stderr


def test_build_qm9(tmp_path, capsys):
    out = tmp_path / "qm9.mms"
    assert main(["build-qm9", str(out), "--source", "qm9pack", "--limit", "25"]) == 0
    assert "count=25" in capsys.readouterr().out
    with RecordStore.open(out) as store:
        assert store[0].smiles == "C" and len(store.fields) == 19


def test_demo_verifies_and_reports(tmp_path, capsys):
    assert main(["demo", "--limit", "300", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "verified: every value in both files equals the source" in out
    assert "double U0" in out and "minor page faults" in out
    assert list(tmp_path.iterdir()) == []  # its files are cleaned up


def test_demo_with_nothing_to_do(capsys):
    assert main(["demo", "--limit", "0"]) == 1
    assert "no molecules" in capsys.readouterr().err


def test_doctor_json_has_every_fact_measured_or_unknown_with_a_reason(tmp_path):
    from mmlab.instruments.machine import FACT_KEYS

    result = subprocess.run(
        [sys.executable, "-m", "mmlab", "doctor", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["path"] == str(tmp_path)
    assert list(data["facts"]) == list(FACT_KEYS)
    for key, fact in data["facts"].items():
        if fact["value"] is None:
            assert set(fact) == {"value", "unknown"} and fact["unknown"].strip(), key
        else:
            assert set(fact) == {"value", "source"} and fact["source"].strip(), key
    assert {a["notebook"] for a in data["advice"]} >= {"01", "02", "03", "04", "05", "06"}
    assert all(a["reasons"] for a in data["advice"])
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


def test_doctor_prints_facts_and_advice(tmp_path, capsys):
    assert main(["doctor", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"the file system of {tmp_path}" in out
    assert "read_ahead_kb" in out and "What the labs will show here" in out
    assert main(["doctor", str(tmp_path / "missing")]) == 1
    assert "No such file" in capsys.readouterr().err


def test_export_arrow_and_parquet(filled, tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.dataset as ds

    out = tmp_path / "out.arrow"
    assert main(["export", str(filled), str(out), "--format", "arrow"]) == 0
    assert "exported 100 records" in capsys.readouterr().out
    table = pa.ipc.open_file(pa.memory_map(str(out))).read_all()
    assert table.column("smiles").to_pylist() == [smiles_of(i) for i in range(100)]
    stream = tmp_path / "stream.arrow"
    assert main(["export", str(filled), str(stream), "--format", "arrow-stream"]) == 0
    assert pa.ipc.open_stream(pa.memory_map(str(stream))).read_all().equals(table)
    shards = tmp_path / "shards"
    parquet = ["--format", "parquet", "--shard-rows", "30"]
    assert main(["export", str(filled), str(shards), *parquet]) == 0
    assert "4 Parquet shard(s) of up to 30 records" in capsys.readouterr().out
    assert sorted(p.name for p in shards.iterdir()) == [f"part-0000{k}.parquet" for k in range(4)]
    assert ds.dataset(shards).to_table().sort_by("mu").equals(table)
    with RecordStore.from_arrow(tmp_path / "back.mms", shards) as back:
        assert back.take(range(100))[0] == [smiles_of(i) for i in range(100)]


def test_export_errors(filled, tmp_path, capsys, monkeypatch):
    pytest.importorskip("pyarrow")
    out = tmp_path / "out.arrow"
    out.write_text("mine")
    assert main(["export", str(filled), str(out)]) == 1
    assert "exists; pass overwrite=True (--overwrite)" in capsys.readouterr().err
    assert out.read_text() == "mine"
    assert main(["export", str(filled), str(out), "--overwrite"]) == 0
    assert main(["export", str(filled), str(tmp_path / "x"), "--shard-rows", "5"]) == 1
    assert "--shard-rows applies to --format parquet" in capsys.readouterr().err
    zero = ["--format", "parquet", "--shard-rows", "0"]
    assert main(["export", str(filled), str(tmp_path / "x"), *zero]) == 1
    assert "at least 1" in capsys.readouterr().err
    assert main(["export", str(filled), str(tmp_path / "no" / "x")]) == 1
    assert "does not exist" in capsys.readouterr().err
    # without pyarrow: say what to install
    import mmlab.store

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.delitem(sys.modules, "mmlab.store.arrow")
    monkeypatch.delattr(mmlab.store, "arrow")
    assert main(["export", str(filled), str(tmp_path / "y")]) == 1
    assert "pip install mmlab[arrow]" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.arrow", "records.mms"]


def test_export_interrupted_leaves_nothing(filled, tmp_path, capsys, monkeypatch):
    pytest.importorskip("pyarrow")
    from mmlab.store import arrow

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(arrow, "export_parquet", interrupted)
    assert main(["export", str(filled), str(tmp_path / "out"), "--format", "parquet"]) == 130
    assert "interrupted; nothing was written" in capsys.readouterr().err


def test_double_distributed(filled, tmp_path, capsys):
    """U0 doubled by Dask on a LocalCluster; a failed verification exits 1 and publishes
    nothing (input shards kept with --parquet, then gone stale by a change to the store)."""
    pytest.importorskip("distributed")
    pytest.importorskip("dask.dataframe")
    import pyarrow.parquet as pq

    out, shards = tmp_path / "doubled", tmp_path / "shards"
    command = ["double-distributed", str(filled), str(out), "--workers", "1"]
    assert main([*command, "--shard-rows", "30", "--parquet", str(shards)]) == 0
    printed = capsys.readouterr().out
    for words in ("export", "start cluster", "compute + write", "dashboard:", "verified: 100"):
        assert words in printed
    table = pq.read_table(out / "part-00003.parquet")
    assert table.column("U0").to_pylist() == [-4.0 * i for i in range(90, 100)]
    assert table.column("mu").to_pylist() == [float(i) for i in range(90, 100)]
    assert main([*command, "--field", "nope"]) == 1
    assert "unknown field 'nope'" in capsys.readouterr().err
    assert main(command) == 1
    assert "--overwrite" in capsys.readouterr().err
    with RecordStore.open(filled, "r+") as store:
        store.column("mu")[5] = 0.25  # the kept shards no longer match the store
    assert main([*command, "--parquet", str(shards), "--overwrite", "--factor", "3"]) == 1
    printed = capsys.readouterr().out
    assert "verification FAILED: record 5: mu = 5.0, expected 0.25 (unchanged)" in printed
    assert "not published" in printed
    # the previous output stands: a failed run replaces nothing
    assert pq.read_table(out / "part-00003.parquet").equals(table)
