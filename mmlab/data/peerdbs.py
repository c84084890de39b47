"""The database peers of ``mmlab.data.peers``: SQLite (a row per record) and LMDB (a pickle
per record). Unlike the file peers in ``mmlab.data.peertools``, these keep records as rows
behind a query or a key, and neither can be mapped as columns.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import numpy as np

from mmlab.data.peertools import Peer, _rows
from mmlab.store import files

__all__ = ["LMDBPeer", "SQLitePeer"]


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
        "open": "sqlite3.connect, the fields from PRAGMA table_info, count(*)",
        "get": "SELECT ... WHERE id = ? (the integer primary key)",
        "take": "SELECT ... WHERE id IN (...) of the distinct ids, reordered in Python",
        "double": "UPDATE records SET U0 = U0 * 2, one transaction (commit fsyncs)",
    }

    @classmethod
    def build(cls, path, smiles, values, fields):
        columns = ", ".join(f"{_quoted(f)} REAL NOT NULL" for f in fields)
        marks = ", ".join("?" * (len(fields) + 2))
        # Built under a temporary name and renamed: a failed INSERT (e.g. a NaN into a NOT
        # NULL column) must not leave a file with an empty table (the CREATE auto-commits).
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            con = sqlite3.connect(tmp)
            try:
                with con:
                    con.execute(
                        f"CREATE TABLE records (id INTEGER PRIMARY KEY, smiles TEXT, {columns})"
                    )
                    rows = (
                        (i, s, *v)
                        for i, (s, v) in enumerate(zip(smiles, values.tolist(), strict=True))
                    )
                    con.executemany(f"INSERT INTO records VALUES ({marks})", rows)
            finally:
                con.close()
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        files.fsync_dir(path)

    def __init__(self, path: Path, writable: bool = False) -> None:
        uri = f"file:{Path(path).absolute()}?mode={'rw' if writable else 'ro'}"
        self._con = sqlite3.connect(uri, uri=True, check_same_thread=False)
        names = [row[1] for row in self._con.execute("PRAGMA table_info(records)")]
        self.fields = tuple(names[2:])
        # ids are 0..n-1 by construction; count(*) is 0 for an empty table (max(id): NULL)
        self._count = self._con.execute("SELECT count(*) FROM records").fetchone()[0]
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
        """Double ``field`` in every record, durably, as ``how["double"]`` says."""
        name = _quoted(self.fields[self.fields.index(field)])
        with self._con:
            self._con.execute(f"UPDATE records SET {name} = {name} * 2")

    def close(self) -> None:
        """Release this peer's files, maps or connection."""
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
        """Double ``field`` in every record, durably, as ``how["double"]`` says."""
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
        """Release this peer's files, maps or connection."""
        self._env.close()
