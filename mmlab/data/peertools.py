"""The peers of ``mmlab.data.peers``: one class per tool, each holding the records its way.

``Peer`` is the interface (``get``, ``take``, ``double``, ``close``, ``len``, ``fields``;
the classmethod ``build``), each subclass one tool: ``StorePeer``, ``MemmapPeer``,
``MemmapRowsPeer``, ``ArrowPeer``, ``SQLitePeer``, ``LMDBPeer``. Their ``how`` says in words
what each operation does, for the benchmark's notes. Use them through ``mmlab.data.peers``.
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from mmlab.store import RecordStore, bulk, files

__all__ = [
    "ArrowPeer",
    "LMDBPeer",
    "MemmapPeer",
    "MemmapRowsPeer",
    "Peer",
    "SQLitePeer",
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
    return bulk.positions(indices, count)  # negative from the end, IndexError out of range


class Peer:
    """One tool holding the records; ``open_peer(kind, path)`` opens one, ``build`` makes one."""

    kind: ClassVar[str]
    title: ClassVar[str]
    how: ClassVar[dict[str, str]]  # op -> what it does, in words, for the table's notes
    fields: tuple[str, ...]

    @classmethod
    def build(cls, path: Path, smiles: list[str], values: np.ndarray, fields: Sequence[str]):
        raise NotImplementedError

    def __len__(self) -> int:
        return self._count

    def _index(self, i: int) -> int:
        j = i + self._count if i < 0 else i
        if not 0 <= j < self._count:
            raise IndexError(f"record index {i} out of range for {self._count} records")
        return j

    def get(self, i: int) -> tuple[str, np.ndarray]:
        raise NotImplementedError

    def take(self, indices: Iterable[int]) -> tuple[list[str], np.ndarray]:
        raise NotImplementedError

    def double(self, field: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

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
        column = self.store.column(field)
        column *= 2
        self.store.flush()

    def close(self) -> None:
        self.store.close()


def _encode(smiles: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """int64 offsets (n + 1) and the uint8 heap of the strings' UTF-8 bytes."""
    encoded = [s.encode() for s in smiles]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
    return offsets, np.frombuffer(b"".join(encoded), dtype=np.uint8)


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
        offsets, heap = _encode(smiles)
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

        self._source = pa.memory_map(str(self.path))
        self.table = pa.ipc.open_file(self._source).read_all()
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
        import pyarrow.compute as pc

        k = self.table.column_names.index(field)
        table = self.table.set_column(k, field, pc.multiply(self.table.column(k), 2.0))
        self._write(self.path, table)
        del table
        self.close()
        self._map()

    def close(self) -> None:
        self.table = self._smiles = self._floats = None
        self._source.close()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SQLitePeer(Peer):
    """A table ``records(id INTEGER PRIMARY KEY, smiles TEXT, <a REAL column per field>)``.

    SQLite's defaults: a rollback journal (DELETE) and ``synchronous=FULL``, so a commit is
    durable. A REAL cannot hold every float64: -0.0 comes back as 0.0, and NaN is stored as
    NULL (refused here: the columns are NOT NULL).
    """

    kind, title = "sqlite", "SQLite, one row per record"
    how: ClassVar = {
        "build": "executemany INSERT in one transaction (journal DELETE, synchronous FULL)",
        "open": "sqlite3.connect, the fields from PRAGMA table_info, max(id)",
        "get": "SELECT ... WHERE id = ? (the integer primary key)",
        "take": "SELECT ... WHERE id IN (...) of the distinct ids, reordered in Python",
        "double": "UPDATE records SET U0 = U0 * 2, one transaction (commit fsyncs)",
    }

    @classmethod
    def build(cls, path, smiles, values, fields):
        columns = ", ".join(f"{_quoted(f)} REAL NOT NULL" for f in fields)
        marks = ", ".join("?" * (len(fields) + 2))
        with sqlite3.connect(path) as con:
            con.execute(f"CREATE TABLE records (id INTEGER PRIMARY KEY, smiles TEXT, {columns})")
            rows = (
                (i, s, *v) for i, (s, v) in enumerate(zip(smiles, values.tolist(), strict=True))
            )
            con.executemany(f"INSERT INTO records VALUES ({marks})", rows)
        con.close()

    def __init__(self, path: Path, writable: bool = False) -> None:
        uri = f"file:{Path(path).absolute()}?mode={'rw' if writable else 'ro'}"
        self._con = sqlite3.connect(uri, uri=True, check_same_thread=False)
        names = [row[1] for row in self._con.execute("PRAGMA table_info(records)")]
        self.fields = tuple(names[2:])
        self._count = self._con.execute("SELECT max(id) FROM records").fetchone()[0] + 1
        self._columns = f"smiles, {', '.join(map(_quoted, self.fields))} FROM records"
        self._select = f"SELECT {self._columns}"

    def get(self, i: int) -> tuple[str, np.ndarray]:
        row = self._con.execute(self._select + " WHERE id = ?", (self._index(i),)).fetchone()
        return row[0], np.array(row[1:])

    def take(self, indices: Iterable[int]) -> tuple[list[str], np.ndarray]:
        rows = _rows(indices, self._count).tolist()
        found = {}
        ids = list(set(rows))
        for a in range(0, len(ids), 30_000):  # under SQLite's limit on bound parameters
            chunk = ids[a : a + 30_000]
            sql = f"SELECT id, {self._columns} WHERE id IN ({','.join('?' * len(chunk))})"
            found.update((row[0], row[1:]) for row in self._con.execute(sql, chunk))
        records = [found[i] for i in rows]
        values = np.array([r[1:] for r in records], dtype=np.float64)
        return [r[0] for r in records], values.reshape(len(rows), len(self.fields))

    def double(self, field: str) -> None:
        name = _quoted(self.fields[self.fields.index(field)])
        with self._con:
            self._con.execute(f"UPDATE records SET {name} = {name} * 2")

    def close(self) -> None:
        self._con.close()


