"""What notebook 09 (what practitioners use) will show on this machine, section by section,
from ``mmlab.machine``'s facts; ``mmlab.doctor`` gathers it."""

from __future__ import annotations

from mmlab.course.advice import (
    CLEAR,
    DIFFERENT,
    NOT_SHOWN,
    _cold,
    _Facts,
    _memory_for,
    _Section,
    _storage_counter,
)
from mmlab.instruments.facts import format_size as _size

__all__ = ["notebook_09"]

# The five formats of QM9 at full size on disk (LMDB's pickles are the largest), with room.
TASK_BYTES = 400 * 2**20


def notebook_09(f: _Facts) -> list[_Section]:
    task = _Section("09", "1", "the same QM9 task in five formats")
    dask = _Section("09", "5", "double U0 across Dask workers")
    fs = f("filesystem")
    if fs in ("tmpfs", "ramfs"):
        task.add(
            DIFFERENT,
            f"{fs}: fsync costs nothing and nothing is ever read from storage, so the builds and "
            "the durable doublings look cheaper than on a disk, and the cold reads are warm",
            "filesystem",
        )
    elif _cold(task, f, "the 1,024 cold gets read nothing from storage"):
        task.add(CLEAR, "eviction works: the cold gets start from storage", "eviction_works")
    _storage_counter(task, f)
    ra = f("read_ahead_kb")
    if ra is not None:
        task.add(
            CLEAR,
            f"read_ahead_kb is {ra:,}: a major fault on a mapped file reads up to "
            f"{_size(ra * 1024)} around the page it asked for, so a few cold gets may bring in "
            "most of a small file",
            "read_ahead_kb",
        )
    smaps = f("smaps_rollup")
    if smaps is False:
        task.add(
            NOT_SHOWN,
            f"no smaps_rollup: the workers' private and file-backed memory shows n/a "
            f"({f.why('smaps_rollup')})",
            "smaps_rollup",
        )
    free = f("free_space")
    if free is not None and free < TASK_BYTES:
        task.add(
            NOT_SHOWN,
            f"{_size(free)} free, less than the {_size(TASK_BYTES)} the five formats need",
            "free_space",
        )
    _memory_for(task, f, 2**30, "the formats, two DataLoader workers and the notebook", DIFFERENT)
    cpus = f("cpus_usable")
    if cpus is not None:
        dask.add(
            CLEAR if cpus >= 2 else DIFFERENT,
            f"{cpus} CPU(s) for the 2 Dask worker processes, the same ones the in-place "
            "doubling uses: the race is an in-place update against rewriting shards, not one "
            "machine against many"
            + ("" if cpus >= 2 else "; they take turns, the task stream shows no overlap"),
            "cpus_usable",
        )
    _memory_for(dask, f, 2 * 2**30, "2 Dask workers importing pandas, and the notebook", DIFFERENT)
    return [task, dask]
