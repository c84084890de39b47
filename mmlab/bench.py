"""read() against mmap, measured on the same bytes under the same instruments.

``read_vs_mmap`` reads one file in blocks by five methods: ``read()`` into new bytes,
``readinto()`` a preallocated buffer, ``os.pread``, slicing an ``mmap``, and summing a
``numpy.memmap``. Each run is timed inside ``measure()``, so beside GB/s the table shows
page faults, bytes fetched from storage and the page-cache change. A cold run evicts the file
first. A large in-memory copy measured in the same run gives the machine's memory bandwidth,
so every figure can be read as a fraction of that limit.

After timing, each method reads the blocks once more and checksums them (untimed): every
method must see the same bytes.
"""

from __future__ import annotations

import mmap
import os
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmlab import pagecache
from mmlab.measure import Measurement, format_count, measure

__all__ = [
    "METHODS",
    "PATTERNS",
    "BenchResult",
    "access_order",
    "mapped",
    "memory_bandwidth",
    "read_vs_mmap",
    "sample_file",
    "touch_pages",
]

PATTERNS = ("sequential", "random", "strided")

METHODS = ("read", "readinto", "pread", "mmap slice", "numpy.memmap sum")
_MADVICE = {
    None: None,
    "random": "MADV_RANDOM",
    "sequential": "MADV_SEQUENTIAL",
    "willneed": "MADV_WILLNEED",
    "populate": "MAP_POPULATE",
}


def memory_bandwidth(nbytes: int = 256 * 2**20, repeats: int = 3) -> float:
    """Bytes per second of a large in-memory copy (best of ``repeats``): the machine's limit."""
    source = np.ones(nbytes, dtype=np.uint8)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return nbytes / best


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


def _blocks(size: int, block_size: int, pattern: str, seed: int) -> list[tuple[int, int]]:
    starts = np.arange(0, size, block_size)
    if pattern == "random":
        starts = np.random.default_rng(seed).permutation(starts)
    return [(int(s), min(block_size, size - int(s))) for s in starts]


def _runner(method: str, path: Path, blocks, madvise: str | None) -> Callable[[Callable], None]:
    """A function that reads every block by ``method`` and hands each to ``sink``."""

    def run(sink: Callable) -> None:
        if method == "read":
            with open(path, "rb", buffering=0) as f:
                for offset, length in blocks:
                    f.seek(offset)
                    sink(f.read(length))
        elif method == "readinto":
            buffer = bytearray(max(length for _, length in blocks))
            view = memoryview(buffer)
            with open(path, "rb", buffering=0) as f:
                for offset, length in blocks:
                    f.seek(offset)
                    f.readinto(view[:length])
                    sink(view[:length])
        elif method == "pread":
            fd = os.open(path, os.O_RDONLY)
            try:
                for offset, length in blocks:
                    sink(os.pread(fd, length, offset))
            finally:
                os.close(fd)
        elif method == "mmap slice":
            with mapped(path, madvise) as mm:
                for offset, length in blocks:
                    sink(mm[offset : offset + length])
        else:
            with mapped(path, madvise) as mm:
                words = np.frombuffer(mm, dtype=np.uint8)
                for offset, length in blocks:
                    sink(words[offset : offset + length], reduce=True)
                del words

    return run


def _touch(block, reduce: bool = False) -> None:
    # The copy made by read(), pread() and slicing is the work; a memmap's work is its sum.
    if reduce:
        # Whole 8-byte words sum several times faster than bytes; the tail, if any, as bytes.
        words = len(block) // 8 * 8
        block[:words].view(np.uint64).sum()
        block[words:].sum(dtype=np.uint64)


