"""read() against mmap, measured on the same bytes, in interleaved rounds.

``read_vs_mmap`` reads one file in blocks by five methods: ``read()`` into new bytes,
``readinto()`` a preallocated buffer, ``os.pread``, slicing an ``mmap``, and summing the
blocks of a ``numpy.memmap`` in place (``"np.frombuffer(mmap) sum"``, the same over an
``mmap`` this module maps, can be added). A large in-memory copy is the reference. Each
round runs every method once and the copy once, in rotating order (``mmlab.bench.compare``),
so a slow spell of a shared machine slows all of them alike; the table gives the median of
the rounds with its interquartile range, each method's speed as a multiple of the copy in
the same round, and, per method, page faults, bytes fetched from storage and the page-cache
change. A cold run evicts the file before every call.

After timing, each method reads the blocks once more and checksums them (untimed): every
method must see the same bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import mmap
import os
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmlab.instruments import pagecache
from mmlab.instruments.access import (
    _MADVICE,
    PATTERNS,
    access_order,
    mapped,
    sample_file,
    touch_pages,
)
from mmlab.instruments.compare import (
    DEFAULT_REPEATS,
    MIN_STABLE_REPEATS,
    QUICK_REPEATS,
    BenchResult,
    Row,
    Spread,
    compare,
    default_repeats,
)
from mmlab.instruments.reasons import sweep_explained
from mmlab.instruments.stats import MARGIN
from mmlab.instruments.sweep import REFERENCE, plot_sweep, plot_sweeps, size_label, sweep_summary

__all__ = [
    "DEFAULT_REPEATS",
    "EXTRA_METHODS",
    "MARGIN",
    "METHODS",
    "MIN_STABLE_REPEATS",
    "PATTERNS",
    "QUICK_REPEATS",
    "REFERENCE",
    "BenchResult",
    "Row",
    "Spread",
    "access_order",
    "compare",
    "default_repeats",
    "mapped",
    "memory_bandwidth",
    "memory_copy",
    "plot_sweep",
    "plot_sweeps",
    "read_vs_mmap",
    "sample_file",
    "size_label",
    "sweep_explained",
    "sweep_summary",
    "touch_pages",
]

METHODS = ("read", "readinto", "pread", "mmap slice", "numpy.memmap sum")
# np.frombuffer over an mmap.mmap: what numpy.memmap does inside, but madvise applies to it.
EXTRA_METHODS = ("np.frombuffer(mmap) sum",)


def memory_copy(nbytes: int = 256 * 2**20) -> Callable[[], None]:
    """A callable that copies ``nbytes`` from one preallocated array to another.

    The reference of ``read_vs_mmap``: it reads and writes every byte in main memory. Both
    arrays are allocated and touched here, so no call pays their page faults.
    """
    source = np.ones(nbytes, dtype=np.uint8)
    target = source.copy()

    def copy() -> None:
        np.copyto(target, source)

    # numpy asks for transparent huge pages for large arrays: fewer TLB misses for the copy
    copy.huge_fraction = huge_fraction(source, target)  # type: ignore[attr-defined]
    return copy


def huge_fraction(*arrays: np.ndarray) -> float | None:
    """The share of the arrays' bytes that transparent huge pages back, from /proc/self/smaps
    (``AnonHugePages`` over ``Size`` of the memory areas that overlap them; numpy's
    ``madvise`` splits a large array's mapping into several); None where smaps is unreadable."""
    spans = [
        (a.__array_interface__["data"][0], a.__array_interface__["data"][0] + a.nbytes)
        for a in arrays
    ]
    huge = size = 0
    try:
        with open("/proc/self/smaps") as f:
            inside = False
            for line in f:
                head = line.split()[0]
                if "-" in head and not head.endswith(":"):
                    low, high = (int(x, 16) for x in head.split("-"))
                    inside = any(low < end and start < high for start, end in spans)
                elif inside and head in ("Size:", "AnonHugePages:"):
                    kib = int(line.split()[1]) * 1024
                    size, huge = (size + kib, huge) if head == "Size:" else (size, huge + kib)
    except (OSError, ValueError, IndexError):
        return None
    return huge / size if size else None


def memory_bandwidth(nbytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Bytes per second of a large in-memory copy: the median of ``repeats`` copies.

    For the spread as well: ``compare({"copy": memory_copy(n)}, nbytes=n)["copy"].rate``.
    """
    result = compare({REFERENCE: memory_copy(nbytes)}, repeats, nbytes=nbytes)
    return result[REFERENCE].rate.median


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
        elif method == "numpy.memmap sum":
            array = np.memmap(path, dtype=np.uint8, mode="r")
            if madvise in ("random", "sequential", "willneed"):
                # numpy maps the file itself; its mmap object is where a hint can go
                array._mmap.madvise(getattr(mmap, _MADVICE[madvise]))
            for offset, length in blocks:
                sink(array[offset : offset + length], reduce=True)
            del array  # the last reference: unmapped now, so an eviction can drop the pages
        else:  # "np.frombuffer(mmap) sum"
            with mapped(path, madvise) as mm:
                array = np.frombuffer(mm, dtype=np.uint8)
                for offset, length in blocks:
                    sink(array[offset : offset + length], reduce=True)
                del array

    return run


def _touch(block, reduce: bool = False) -> None:
    # The copy made by read(), pread() and slicing is the work; a memmap's work is its sum.
    if reduce:
        # Whole 8-byte words sum several times faster than bytes; the tail, if any, as bytes.
        words = len(block) // 8 * 8
        block[:words].view(np.uint64).sum()
        block[words:].sum(dtype=np.uint64)


def read_vs_mmap(
    path: str | os.PathLike[str],
    pattern: str = "sequential",
    block_size: int = 64 * 1024,
    cache: str = "warm",
    repeats: int | None = None,
    madvise: str | None = None,
    methods: tuple[str, ...] = METHODS,
    seed: int = 0,
    copy_bytes: int = 256 * 2**20,
) -> BenchResult:
    """Race the ``methods`` reading ``path`` in the same blocks, in interleaved rounds.

    Each of ``repeats`` rounds (default 7, 3 in quick mode) runs every method once and a
    ``copy_bytes`` memory copy (the reference) once. ``pattern``: "sequential" or "random"
    (every block once, shuffled). ``cache``: "warm" (one untimed round first) or "cold" (the
    file is evicted before every call). ``madvise`` applies to the methods that map the file:
    "random", "sequential", "willneed" or "populate" (MAP_POPULATE, which numpy.memmap cannot
    do). ``methods`` may add ``EXTRA_METHODS``. Returns the table, a ``BenchResult``.
    """
    path = Path(path)
    if pattern not in ("sequential", "random"):
        raise ValueError(f"pattern must be 'sequential' or 'random', got {pattern!r}")
    if cache not in ("cold", "warm"):
        raise ValueError(f"cache must be 'cold' or 'warm', got {cache!r}")
    if madvise not in _MADVICE:
        raise ValueError(f"madvise must be one of {list(_MADVICE)}, got {madvise!r}")
    unknown = set(methods) - set(METHODS + EXTRA_METHODS)
    if unknown or not methods:
        raise ValueError(
            f"unknown methods {sorted(unknown)}; choose from {METHODS + EXTRA_METHODS}"
        )
    if block_size < 1 or copy_bytes < 1 or (repeats is not None and repeats < 1):
        raise ValueError("block_size, copy_bytes and repeats must be positive")
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
    runs = {method: _runner(method, path, blocks, madvise) for method in methods}
    funcs = {method: functools.partial(run, _touch) for method, run in runs.items()}
    funcs[REFERENCE] = reference = memory_copy(copy_bytes)
    stayed = [0]  # the most pages an eviction left in the cache

    def evict(name: str) -> None:
        if name != REFERENCE:
            stayed[0] = max(stayed[0], _evict_quietly(path))

    result = compare(
        funcs,
        repeats,
        setup=evict if cache == "cold" else None,
        warmup=0 if cache == "cold" else 1,
        reference=REFERENCE,
        nbytes={**dict.fromkeys(methods, size), REFERENCE: copy_bytes},
        file=path,
        title=(
            f"{path.name}: {size / 2**20:,.0f} MiB, {pattern}, {len(blocks):,} blocks of "
            f"{size_label(block_size)}, "
            f"{cache} cache" + (f", madvise={madvise}" if madvise else "")
        ),
    )
    checksums = {method: _checksum(run) for method, run in runs.items()}
    result.rows = [dataclasses.replace(row, checksum=checksums[row.name]) for row in result]
    result.params = {
        "path": path,
        "size": size,
        "pattern": pattern,
        "block_size": block_size,
        "cache": cache,
        "madvise": madvise,
        "copy_bytes": copy_bytes,
        "copy_huge": reference.huge_fraction,
    }
    result.margin = MARGIN  # a race run again moves more than its spread: ask every round
    result.notes.append(f"{REFERENCE}: {copy_bytes / 2**20:,.0f} MiB from one array to another")
    if stayed[0]:
        result.notes.append(
            f"eviction left up to {stayed[0]:,} pages cached: the cold runs were partly warm"
        )
    if madvise == "populate" and {"numpy.memmap sum"} & set(methods):
        result.notes.append("numpy.memmap sum: numpy maps the file itself, without MAP_POPULATE")
    return result


def _checksum(run: Callable[[Callable], None]) -> int:
    crc = 0

    def sink(block, reduce: bool = False) -> None:
        nonlocal crc
        crc = (crc + zlib.crc32(block)) & 0xFFFFFFFF

    run(sink)
    return crc


def _evict_quietly(path: Path) -> int:
    """Evict the file; returns how many pages stayed (the result notes it, once).

    Where the kernel hides the file's page cache from this process the count is unknown;
    ``measure(file=...)`` then refuses the run with the reason, so 0 is never reported.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pagecache.EvictionWarning)
        return pagecache.evict(path).resident_after or 0
