"""The record store: a memory-mapped file of records, each a string plus named float64 fields.

- ``format``: the on-disk layout and the two checksummed header slots (pure functions);
- ``files``: opening, locking, reserving space and publishing new files safely;
- ``remap``: re-pointing old mappings so that views follow the store into a bigger file;
- ``mapping``: the store's mapping, its views, and its moves between files;
- ``bulk``: many records per numpy operation (``from_columns``, ``extend_columns``);
- ``gather``: many records read at once (``take``);
- ``publish``: exported files and directories, written under a temporary name, then renamed;
- ``store``: ``RecordStore`` itself, reading and writing records.
"""

from __future__ import annotations

from mmlab.store.errors import (
    CorruptStoreError,
    NoSpaceError,
    NotAStoreError,
    ReadOnlyStoreError,
    StoreClosedError,
    StoreError,
    StoreLockedError,
    StoreReplacedError,
    TruncatedStoreError,
    UnsupportedVersionError,
)
from mmlab.store.store import Record, RecordStore

__all__ = [
    "CorruptStoreError",
    "NoSpaceError",
    "NotAStoreError",
    "ReadOnlyStoreError",
    "Record",
    "RecordStore",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
    "StoreReplacedError",
    "TruncatedStoreError",
    "UnsupportedVersionError",
]