@dataclass
class BenchResult:
    """The table of a ``read_vs_mmap`` run: one row per method, plus the bandwidth reference."""

    path: Path
    size: int
    pattern: str
    block_size: int
    cache: str
    madvise: str | None
    bandwidth: float  # bytes per second of an in-memory copy, this run
    rows: list[dict]

    def table(self) -> str:
        head = (
            f"{'method':<18}{'GB/s':>8}{'of copy':>9}{'minor':>9}{'major':>7}"
            f"{'storage MiB':>13}{'cached pages':>16}  checksum"
        )
        lines = [head]
        for r in self.rows:
            lines.append(
                f"{r['method']:<18}{r['gb_s']:>8.2f}{r['fraction_of_copy']:>8.0%} "
                f"{format_count(r['minor_faults']):>8}{format_count(r['major_faults']):>7}"
                f"{_mib(r['storage_bytes']):>13}{r['cached_pages_delta']:>+16,}"
                f"  {r['checksum']:08x}"
            )
        lines.append(f"{'memory copy':<18}{self.bandwidth / 1e9:>8.2f}{'100%':>9}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"<read_vs_mmap {self.path.name}: {self.size / 2**20:,.0f} MiB, {self.pattern}, "
            f"{self.block_size:,} B blocks, {self.cache} cache, madvise={self.madvise}>\n"
            + self.table()
        )

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<tr><td>{r['method']}</td><td>{r['gb_s']:.2f}</td><td>{r['fraction_of_copy']:.0%}"
            f"</td><td>{format_count(r['minor_faults'])}</td><td>{format_count(r['major_faults'])}</td>"
            f"<td>{_mib(r['storage_bytes'])}</td><td>{r['cached_pages_delta']:+,}</td>"
            f"<td><code>{r['checksum']:08x}</code></td></tr>"
            for r in self.rows
        )
        head = (
            "<tr><th>method</th><th>GB/s</th><th>of copy</th><th>minor faults</th>"
            "<th>major faults</th><th>storage MiB</th><th>cached pages</th><th>checksum</th></tr>"
        )
        caption = (
            f"{self.size / 2**20:,.0f} MiB, {self.pattern}, {self.block_size:,} B blocks, "
            f"{self.cache} cache; memory copy {self.bandwidth / 1e9:.2f} GB/s"
        )
        return f"<table><caption>{caption}</caption>{head}{cells}</table>"

    def plot(self, ax=None):
        """Bar chart of GB/s per method, with the memory-copy reference as a line."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 3.5))
        names = [r["method"] for r in self.rows]
        ax.barh(names, [r["gb_s"] for r in self.rows], color="#1f77b4")
        ax.axvline(self.bandwidth / 1e9, color="#d62728", linestyle="--", label="memory copy")
        ax.invert_yaxis()
        ax.set_xlabel("GB/s")
        ax.set_title(f"{self.pattern}, {self.block_size // 1024} KiB blocks, {self.cache} cache")
        ax.legend(loc="lower right", fontsize=8)
        return ax


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.1f}"


def read_vs_mmap(
    path: str | os.PathLike[str],
    pattern: str = "sequential",
    block_size: int = 64 * 1024,
    cache: str = "warm",
    repeats: int = 3,
    madvise: str | None = None,
    methods: tuple[str, ...] = METHODS,
    seed: int = 0,
) -> BenchResult:
    """Time reading ``path`` by each method; best of ``repeats`` runs, same blocks for all.

    ``pattern``: "sequential" or "random" (every block once, shuffled). ``cache``: "warm"
    (the file is read once first) or "cold" (evicted before every run). ``madvise`` applies
    to the mmap methods: "random", "sequential", "willneed" or "populate" (MAP_POPULATE).
    """
    path = Path(path)
    if pattern not in ("sequential", "random"):
        raise ValueError(f"pattern must be 'sequential' or 'random', got {pattern!r}")
    if cache not in ("cold", "warm"):
        raise ValueError(f"cache must be 'cold' or 'warm', got {cache!r}")
    if madvise not in _MADVICE:
        raise ValueError(f"madvise must be one of {list(_MADVICE)}, got {madvise!r}")
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    if block_size < 1 or repeats < 1:
        raise ValueError("block_size and repeats must be positive")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path} is empty: nothing to read")
    if cache == "cold" and pagecache.on_tmpfs(path):
        warnings.warn(
            f"{path} is on tmpfs, where pages cannot be evicted: the 'cold' runs are warm",
            pagecache.EvictionWarning,
            stacklevel=2,
        )
    blocks = _blocks(size, block_size, pattern, seed)
    bandwidth = memory_bandwidth()
    rows = []
    for method in methods:
        run = _runner(method, path, blocks, madvise)
        best: Measurement | None = None
        for _ in range(repeats):
            if cache == "cold":
                _evict_quietly(path)
            else:
                run(_touch)
            with measure(method, file=path) as m:
                run(_touch)
            if best is None or m.wall_s < best.wall_s:
                best = m
        crc = [0]

        def checksum(block, reduce: bool = False, crc=crc) -> None:
            crc[0] = (crc[0] + zlib.crc32(block)) & 0xFFFFFFFF

        run(checksum)
        gb_s = size / best.wall_s / 1e9
        rows.append(
            {
                "method": method,
                "seconds": best.wall_s,
                "gb_s": gb_s,
                "fraction_of_copy": gb_s * 1e9 / bandwidth,
                "minor_faults": best.minor_faults,
                "major_faults": best.major_faults,
                "storage_bytes": best.read_bytes,
                "cached_pages_delta": best.cached_pages_delta,
                "checksum": crc[0],
            }
        )
    return BenchResult(path, size, pattern, block_size, cache, madvise, bandwidth, rows)


def _evict_quietly(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pagecache.EvictionWarning)
        pagecache.evict(path)
