"""The peers (mmlab.data.peers): every tool returns the store's records and doubles exactly.

No speed is asserted here: bench/bench_peers.py races them.
"""

from __future__ import annotations

import pickle
import sqlite3

import numpy as np
import pytest

from mmlab import RecordStore
from mmlab.data import peers

pytest.importorskip("pyarrow")
pytest.importorskip("lmdb")

KINDS = list(peers.PEERS)
U0 = peers.FIELDS.index("U0")
N = 300


@pytest.fixture(scope="module")
def source():
    """SMILES-like strings (with non-ASCII, an empty one and a NUL) and 19 float64 fields."""
    rng = np.random.default_rng(3)
    smiles = ["".join(rng.choice(list("CNO()=#c1"), size=rng.integers(1, 25))) for _ in range(N)]
    smiles[:4] = ["", "é", "C\x00N", "日本語"]
    values = rng.normal(size=(N, len(peers.FIELDS))) * 1e3
    values[5, 3] = np.inf
    return smiles, values


@pytest.fixture(scope="module")
def built(tmp_path_factory, source):
    """Each peer built once, plus the store as the oracle."""
    root = tmp_path_factory.mktemp("peers")
    smiles, values = source
    paths = {kind: peers.build(kind, root / kind, smiles, values) for kind in KINDS}
    return paths


@pytest.fixture(scope="module")
def oracle(built):
    with RecordStore.open(built["store"]) as store:
        yield store


@pytest.mark.parametrize("kind", KINDS)
def test_get_returns_the_stores_record(kind, built, oracle, source):
    smiles, values = source
    with peers.open_peer(kind, built[kind]) as peer:
        assert len(peer) == N and peer.fields == peers.FIELDS
        for i in [0, 1, 2, 3, 5, 17, N - 1, -1, -N]:
            s, v = peer.get(i)
            assert s == oracle[i].smiles == smiles[i]
            assert v.dtype == np.float64 and v.shape == (len(peers.FIELDS),)
            assert np.array_equal(v, oracle[i].values) and np.array_equal(v, values[i])
        for bad in (N, -N - 1):
            with pytest.raises(IndexError):
                peer.get(bad)


@pytest.mark.parametrize("kind", KINDS)
def test_take_returns_the_stores_batch(kind, built, oracle):
    index = [7, 3, 7, -1, 0, 2, 250, 3]
    with peers.open_peer(kind, built[kind]) as peer:
        s, v = peer.take(index)
        expected_s, expected_v = oracle.take(index)
        assert s == expected_s
        assert v.shape == (len(index), len(peers.FIELDS)) and v.dtype == np.float64
        assert np.array_equal(v, expected_v)
        s, v = peer.take(np.arange(N))  # every record, through the array path
        assert s == oracle.take(range(N))[0] and np.array_equal(v, oracle.take(range(N))[1])
        s, v = peer.take([])
        assert s == [] and v.shape == (0, len(peers.FIELDS))
        with pytest.raises(IndexError):
            peer.take([0, N])


@pytest.mark.parametrize("kind", KINDS)
def test_double_is_exact_and_durable(kind, tmp_path, source):
    smiles, values = source
    path = peers.build(kind, tmp_path / kind, smiles, values)
    with peers.open_peer(kind, path, writable=True) as peer:
        peer.double("U0")
        assert np.array_equal(peer.take(range(N))[1][:, U0], 2 * values[:, U0])
    with peers.open_peer(kind, path) as peer:  # reopened: the change is on disk
        got = peer.take(range(N))[1]
    assert np.array_equal(got[:, U0], 2 * values[:, U0])
    assert np.array_equal(np.delete(got, U0, 1), np.delete(values, U0, 1))


@pytest.mark.parametrize("kind", KINDS)
def test_dataset_pickles_and_batches_like_store_dataset(kind, built):
    from mmlab.data.dataset import StoreDataset

    dataset = pickle.loads(pickle.dumps(peers.PeerDataset(kind, built[kind])))
    assert len(pickle.dumps(dataset)) < 1000  # the path, not the data
    reference = StoreDataset(built["store"])
    assert len(dataset) == len(reference) == N
    index = [4, 0, 4, N - 1]
    batch = dataset.__getitems__(index)
    assert [s for s, _ in batch] == [reference[i][0] for i in index]
    for (_, v), i in zip(batch, index, strict=True):
        assert v.dtype == np.float32 and np.array_equal(v, reference[i][1])
        assert np.array_equal(dataset[i][1], v)


