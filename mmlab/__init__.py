"""mmlab: learn how memory-mapped files really behave, measured.

The package is grouped by concept, and imports flow one way (the course and the CLI use the
rest; the instruments never import the store or QM9):

- ``mmlab.store``: the memory-mapped record store (``RecordStore``);
- ``mmlab.instruments``: faults, storage bytes, memory, the page cache, read() vs mmap,
  alignment, live plots, and the report of the machine;
- ``mmlab.data``: QM9 offline, a PyTorch dataset over a store, the blog example's layout;
- ``mmlab.course``: the notebooks' self-checks and ``mmlab doctor``'s advice per lab.

The modules notebooks use most are short attributes too: ``from mmlab import pagecache,
bench, qm9`` imports them on first use. ``import mmlab`` stays light: numpy and psutil,
never torch or matplotlib.
"""

from __future__ import annotations

from mmlab.instruments.measure import Measurement, measure
from mmlab.instruments.pagecache import EvictionWarning
from mmlab.instruments.sampler import RSSSampler
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

# Each module by its short name, imported on first use (PEP 562), so that
# ``from mmlab import bench`` works without ``import mmlab`` importing every module.
_SHORT_NAMES = {
    **dict.fromkeys(
        [
            "access",
            "align",
            "bench",
            "cachestat",
            "compare",
            "facts",
            "fsinfo",
            "live",
            "machine",
            "memlimit",
            "memlimitrun",
            "pagecache",
            "pagemap",
            "probe",
            "proc",
            "sampler",
            "stats",
            "sweep",
            "sysinfo",
            "visibility",
            "writeback",
        ],
        "instruments",
    ),
    **dict.fromkeys(["blog", "dataset", "peers", "qm9", "scale", "seedformat"], "data"),
    **dict.fromkeys(
        [
            "advice",
            "bigger",
            "check",
            "diagram",
            "doctor",
            "durability",
            "loadermatrix",
            "mapcost",
            "mapcount",
            "plots",
            "practice",
            "predict",
            "results",
            "sharing",
            "signals",
            "traps",
        ],
        "course",
    ),
}


def __getattr__(name: str):
    if name in _SHORT_NAMES:
        import importlib

        return importlib.import_module(f"mmlab.{_SHORT_NAMES[name]}.{name}")
    raise AttributeError(f"module 'mmlab' has no attribute {name!r}")