class LMDBPeer(Peer):
    """One key per record (``b"0"``, ``b"1"``, ...: fairchem's ``f"{i}".encode("ascii")``),
    its value ``pickle.dumps({"smiles": str, "y": float64 array})``; keys ``b"length"`` and
    ``b"fields"`` describe the whole. ``map_size`` is sized from the pickled bytes."""

    kind, title = "lmdb", "LMDB, pickle per record"
    how: ClassVar = {
        "build": "pickle {'smiles', 'y'} per record, putmulti in one transaction, sync",
        "open": "lmdb.open(subdir=False, readonly, lock=False, readahead, meminit=False)",
        "get": "a read transaction, get(b'i'), pickle.loads (as fairchem's LmdbDataset)",
        "take": "one read transaction, cursor.getmulti of the keys, pickle.loads each",
        "double": "read-modify-write of every record in one write transaction, env.sync",
    }

    @classmethod
    def build(cls, path, smiles, values, fields):
        import lmdb

        items = [
            (f"{i}".encode("ascii"), pickle.dumps({"smiles": s, "y": y}, protocol=5))
            for i, (s, y) in enumerate(zip(smiles, values, strict=True))
        ]
        items += [
            (b"length", pickle.dumps(len(smiles))),
            (b"fields", pickle.dumps(tuple(fields))),
        ]
        payload = sum(len(k) + len(v) + 16 for k, v in items)
        # A B-tree's pages are about half full (opening it to write adds room to double it).
        map_size = (2 * payload + 2**24) // 4096 * 4096
        env = lmdb.open(str(path), map_size=map_size, subdir=False, meminit=False)
        try:
            with env.begin(write=True) as txn:
                txn.cursor().putmulti(items)
            env.sync(True)
        finally:
            env.close()

    def __init__(self, path: Path, writable: bool = False) -> None:
        import lmdb

        if writable:
            # Room for copies of every page a doubling rewrites, beside the pages it replaces
            # (address space only: the file grows as pages are used, freed pages are reused).
            map_size = (4 * path.stat().st_size + 2**28) // 4096 * 4096
            self._env = lmdb.open(str(path), map_size=map_size, subdir=False, meminit=False)
        else:
            self._env = lmdb.open(
                str(path), subdir=False, readonly=True, lock=False, readahead=True,
                meminit=False, max_readers=1,
            )  # fmt: skip
        with self._env.begin() as txn:
            self._count = pickle.loads(txn.get(b"length"))
            self.fields = pickle.loads(txn.get(b"fields"))

    def get(self, i: int) -> tuple[str, np.ndarray]:
        with self._env.begin() as txn:
            record = pickle.loads(txn.get(f"{self._index(i)}".encode("ascii")))
        return record["smiles"], record["y"]

    def take(self, indices: Iterable[int]) -> tuple[list[str], np.ndarray]:
        keys = [f"{i}".encode("ascii") for i in _rows(indices, self._count).tolist()]
        with self._env.begin() as txn:
            records = [pickle.loads(v) for _, v in txn.cursor().getmulti(keys)]
        values = np.array([r["y"] for r in records], dtype=np.float64)
        return [r["smiles"] for r in records], values.reshape(len(keys), len(self.fields))

    def double(self, field: str) -> None:
        k = self.fields.index(field)
        with self._env.begin(write=True) as txn:
            updated = []
            for key, value in txn.cursor():
                if key.isdigit():
                    record = pickle.loads(value)
                    record["y"][k] *= 2
                    updated.append((key, pickle.dumps(record, protocol=5)))
            txn.cursor().putmulti(updated)
        self._env.sync(True)

    def close(self) -> None:
        self._env.close()
