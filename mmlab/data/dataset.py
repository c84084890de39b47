"""A map-style dataset over a RecordStore, for PyTorch's DataLoader and its worker processes.

A DataLoader with workers forks (or, on macOS and Windows, spawns) one process per worker.
Python objects in a list look shared after a fork, but reading them writes their reference
counts, so every page they live on is copied into each worker: memory grows with the number
of workers ("copy-on-read", pytorch issue 13246). A memory-mapped store has no Python objects
to copy: its pages stay shared page-cache pages however many workers read them.

``StoreDataset`` keeps only the store's path and opens the store in each process on first
use, so it pickles for spawn and each worker gets its own mapping of the same pages.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mmlab.store import RecordStore

__all__ = ["StoreDataset"]


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

    def __getstate__(self) -> dict:
        return {"path": self.path, "_length": self._length, "_store": None, "_pid": None}
