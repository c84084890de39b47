"""A map-style dataset over a RecordStore, for PyTorch's DataLoader and its worker processes.

A DataLoader with workers starts one process per worker: by fork, or by spawn or forkserver
(the default on macOS and Windows, and on Linux from Python 3.14), which pickle the dataset
into each worker.
Python objects in a list look shared after a fork, but reading them writes their reference
counts, so every page they live on is copied into each worker: memory grows with the number
of workers ("copy-on-read", pytorch issue 13246). A memory-mapped store has no Python objects
to copy: its pages stay shared page-cache pages however many workers read them.

``StoreDataset`` keeps only the store's path and opens the store in each process on first
use, so it pickles for spawn and each worker gets its own mapping of the same pages. A
batching DataLoader fetches each batch with one ``__getitems__`` call (``store.take``).
``ListDataset`` (one Python tuple per record) and ``ArrayDataset`` (three numpy arrays in
RAM) hold the same records in this process and return the same items, so notebook 06 can
compare the three like for like.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmlab.store import RecordStore

__all__ = ["ArrayDataset", "ListDataset", "StoreDataset"]


class StoreDataset:
    """``dataset[i]`` is ``(smiles, values)`` of record ``i``; ``values`` as float32."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        with RecordStore.open(self.path) as store:
            self._length = len(store)
        self._store: RecordStore | None = None
        self._pid: int | None = None

    def _open(self) -> RecordStore:
        # A store inherited through fork shares the parent's file offset and lock state:
        # each process opens its own.
        if self._store is None or self._pid != os.getpid():
            self._store = RecordStore.open(self.path)
            self._pid = os.getpid()
        return self._store

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> tuple[str, np.ndarray]:
        smiles, values = self._open()[index]
        return smiles, values.astype(np.float32)

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[str, np.ndarray]]:
        """A whole batch in one call: ``[self[i] for i in indices]``, from one ``store.take``.

        A DataLoader that batches (``batch_size=``, or ``batch_sampler=``) calls this once per
        batch, in place of one ``__getitem__`` per index.
        """
        smiles, values = self._open().take(indices)
        return list(zip(smiles, values.astype(np.float32), strict=True))

    def __getstate__(self) -> dict:
        return {"path": self.path, "_length": self._length, "_store": None, "_pid": None}


class ListDataset:
    """The usual way: every record a ``(smiles, float32 values)`` tuple in a Python list."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        with RecordStore.open(path) as store:
            self.items = [(smiles, values.astype(np.float32)) for smiles, values in store]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray]:
        return self.items[i]


class ArrayDataset:
    """The same records in three numpy arrays in RAM: string offsets, string bytes, values.

    Forked workers share them copy-on-write like the list, but they are three objects, not
    two per record: reading a record writes no refcount on the pages that hold the data.
    Spawned or forkserver workers each get a full pickled copy.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        with RecordStore.open(path) as store:
            n, sections = len(store), store.sections
            self.values = np.stack(
                [store.column(f) for f in store.fields], axis=1, dtype=np.float32
            )
        # The store's format: n + 1 int64 offsets into a byte heap, each at its section.
        self.offsets = np.fromfile(path, np.int64, count=n + 1, offset=sections["offsets"][0])
        heap_at = sections["heap"][0]
        self.heap = np.fromfile(path, np.uint8, count=int(self.offsets[-1]), offset=heap_at)

    @property
    def nbytes(self) -> int:
        """Bytes of the three arrays' data."""
        return self.offsets.nbytes + self.heap.nbytes + self.values.nbytes

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray]:
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.heap[start:end].tobytes().decode(), self.values[i].copy()
