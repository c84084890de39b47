"""The peers of ``mmlab.data.peers``: one class per tool, each holding the records its way.

``Peer`` is the interface (``get``, ``take``, ``double``, ``close``, ``len``, ``fields``;
the classmethod ``build``), each subclass one tool: ``StorePeer``, ``MemmapPeer``,
``MemmapRowsPeer``, ``ArrowPeer`` here, and the databases ``SQLitePeer`` and ``LMDBPeer`` in
``mmlab.data.peerdbs``. Their ``how`` says in words what each operation does, for the
benchmark's notes. Use them through ``mmlab.data.peers``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from mmlab.store import RecordStore, bulk, files, gather

__all__ = [
    "ArrowPeer",
    "MemmapPeer",
    "MemmapRowsPeer",
    "Peer",
    "StorePeer",
]


def _synced(path: Path, write) -> None:
    """``write(file)`` into a new file at ``path``, then fsync it."""
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _durable(path: Path, write) -> None:
    """``write(file)`` into a temporary file beside ``path``, fsync, rename over, fsync dir."""
    tmp = path.with_name(f".{path.name}.tmp")
    _synced(tmp, write)
    os.replace(tmp, path)
    files.fsync_dir(path)


def _rows(indices: Iterable[int], count: int) -> np.ndarray:
    return gather.positions(indices, count)  # negative from the end, IndexError out of range


class Peer:
    """One tool holding the records; ``open_peer(kind, path)`` opens one, ``build`` makes one."""

    kind: ClassVar[str]
    title: ClassVar[str]
    how: ClassVar[dict[str, str]]  # op -> what it does, in words, for the table's notes
    fields: tuple[str, ...]

    @classmethod
    def build(cls, path: Path, smiles: list[str], values: np.ndarray, fields: Sequence[str]):
        """Write the records (strings, an (n, fields) float64 array) at ``path``, durably."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self._count

    def _index(self, i: int) -> int:
        j = i + self._count if i < 0 else i
        if not 0 <= j < self._count:
            raise IndexError(f"record index {i} out of range for {self._count} records")
        return j

    def get(self, i: int) -> tuple[str, np.ndarray]:
        """Record ``i`` (negative from the end): its string and its fields' values."""
        raise NotImplementedError

    def take(self, indices: Iterable[int]) -> tuple[list[str], np.ndarray]:
        """Many records, in the order given: their strings and an (n, fields) array."""
        raise NotImplementedError

    def double(self, field: str) -> None:
        """Multiply ``field`` by 2 in every record and make it durable (``how["double"]``
        says how each tool does it); needs the peer opened ``writable``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the peer holds (files, maps, connections); safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StorePeer(Peer):
    kind, title = "store", "RecordStore"
    how: ClassVar = {
        "build": "RecordStore.from_columns (temp file, fsync, rename, fsync dir)",
        "open": "RecordStore.open",
        "get": "store[i]: (str, float64 array), the store's own method",
        "take": "store.take: (list of str, (n, fields) float64 array)",
        "double": "column(field) *= 2, then flush() (msync)",
    }

    @classmethod
    def build(cls, path, smiles, values, fields):
        RecordStore.from_columns(path, smiles, values, fields).close()

    def __init__(self, path: Path, writable: bool = False) -> None:
        self.store = RecordStore.open(path, "r+" if writable else "r")
        self.fields, self._count = self.store.fields, len(self.store)
        self.get, self.take = self.store.__getitem__, self.store.take  # no wrapper: its own cost

    def double(self, field: str) -> None:
        """Double ``field`` in every record, durably, as ``how["double"]`` says."""
        column = self.store.column(field)
        column *= 2
        self.store.flush()

    def close(self) -> None:
        """Release this peer's files, maps or connection."""
        self.store.close()


