"""The QM9 task done by the tools practitioners use, beside the RecordStore, for a fair race.

Each *peer* holds the same records (a SMILES string and float64 fields) its own usual way:

========================  ==================================================================
``"store"``               ``RecordStore``: one mapped file, a column per field, offsets + heap
``"memmap"``              ``np.save`` / ``np.load(mmap_mode=)``: a ``.npy`` per field, plus
                          int64 offsets and a uint8 heap for the strings
``"memmap-rows"``         the same with one ``(n, fields)`` ``.npy`` of values (a row per record)
``"arrow"``               an uncompressed Arrow IPC file, memory-mapped (``pa.memory_map``)
``"sqlite"``              ``sqlite3``, one row per record (default journal, synchronous=FULL)
``"lmdb"``                LMDB, one pickled ``{"smiles", "y"}`` per record, as fairchem/OCP does
========================  ==================================================================

and does the same five things: ``build`` (columns in memory to durable files), ``open``,
``get(i)`` (one full record: ``(str, float64 array)``), ``take(indices)`` (a batch: a list of
str and an ``(n, fields)`` float64 array, as ``RecordStore.take`` returns) and
``double(field)`` (multiply a field by 2 and make it durable). ``PEERS[kind].how`` says in
words what each of them does for that tool. ``PeerDataset`` is a picklable PyTorch-style map
dataset over any of them, for DataLoader workers.

    smiles, values = qm9_columns(limit=10_000)
    path = build("lmdb", tmp / "qm9.lmdb", smiles, values, FIELDS)
    with open_peer("lmdb", path, writable=True) as db:
        db.get(0); db.take([5, 1, 5]); db.double("U0")
    paths = build_all(tmp / "peers", smiles, values)    # every peer: {kind: path}
    {kind: disk_bytes(p) for kind, p in paths.items()}  # their size on disk
    loader = DataLoader(PeerDataset("lmdb", path), batch_size=64, num_workers=2)

Not every peer holds every float64: SQLite gives -0.0 back as 0.0 and cannot store NaN (it
becomes NULL, refused here); the others keep every value bit for bit. pyarrow
(``mmlab[arrow]``) and lmdb (``mmlab[peers]``) are imported only by their peers.
``bench/bench_peers.py`` races them (``make bench``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmlab.data import qm9
from mmlab.data.peerdbs import LMDBPeer, SQLitePeer
from mmlab.data.peertools import ArrowPeer, MemmapPeer, MemmapRowsPeer, Peer, StorePeer
from mmlab.data.qm9 import FIELDS

__all__ = [
    "FIELDS",
    "PEERS",
    "Peer",
    "PeerDataset",
    "build",
    "build_all",
    "disk_bytes",
    "open_peer",
    "qm9_columns",
]


def qm9_columns(limit: int | None = None) -> tuple[list[str], np.ndarray]:
    """QM9's SMILES and its ``(n, 19)`` targets (offline, from qm9pack's cached store)."""
    return qm9.columns("qm9pack", None, limit)


PEERS: dict[str, type[Peer]] = {
    cls.kind: cls
    for cls in (StorePeer, MemmapPeer, MemmapRowsPeer, ArrowPeer, SQLitePeer, LMDBPeer)
}


def _peer(kind: str) -> type[Peer]:
    try:
        return PEERS[kind]
    except KeyError:
        raise ValueError(f"unknown peer {kind!r}; choose from {list(PEERS)}") from None


def build(
    kind: str, path: str | os.PathLike[str], smiles: Sequence[str], values, fields=FIELDS
) -> Path:
    """Write the records as peer ``kind`` does at ``path`` (a file, or a directory for the
    memmaps), durable on return; returns the path. ``path`` must not exist yet."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists: build each peer at a new path")
    values = np.asarray(values, dtype=np.float64)
    smiles = smiles if isinstance(smiles, list) else list(smiles)
    if values.shape != (len(smiles), len(fields)):
        raise ValueError(f"values have shape {values.shape}, not ({len(smiles)}, {len(fields)})")
    _peer(kind).build(path, smiles, values, tuple(fields))
    return path


def build_all(
    directory: str | os.PathLike[str],
    smiles: Sequence[str],
    values,
    fields=FIELDS,
    kinds: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Build every peer (or those of ``kinds``) in ``directory``: ``{kind: path}``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return {
        kind: build(kind, directory / f"qm9-{kind}", smiles, values, fields)
        for kind in (kinds or PEERS)
    }


def disk_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes the peer at ``path`` takes on disk: its files' allocated blocks (a directory's
    files for the memmaps; SQLite's journal or LMDB's lock file beside it too)."""
    path = Path(path)
    found = [*path.rglob("*")] if path.is_dir() else [path]
    found += [path.with_name(path.name + s) for s in ("-journal", "-wal", "-shm", "-lock")]
    return sum(p.stat().st_blocks * 512 for p in found if p.is_file())


def open_peer(kind: str, path: str | os.PathLike[str], writable: bool = False) -> Peer:
    """Open what ``build(kind, path, ...)`` wrote; ``writable=True`` to ``double``."""
    return _peer(kind)(Path(path), writable)


# Peers whose close() only unmaps and closes this process's fds (no lock, no shared state):
# a read-only store holds no writer lock, memmap and Arrow hold maps and an fd.
_SAFE_TO_CLOSE_AFTER_FORK = frozenset({"store", "memmap", "memmap-rows", "arrow"})


class PeerDataset:
    """``dataset[i]`` is ``(smiles, float32 values)`` of record ``i``, read by peer ``kind``.

    Like ``StoreDataset``: it pickles as its kind and path only (for spawn and forkserver
    workers) and opens the peer once per process, on first use; a batching DataLoader calls
    ``__getitems__`` once per batch (the peer's ``take``).
    """

    def __init__(self, kind: str, path: str | os.PathLike[str]) -> None:
        self.kind, self.path = kind, Path(path)
        with open_peer(kind, self.path) as peer:
            self._length = len(peer)
        self._peer: Peer | None = None
        self._pid: int | None = None

    def _open(self) -> Peer:
        if self._peer is None or self._pid != os.getpid():
            inherited, self._peer = self._peer, None
            if inherited is not None and self.kind in _SAFE_TO_CLOSE_AFTER_FORK:
                # A forked worker's copy: release its fds and maps now, not at the worker's
                # exit. LMDB and SQLite forbid using (or closing) a handle across fork, so
                # theirs is only dropped: the parent's stays intact.
                inherited.close()
            self._peer, self._pid = open_peer(self.kind, self.path), os.getpid()
        return self._peer

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> tuple[str, np.ndarray]:
        smiles, values = self._open().get(index)
        return smiles, np.asarray(values, dtype=np.float32)

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[str, np.ndarray]]:
        smiles, values = self._open().take(indices)
        return list(zip(smiles, values.astype(np.float32), strict=True))

    def __getstate__(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "_length": self._length, "_peer": None,
                "_pid": None}  # fmt: skip