def _as_list(batch):
    return batch  # a module-level function: spawned workers unpickle it


def test_a_dataloader_with_two_workers_reads_every_peer(built):
    pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    for kind in KINDS:
        loader = DataLoader(
            peers.PeerDataset(kind, built[kind]),
            batch_size=64,
            num_workers=2,
            collate_fn=_as_list,
        )
        items = [item for batch in loader for item in batch]
        assert len(items) == N and items[3][0] == "日本語", kind
        assert items[0][1].dtype == np.float32, kind


def test_sqlite_cannot_hold_nan_or_negative_zero(tmp_path):
    # What the peers' docs say: SQLite stores -0.0 as 0.0 and NaN as NULL (refused here).
    smiles, values = ["C", "N"], np.zeros((2, len(peers.FIELDS)))
    values[0, 0] = -0.0
    with peers.open_peer("sqlite", peers.build("sqlite", tmp_path / "a", smiles, values)) as db:
        assert np.signbit(db.get(0)[1][0]) == np.False_
    values[1, 1] = np.nan
    with pytest.raises(sqlite3.IntegrityError):
        peers.build("sqlite", tmp_path / "b", smiles, values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no half-built "b", no temp
    for kind in ("store", "memmap", "arrow", "lmdb"):  # the others keep both, bit for bit
        with peers.open_peer(kind, peers.build(kind, tmp_path / kind, smiles, values)) as peer:
            got = peer.take([0, 1])[1]
        assert got.tobytes() == values.tobytes(), kind


def test_an_empty_sqlite_peer_opens_with_no_records(tmp_path):
    path = peers.build("sqlite", tmp_path / "empty", [], np.zeros((0, len(peers.FIELDS))))
    with peers.open_peer("sqlite", path) as db:
        assert len(db) == 0


def test_bad_arguments(tmp_path, source):
    smiles, values = source
    with pytest.raises(ValueError, match="unknown peer"):
        peers.build("hdf5", tmp_path / "x", smiles, values)
    with pytest.raises(ValueError, match="shape"):
        peers.build("arrow", tmp_path / "x", smiles, values[:, :3])
    (tmp_path / "there").touch()
    with pytest.raises(FileExistsError):
        peers.build("sqlite", tmp_path / "there", smiles, values)


def test_qm9_columns_gives_the_records_of_qm9():
    from mmlab.data import qm9

    smiles, values = peers.qm9_columns(limit=20)
    expected = list(qm9.records("qm9pack", limit=20))
    assert smiles == [s for s, _ in expected]
    assert np.array_equal(values, np.array([y for _, y in expected]))


def test_the_benchmark_runs_and_prints_its_targets():
    """bench/bench_peers.py, tiny: it checks every peer's records, then prints the table.
    (Whether the targets are met is for the benchmark itself to say, never for a test.)"""
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "bench" / "bench_peers.py"
    args = ["--limit", "300", "--rounds", "1", "--gets", "20", "--takes", "1", "--batch", "16"]
    result = subprocess.run(
        [sys.executable, bench, *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "issue 14's targets" in out
    assert out.count("PASS") + out.count("MISS") == 3
    for peer in peers.PEERS.values():
        assert peer.title in out


def test_build_all_and_disk_bytes(tmp_path, source):
    smiles, values = source
    paths = peers.build_all(tmp_path / "all", smiles[:50], values[:50], kinds=["memmap", "lmdb"])
    assert set(paths) == {"memmap", "lmdb"}
    for kind, path in paths.items():
        assert peers.disk_bytes(path) >= 50 * len(peers.FIELDS) * 8, kind
        with peers.open_peer(kind, path) as peer:
            assert len(peer) == 50


def test_spawned_workers_open_their_own_peer(built):
    """Spawn pickles the dataset into each worker: the path goes, never the data."""
    pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    loader = DataLoader(
        peers.PeerDataset("memmap", built["memmap"]),
        batch_size=100,
        num_workers=2,
        multiprocessing_context="spawn",
        collate_fn=_as_list,
    )
    assert [s for batch in loader for s, _ in batch][:4] == ["", "é", "C\x00N", "日本語"]
