"""QM9 from both sources, offline: acceptance values, PyG's own loader, round trips, bad input."""

from __future__ import annotations

import importlib.util
import socket

import numpy as np
import pytest

from mmlab import RecordStore, StoreLockedError, qm9

CH4 = [0.0, 13.21, -10.5499, 3.1865, 13.7363, 35.3641, 1.2177, -1101.4878, -1101.4098,
       -1101.3840, -1102.0229, 6.469, -17.1722, -17.2868, -17.3897, -16.1519, 157.7118,
       157.7100, 157.7070]  # fmt: skip
NH3 = [1.6256, 9.46, -6.9933, 2.2558, 9.2491, 26.1563, 0.9349, -1538.1477, -1538.0698,
       -1538.0442, -1538.6667, 6.316, -12.0059, -12.0821, -12.1593, -11.2460, 293.6097,
       293.5411, 191.3940]  # fmt: skip
LIMIT = 120  # past QM9's first uncharacterized indices (58, 61, 80)


@pytest.fixture(scope="module")
def pyg_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pyg_qm9")
    qm9.prepare_pyg_root(root, limit=LIMIT, workers=2)
    return root


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test on any attempt to open a network connection."""

    def refuse(self, address, *args, **kwargs):
        raise AssertionError(f"network access attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def test_targets_are_pygs_19_in_order():
    assert len(qm9.TARGETS) == 19
    assert qm9.FIELDS[:3] == ("mu", "alpha", "HOMO") and qm9.FIELDS[7] == "U0"
    assert qm9.FIELDS[-3:] == ("A", "B", "C")
    assert dict((t.name, t.unit) for t in qm9.TARGETS)["Cv"] == "cal/mol K"


def test_acceptance_values_from_qm9pack():
    (s1, y1), (s2, y2) = qm9.records("qm9pack", limit=2)
    assert (s1, s2) == ("C", "N")
    np.testing.assert_allclose(y1, CH4, atol=1e-3)
    np.testing.assert_allclose(y2, NH3, atol=1e-3)


def test_pygs_unchanged_qm9_loads_the_prepared_root_offline(pyg_root, no_network):
    from torch_geometric.datasets import QM9

    dataset = QM9(str(pyg_root))
    assert len(dataset) == LIMIT
    first = dataset[0]
    assert first.smiles == "[H]C([H])([H])[H]"
    assert first.name == "gdb_1" and int(first.idx) == 0
    np.testing.assert_allclose(first.y[0].numpy(), CH4, atol=1e-3)
    np.testing.assert_allclose(dataset[1].y[0].numpy(), NH3, atol=1e-3)
    # Index 58 is uncharacterized: the 58th molecule PyG yields is QM9's number 59.
    assert dataset[57].name == "gdb_59" and int(dataset[57].idx) == 58
    assert dataset[LIMIT - 1].name == f"gdb_{LIMIT + 3}"


def test_pyg_and_qm9pack_give_the_same_y(pyg_root, no_network):
    pyg = np.array([y for _, y in qm9.records("pyg", root=pyg_root)])
    ours = np.array([y for _, y in qm9.records("qm9pack", limit=LIMIT)])
    assert pyg.shape == ours.shape == (LIMIT, 19)
    # PyG keeps y in float32: equal to its precision
    np.testing.assert_allclose(pyg, ours, rtol=2e-7, atol=1e-6)


def test_auto_prefers_a_processed_pyg_root(pyg_root, no_network, tmp_path):
    (smiles, _), *_ = qm9.records("auto", root=pyg_root, limit=1)
    assert smiles == "[H]C([H])([H])[H]"  # PyG's SMILES, so PyG was read
    (smiles, _), *_ = qm9.records("auto", root=tmp_path, limit=1)
    assert smiles == "C"  # qm9pack's


def test_to_store_round_trips_pyg(pyg_root, tmp_path, no_network):
    with qm9.to_store(tmp_path / "qm9.mms", source="pyg", root=pyg_root) as store:
        assert store.mode == "r" and len(store) == LIMIT and store.fields == qm9.FIELDS
        expected = list(qm9.records("pyg", root=pyg_root))
        assert [r.smiles for r in store] == [s for s, _ in expected]
        np.testing.assert_array_equal([r.values for r in store], [y for _, y in expected])


def test_to_store_round_trips_qm9pack(tmp_path):
    with qm9.to_store(tmp_path / "qm9.mms", source="qm9pack", limit=50) as store:
        assert len(store) == 50
        np.testing.assert_allclose(store.column("U0")[:2], [CH4[7], NH3[7]], atol=1e-3)
    with qm9.to_store(tmp_path / "qm9.mms", source="qm9pack", limit=3) as store:
        assert len(store) == 3  # a second call replaces the store


def test_the_blogs_item_call_fails_on_19_targets(pyg_root, no_network):
    from torch_geometric.datasets import QM9

    data = QM9(str(pyg_root))[0]
    with pytest.raises(RuntimeError, match="19 elements"):
        data.y.item()
    assert data.y[0].shape == (19,)


def test_prepare_refuses_to_overwrite(pyg_root):
    with pytest.raises(FileExistsError, match="overwrite=True"):
        qm9.prepare_pyg_root(pyg_root, limit=3)


def test_prepare_writes_what_pygs_parsers_expect(tmp_path):
    info = qm9.prepare_pyg_root(tmp_path, limit=60, workers=1)
    assert info.molecules == 60 and info.placeholders == 2  # indices 58 and 61
    raw = tmp_path / "raw"
    table = (raw / "gdb9.sdf.csv").read_text()
    assert table.endswith("\n") and len(table.split("\n")[1:-1]) == 62
    skipped = [
        int(x.split()[0]) for x in (raw / "uncharacterized.txt").read_text().split("\n")[9:-2]
    ]
    assert skipped == [58, 61]
    assert (raw / "gdb9.sdf").read_text().count("$$$$\n") == 62


def test_full_qm9pack_has_every_molecule_and_its_cache_is_reused():
    """The one full conversion (cached after the first run; under a minute)."""
    molecules = qm9.records("qm9pack")
    first = next(molecules)
    count = 1 + sum(1 for _ in molecules)
    assert count == qm9.QM9_MOLECULES
    np.testing.assert_allclose(first[1], CH4, atol=1e-3)
    cache = qm9._cache_path()
    with RecordStore.open(cache) as store:
        assert len(store) == qm9.QM9_MOLECULES
    stamp = cache.stat().st_mtime_ns
    next(qm9.records("qm9pack"))
    assert cache.stat().st_mtime_ns == stamp  # not rebuilt


def test_to_store_reads_the_cache_as_columns(tmp_path, capsys):
    """With the cache built (by the test above, or here), to_store takes its columns."""
    cache = qm9._cached_qm9pack()
    with (
        qm9.to_store(tmp_path / "all.mms", source="qm9pack") as store,
        RecordStore.open(cache) as cached,
    ):
        assert len(store) == qm9.QM9_MOLECULES and store.fields == qm9.FIELDS
        for field in qm9.FIELDS:
            np.testing.assert_array_equal(store.column(field), cached.column(field))
        everything = range(len(store))
        assert store.take(everything)[0] == cached.take(everything)[0]
    assert "QM9 -> store: 100%" in capsys.readouterr().err
    with qm9.to_store(tmp_path / "some.mms", source="qm9pack", limit=20_000) as store:
        smiles, values = zip(*qm9.records("qm9pack", limit=20_000), strict=True)
        assert [r.smiles for r in store] == list(smiles)
        np.testing.assert_array_equal(store.take(range(20_000))[1], values)


# -- bad input ------------------------------------------------------------------------------


def test_missing_qm9pack_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "qm9pack" else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match="pip install qm9pack"):
        next(qm9.records("qm9pack", limit=1))


def test_a_malformed_row_names_file_and_line(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    real = qm9._qm9pack_data() / "qm9_part1.csv"
    with open(real) as f:
        lines = [next(f) for _ in range(4)]
    lines[3] = lines[3].replace(",-40.", ",not-a-number", 1) if ",-40." in lines[3] else "junk\n"
    (data / "qm9_part1.csv").write_text("".join(lines))
    monkeypatch.setattr(qm9, "_qm9pack_data", lambda: data)
    with pytest.raises(qm9.QM9FormatError, match=r"qm9_part1\.csv, line 4"):
        list(qm9._qm9pack_molecules())


def test_an_empty_pyg_root_explains_both_ways(tmp_path, no_network):
    with pytest.raises(FileNotFoundError, match="prepare_pyg_root") as info:
        next(qm9.records("pyg", root=tmp_path))
    assert "download" in str(info.value)


def test_bad_source_and_limit():
    with pytest.raises(ValueError, match="source"):
        qm9.records("figshare")
    with pytest.raises(ValueError, match="limit"):
        qm9.records("qm9pack", limit=-1)


def test_a_failed_to_store_keeps_the_old_store(tmp_path):
    path = tmp_path / "qm9.mms"
    qm9.to_store(path, source="qm9pack", limit=3).close()
    with pytest.raises(FileNotFoundError):
        qm9.to_store(path, source="pyg", root=tmp_path / "empty")
    with RecordStore.open(path) as store:
        assert len(store) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qm9.mms"]


def test_to_store_never_replaces_a_store_a_writer_holds(tmp_path):
    path = tmp_path / "qm9.mms"
    qm9.to_store(path, source="qm9pack", limit=3).close()
    with RecordStore.open(path, "r+") as writer:
        with pytest.raises(StoreLockedError):
            qm9.to_store(path, source="qm9pack", limit=5)
        assert len(writer) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qm9.mms"]
