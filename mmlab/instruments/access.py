"""Touching a mapped file in a pattern: a sample file, the page order, the touch, the hint.

The experiments of the lazy-loading lab: ``sample_file`` writes a file of random bytes (real
data: a sparse file's holes read as zeros without any I/O), ``mapped`` maps it read-only with
a kernel hint (``madvise`` "random", "sequential", "willneed", or ``MAP_POPULATE``),
``access_order`` gives the pages to touch ("sequential", "random" or "strided") and
``touch_pages`` reads one byte of each: every first touch of a page is a page fault, minor
if the page is in the page cache, major if it must come from storage.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["PATTERNS", "access_order", "mapped", "sample_file", "touch_pages"]

PATTERNS = ("sequential", "random", "strided")
_MADVICE = {
    None: None,
    "random": "MADV_RANDOM",
    "sequential": "MADV_SEQUENTIAL",
    "willneed": "MADV_WILLNEED",
    "populate": "MAP_POPULATE",
}


def sample_file(path: str | os.PathLike[str], nbytes: int, seed: int = 0) -> Path:
    """A file of ``nbytes`` random bytes (kept if it already has that size), for experiments.

    Real data, not a sparse file: a hole in a sparse file reads as zeros without any I/O,
    which would hide exactly what the experiments show.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == nbytes:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    chunk = 16 * 2**20
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        for start in range(0, nbytes, chunk):
            f.write(rng.integers(0, 256, size=min(chunk, nbytes - start), dtype=np.uint8))
    partial.replace(path)
    return path


def access_order(
    n_pages: int, pattern: str, count: int | None = None, stride: int = 16, seed: int = 0
) -> np.ndarray:
    """Page indices to touch: ``"sequential"``, ``"random"`` or ``"strided"`` (every stride-th).

    ``count`` limits how many pages are touched (default: the whole pattern).
    """
    if pattern == "sequential":
        order = np.arange(n_pages)
    elif pattern == "random":
        order = np.random.default_rng(seed).permutation(n_pages)
    elif pattern == "strided":
        order = np.arange(0, n_pages, stride)
    else:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    return order[:count]


def touch_pages(mapping: mmap.mmap, pages: np.ndarray, page_size: int = mmap.PAGESIZE) -> int:
    """Read one byte of each page in ``pages`` (in that order); returns their sum.

    Each first touch of a page is a page fault: minor if the page is in the page cache,
    major if it must come from storage.
    """
    data = np.frombuffer(mapping, dtype=np.uint8)
    try:
        return int(data[np.asarray(pages, dtype=np.int64) * page_size].sum())
    finally:
        del data


@contextmanager
def mapped(path: str | os.PathLike[str], madvise: str | None = None) -> Iterator[mmap.mmap]:
    """Map a file read-only with a hint: "random", "sequential", "willneed" or "populate".

    ``with mapped(path, "random") as mm: ...``; "populate" maps with MAP_POPULATE, which reads
    the whole file in and maps every page before ``mmap`` returns.
    """
    if madvise not in _MADVICE:
        raise ValueError(f"madvise must be one of {list(_MADVICE)}, got {madvise!r}")
    flags = mmap.MAP_SHARED
    if madvise == "populate":
        flags |= mmap.MAP_POPULATE
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, flags=flags, prot=mmap.PROT_READ)
    try:
        if madvise in ("random", "sequential", "willneed"):
            mm.madvise(getattr(mmap, _MADVICE[madvise]))
        yield mm
    finally:
        mm.close()
