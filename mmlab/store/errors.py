"""The record store's errors: one base class, one subclass per thing that can go wrong.

Every failure the store can detect raises a ``StoreError`` subclass (or the standard
``IndexError``, ``KeyError``, ``ValueError``, ``TypeError``, ``FileNotFoundError``,
``FileExistsError``), so a caller can catch the store's problems without catching everything.
"""

from __future__ import annotations

import errno

__all__ = [
    "CorruptStoreError",
    "NoSpaceError",
    "NotAStoreError",
    "ReadOnlyStoreError",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
    "StoreReplacedError",
    "TruncatedStoreError",
    "UnsupportedVersionError",
]


class StoreError(Exception):
    """Base class of the record store's errors."""


class NotAStoreError(StoreError):
    """The file is not a record store."""


class CorruptStoreError(StoreError):
    """The file is a record store, but damaged."""


class TruncatedStoreError(CorruptStoreError):
    """The file is shorter than its header says."""


class UnsupportedVersionError(StoreError):
    """The store was written in a format version this mmlab cannot read."""


class StoreLockedError(StoreError):
    """Another writer has the store open."""


class ReadOnlyStoreError(StoreError):
    """A write was attempted through a store opened read-only."""


class StoreClosedError(StoreError, ValueError):
    """The store was used after ``close()``."""


class StoreReplacedError(StoreError):
    """The file was replaced by a different store while this one had it open."""


class NoSpaceError(StoreError, OSError):
    """The filesystem has no room for the space the store must reserve (``errno.ENOSPC``)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror
