"""mmlab: learn how memory-mapped files really behave, measured.

The package holds a memory-mapped record store (``RecordStore``), the blog example's own
file layout (``mmlab.seedformat``) and, in submodules imported on demand, QM9 loading and
the instruments. ``import mmlab`` stays light: numpy and psutil, never torch or matplotlib.
"""

from __future__ import annotations

from mmlab.measure import Measurement, measure
from mmlab.pagecache import EvictionWarning
from mmlab.sampler import RSSSampler
from mmlab.store import (
    CorruptStoreError,
    NoSpaceError,
    NotAStoreError,
    ReadOnlyStoreError,
    Record,
    RecordStore,
    StoreClosedError,
    StoreError,
    StoreLockedError,
    StoreReplacedError,
    TruncatedStoreError,
    UnsupportedVersionError,
)

__all__ = [
    "CorruptStoreError",
    "EvictionWarning",
    "Measurement",
    "NoSpaceError",
    "NotAStoreError",
    "RSSSampler",
    "ReadOnlyStoreError",
    "Record",
    "RecordStore",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
    "StoreReplacedError",
    "TruncatedStoreError",
    "UnsupportedVersionError",
    "measure",
]

__version__ = "0.1.0"