class MemmapPeer(Peer):
    """A directory of ``.npy`` files: ``offsets.npy``, ``heap.npy`` and the values."""

    kind, title, rows = "memmap", "numpy.memmap, a .npy per field", False
    how: ClassVar = {
        "build": "np.save of offsets, heap and each field in a new dir (fsync each, the dir)",
        "open": "np.load(mmap_mode='r' or 'r+') of every .npy (read via np.asarray views)",
        "get": "offsets[i:i+2], str(heap[a:b]), np.array of each field's [i]",
        "take": "fancy index of offsets and of each field, column_stack; a str per slice",
        "double": "the field's memmap *= 2, then its flush() (msync)",
    }

    @classmethod
    def build(cls, path, smiles, values, fields):
        path.mkdir(parents=True, exist_ok=True)
        offsets, heap = bulk.encode_strings(smiles)
        arrays = {"offsets": offsets, "heap": heap}
        if cls.rows:
            arrays["values"] = np.ascontiguousarray(values, dtype=np.float64)
        else:
            for k in range(len(fields)):
                arrays[f"field{k}"] = np.ascontiguousarray(values[:, k], dtype=np.float64)
        for name, array in arrays.items():
            _synced(path / f"{name}.npy", lambda f, a=array: np.save(f, a))
        meta = json.dumps({"fields": list(fields), "rows": cls.rows}).encode()
        _synced(path / "meta.json", lambda f: f.write(meta))
        files.fsync_dir(path / "meta.json")  # the new directory's entries
        files.fsync_dir(path)  # the directory's own entry

    def __init__(self, path: Path, writable: bool = False) -> None:
        mode = "r+" if writable else "r"
        self.fields = tuple(json.loads((path / "meta.json").read_text())["fields"])
        # Read through plain ndarray views of the memmaps (np.asarray: no copy), as a reader
        # who cares for speed does: indexing a numpy.memmap itself costs 2 µs more per get.
        self._offsets = np.asarray(np.load(path / "offsets.npy", mmap_mode="r"))
        self._bytes = memoryview(np.load(path / "heap.npy", mmap_mode="r"))
        self._count = len(self._offsets) - 1
        if self.rows:
            self._memmaps = [np.load(path / "values.npy", mmap_mode=mode)]
            self._values = np.asarray(self._memmaps[0])
        else:
            self._memmaps = [
                np.load(path / f"field{k}.npy", mmap_mode=mode) for k in range(len(self.fields))
            ]
            self._columns = [np.asarray(m) for m in self._memmaps]

    def get(self, i: int) -> tuple[str, np.ndarray]:
        if not 0 <= i < self._count:  # inlined: a method call costs a tenth of this get
            i = self._index(i)
        start, end = self._offsets[i : i + 2].tolist()
        smiles = str(self._bytes[start:end], "utf-8")
        if self.rows:
            return smiles, self._values[i].copy()
        return smiles, np.array([column[i] for column in self._columns])

    def take(self, indices: Iterable[int]) -> tuple[list[str], np.ndarray]:
        rows = _rows(indices, self._count)
        starts, ends = self._offsets[rows].tolist(), self._offsets[rows + 1].tolist()
        smiles = [str(self._bytes[a:b], "utf-8") for a, b in zip(starts, ends, strict=True)]
        if self.rows:
            return smiles, self._values[rows]
        values = np.empty((len(rows), len(self.fields)))
        for k, column in enumerate(self._columns):
            values[:, k] = column[rows]
        return smiles, values

    def double(self, field: str) -> None:
        """Double ``field`` in every record, durably, as ``how["double"]`` says."""
        k = self.fields.index(field)
        if self.rows:
            memmap = self._memmaps[0]
            memmap[:, k] *= 2
        else:
            memmap = self._memmaps[k]
            memmap *= 2
        memmap.flush()


class MemmapRowsPeer(MemmapPeer):
    kind, title, rows = "memmap-rows", "numpy.memmap, one (n, fields) .npy", True
    how: ClassVar = {
        **MemmapPeer.how,
        "build": "np.save of offsets, heap and the (n, fields) values (fsync each, the dir)",
        "get": "offsets[i:i+2], str(heap[a:b]), values[i].copy()",
        "take": "fancy index of offsets and of the values' rows; a str per slice",
        "double": "values[:, k] *= 2 (every page of the file), then flush() (msync)",
    }


class ArrowPeer(Peer):
    """One uncompressed IPC file: a ``string`` column ``smiles``, then a float64 column per
    field. Arrow has no in-place update: ``double`` writes a new file and renames it over."""

    kind, title = "arrow", "Arrow IPC, memory-mapped"
    how: ClassVar = {
        "build": "pa.table (string + float64 columns), ipc.new_file, fsync, rename, fsync dir",
        "open": "pa.memory_map + ipc.open_file().read_all() (zero copy)",
        "get": "smiles[i].as_py() and each float column's zero-copy numpy view [i]",
        "take": "Table.take, then smiles to_pylist() and the columns column_stack-ed",
        "double": "no in-place update: the whole file rewritten (pc.multiply), fsync, rename",
    }

    @staticmethod
    def _write(path: Path, table) -> None:
        import pyarrow as pa

        def write(f) -> None:
            with pa.ipc.new_file(f, table.schema) as writer:
                writer.write_table(table)

        _durable(path, write)

    @classmethod
    def build(cls, path, smiles, values, fields):
        import pyarrow as pa

        columns = {"smiles": pa.array(smiles, pa.string())}
        for k, name in enumerate(fields):
            columns[name] = pa.array(values[:, k], pa.float64())
        cls._write(path, pa.table(columns))

    def __init__(self, path: Path, writable: bool = False) -> None:
        self.path = path
        self._map()

    def _map(self) -> None:
        import pyarrow as pa
        import pyarrow.ipc

        source = pa.memory_map(str(self.path))
        try:
            self.table = pa.ipc.open_file(source).read_all()
        except BaseException:
            source.close()  # not left to the garbage collector
            raise
        self._source = source
        self.fields = tuple(self.table.column_names[1:])
        self._count = self.table.num_rows
        self._smiles = self._floats = None  # the first get makes them

    def _prepare(self) -> None:
        """The string array, and each float column as a zero-copy numpy view."""
        chunks = [column.combine_chunks() for column in self.table.columns]
        self._smiles = chunks[0]
        self._floats = [chunk.to_numpy(zero_copy_only=True) for chunk in chunks[1:]]

    def get(self, i: int) -> tuple[str, np.ndarray]:
        i = self._index(i)
        if self._floats is None:
            self._prepare()
        return self._smiles[i].as_py(), np.array([column[i] for column in self._floats])

    def take(self, indices: Iterable[int]) -> tuple[list[str], np.ndarray]:
        taken = self.table.take(_rows(indices, self._count))
        values = np.column_stack([taken.column(k).to_numpy() for k in range(1, taken.num_columns)])
        return taken.column(0).to_pylist(), values.reshape(taken.num_rows, len(self.fields))

    def double(self, field: str) -> None:
        """Double ``field`` in every record, durably, as ``how["double"]`` says."""
        import pyarrow.compute as pc

        k = self.table.column_names.index(field)
        table = self.table.set_column(k, field, pc.multiply(self.table.column(k), 2.0))
        self._write(self.path, table)
        del table
        self.close()
        self._map()

    def close(self) -> None:
        """Release this peer's files, maps or connection."""
        self.table = self._smiles = self._floats = None
        self._source.close()
