"""Notebook 02's hands-on checks: map any byte range with one mapping of the pages it needs,
and hold many windows of a file with one mapping instead of one each.

``read_range(fn)``: the student's ``fn(path, offset, length)`` must return exactly those
bytes of the file through one ``mmap``, at any offset. ``mmap`` offsets must be multiples of
the allocation granularity, so the mapping has to start at the aligned offset below and the
bytes be sliced out of it. The check compares what ``fn`` returns with ``read()`` (the oracle)
at aligned, unaligned, page-crossing and tail ranges, and watches every ``mmap.mmap`` the call
makes through Python's audit event ``mmap.__new__`` (its descriptor, length and offset): from
these and this machine's page size it counts the pages each call asked the kernel to map,
beside the pages the reference (``mmlab.align.map_range``), watched the same way in the same
call, maps for the same range.

``windows(fn)``: the student's ``fn(path, n)`` must return ``n`` views, view ``i`` showing the
file's page ``i``, that stay valid while they live. One ``mmap.mmap`` per view works, but each
holds a VMA (notebook 02 §5) and a duplicated file descriptor, so a program that makes many
meets ``RLIMIT_NOFILE`` or ``vm.max_map_count`` (§6); one mapping sliced into views holds one
of each. The check counts, while the views live, the VMAs of the file in
``/proc/self/maps`` and the descriptors of it in ``/proc/self/fd``, beside the reference's
counts made in the same call, and changes the file under the views to see that they show it
(a copy would not).
"""

from __future__ import annotations

import contextlib
import gc
import math
import mmap
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mmlab.course.handson.verdict import Verdict, attempt
from mmlab.instruments import align

__all__ = ["read_range", "windows"]


def _exercise_file(name: str, nbytes: int, seed: int) -> Path:
    """A file of ``nbytes`` random bytes under data/ (as the notebooks make theirs): random, so
    a slice from the wrong place never matches by chance."""
    folder = Path("data")
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, nbytes, np.uint8).tobytes())
    return path


def _not_checkable(exercise: str, why: str) -> Verdict:
    """The verdict where this machine cannot run the reference: it judges nothing."""
    return Verdict(exercise, off=[f"not checkable here: {why}"], measured={"checkable": False})


# ------------------------------------------------------------------ watching mmap.mmap

_WATCHED: list[tuple[int, int, int]] | None = None  # (inode, length, offset) while watching
_HOOKED = False


def _audit(event: str, args: tuple) -> None:
    if event != "mmap.__new__" or _WATCHED is None:
        return
    fileno, length, _, offset = args
    if fileno == -1:  # anonymous memory, not a file
        return
    try:
        inode = os.fstat(fileno).st_ino
    except OSError:
        return
    _WATCHED.append((inode, length, offset))


def _watch(fn: Callable, *args: Any) -> tuple[Any, list[tuple[int, int, int]]]:
    """Run ``fn`` and return its ``attempt`` with the ``mmap.mmap`` calls it made: the audit
    event sees every one, however the module was imported. (An audit hook cannot be removed:
    it is added once and records only inside this call.)"""
    global _WATCHED, _HOOKED
    if not _HOOKED:
        sys.addaudithook(_audit)
        _HOOKED = True
    _WATCHED = []
    try:
        tried = attempt(fn, *args)
        return tried, _WATCHED
    finally:
        _WATCHED = None


def _pages_mapped(calls: list[tuple[int, int, int]], inode: int, size: int) -> list[int]:
    """The pages each mapping of the file (``inode``, ``size`` bytes) asked the kernel for:
    it maps whole pages from the offset, and length 0 means up to the end of the file."""
    page = align.page_size()
    return [
        math.ceil((length or size - offset) / page) for ino, length, offset in calls if ino == inode
    ]


# ------------------------------------------------------------------ read_range


def _ranges(size: int) -> list[tuple[int, int]]:
    """Aligned, unaligned, page- and granularity-crossing, tail and random ranges."""
    page, grain = align.page_size(), align.allocation_granularity()
    fixed = [
        (0, 16), (1, 16), (100, 100), (page - 1, 2), (page, page), (page + 1, page),
        (6000, 16), (grain - 3, 10), (2 * grain + 7, grain), (size - 1000, 1000),
        (size - 5, 5), (size - 1, 1), (0, size),
    ]  # fmt: skip
    rng = np.random.default_rng(2)
    starts = rng.integers(0, size - 1, 8)
    random = [(int(s), int(rng.integers(1, min(3 * page, size - s) + 1))) for s in starts]
    return fixed + random


def _as_bytes(result: Any) -> bytes | None:
    try:
        return bytes(result)
    except (TypeError, ValueError, BufferError):  # None, or a view of a closed mapping
        return None


def read_range(fn: Callable) -> Verdict:
    """Check ``fn(path, offset, length)``: the bytes of ``read()``, through one mapping of no
    more pages than the range needs (as many as ``align.map_range`` maps for it)."""
    page, grain = align.page_size(), align.allocation_granularity()
    size = 3 * grain + 1000  # three granules and a partial page: a tail to read
    path = _exercise_file("handson_read_range.bin", size, seed=1)
    content, inode = path.read_bytes(), path.stat().st_ino
    wrong, errors, calls_off, pages_off = [], [], [], []
    pages_yours = pages_ref = 0
    ranges = _ranges(size)
    for offset, length in ranges:
        # the reference first, watched the same way: the pages it maps for this range
        ref, ref_calls = _watch(
            lambda p, o, n: bytes(align.map_range(p, o, n)), path, offset, length
        )
        if not ref.ok or ref.result != content[offset : offset + length]:
            why = (ref.error or "bytes that differ from read()'s").splitlines()[-1]
            return _not_checkable("read_range", f"align.map_range at offset {offset:,}: {why}")
        ref_pages = sum(_pages_mapped(ref_calls, inode, size))
        tried, calls = _watch(fn, path, offset, length)
        where = f"offset {offset:,}, length {length:,}"
        if not tried.ok:
            errors.append(f"{where}: {tried.error.splitlines()[-1]}")
            continue
        got = _as_bytes(tried.result)
        if got != content[offset : offset + length]:
            if got is None:
                shown = f"{type(tried.result).__name__}, not bytes"
            elif len(got) != length:
                shown = f"{len(got):,} bytes, not {length:,}"
            else:
                shown = "bytes that differ from read()'s"
            wrong.append(f"{where}: got {shown}")
        mapped = _pages_mapped(calls, inode, size)
        if len(mapped) != 1:
            calls_off.append(f"{where}: {len(mapped)} mmap.mmap calls of the file")
        elif mapped[0] > ref_pages:
            start = align.align_down(offset)
            pages_off.append(
                f"{where}: {mapped[0]:,} pages mapped; the range needs {ref_pages:,} "
                f"(from align_down({offset:,}) = {start:,} to {offset + length:,})"
            )
        pages_yours += sum(mapped)
        pages_ref += ref_pages
    right, off = [], []
    n = len(ranges)
    kinds = "aligned, unaligned, across pages, the file's partial last page"
    if not errors and not wrong:
        right.append(f"the bytes equal read()'s at all {n} ranges ({kinds})")
    off += [f"raised at {e}" for e in errors[:3]] + [f"wrong bytes at {w}" for w in wrong[:3]]
    if not errors and not calls_off:
        right.append(f"one mmap.mmap of the file per call, at all {n} ranges")
    off += calls_off[:2]
    if not errors and not wrong and not calls_off and not pages_off:
        right.append(
            f"{pages_yours:,} pages of {page:,} bytes mapped in all, no more than the reference "
            f"(align.map_range) maps for the same ranges: {pages_ref:,}"
        )
    off += pages_off[:3]
    if errors and any("Errno 22" in e or "EINVAL" in e for e in errors):
        hint = (
            f"mmap refuses offsets that are not multiples of the allocation granularity "
            f"({grain:,} here): map from align_down(offset) and slice out what you need"
        )
    elif calls_off:
        hint = "make exactly one mmap.mmap of the file per call (read() is not a mapping)"
    elif pages_off:
        hint = (
            "map only from the aligned offset below `offset` to `offset + length`: the kernel "
            "maps whole pages from there, so a longer mapping takes pages the range never uses"
        )
    else:
        hint = "slice [offset - start, offset - start + length) out of the mapping made at start"
    measured = dict(ranges=n, errors=len(errors), wrong=len(wrong), pages=pages_yours,
                    reference_pages=pages_ref, page_size=page, granularity=grain)  # fmt: skip
    return Verdict("read_range", right, off, hint, measured)


# ------------------------------------------------------------------ windows


def _held(path: Path) -> tuple[int, int] | None:
    """VMAs of ``path`` in /proc/self/maps and descriptors of it in /proc/self/fd (None
    where there is no /proc: not Linux)."""
    maps, fds = Path("/proc/self/maps"), Path("/proc/self/fd")
    if not maps.exists():
        return None
    inode, target = path.stat().st_ino, os.path.realpath(path)
    vmas = 0
    for line in maps.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and int(fields[4]) == inode and fields[5] == target:
            vmas += 1
    open_fds = 0
    for name in os.listdir(fds):
        with contextlib.suppress(OSError):  # the descriptor listdir itself used, closed since
            open_fds += os.readlink(fds / name) == target
    return vmas, open_fds


def _reference_windows(path: str | os.PathLike[str], n: int) -> list[memoryview]:
    page = mmap.PAGESIZE
    with open(path, "rb") as f:
        whole = memoryview(mmap.mmap(f.fileno(), n * page, access=mmap.ACCESS_READ))
    return [whole[i * page : (i + 1) * page] for i in range(n)]


def _windows_room() -> int:
    """Windows to ask for: 1,000, or fewer where the open-file limit would stop one mapping
    per window first (so that the way with one mapping each is measured, not refused)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError):
        return 1000
    if soft == resource.RLIM_INFINITY:
        return 1000
    open_now = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 64
    return max(16, min(1000, (soft - open_now) // 2))


def _run_windows(fn: Callable, path: Path, n: int) -> dict[str, Any]:
    """Run ``fn(path, n)``; while its views live, count what they hold and check they show the
    file's pages, then change two pages of the file and check the views show the change."""
    page = mmap.PAGESIZE
    start = time.perf_counter()
    tried = attempt(fn, path, n)
    seconds = time.perf_counter() - start
    found: dict[str, Any] = {"error": tried.error, "seconds": seconds}
    if tried.ok:
        views = tried.result
        found["held"] = _held(path)
        try:
            count = len(views)
            shown = [bytes(views[i]) for i in (0, n // 2, n - 1)] if count == n else []
        except (TypeError, ValueError, BufferError) as error:
            found["error"] = f"its result cannot be read as views: {error}"
            return found
        found["count"] = count
        with open(path, "r+b") as f:
            expected = [os.pread(f.fileno(), page, i * page) for i in (0, n // 2, n - 1)]
            found["pages_right"] = count == n and shown == expected
            run = time.perf_counter_ns()  # new bytes each run: an earlier run's never match
            marks = {i: f"page {i} changed at {run}".encode() for i in (n // 2, n - 1)}
            for i, mark in marks.items():
                os.pwrite(f.fileno(), mark, i * page)
        try:
            found["sees_file"] = count == n and all(
                bytes(views[i][: len(mark)]) == mark for i, mark in marks.items()
            )
        except (TypeError, ValueError, IndexError) as error:  # items that are not views
            found["error"] = f"its views cannot be read as bytes: {error}"
            found["sees_file"] = False
        del views, tried
    gc.collect()  # the views hold their mappings: drop them before the next run
    return found


def windows(fn: Callable) -> Verdict:
    """Check ``fn(path, n)``: ``n`` views of the file's pages that hold no more VMAs and file
    descriptors of it than one mapping sliced into views (the reference, run alongside)."""
    if not os.path.exists("/proc/self/maps"):
        return Verdict("windows", off=["not available here: counting VMAs needs Linux's /proc"])
    n, page = _windows_room(), mmap.PAGESIZE
    path = _exercise_file("handson_windows.bin", n * page, seed=3)
    runs = {"reference": [], "yours": []}
    for _ in range(2):  # interleaved: reference, yours, reference, yours
        runs["reference"].append(_run_windows(_reference_windows, path, n))
        runs["yours"].append(_run_windows(fn, path, n))
        path.write_bytes(np.random.default_rng(3).integers(0, 256, n * page, np.uint8).tobytes())
    ref, yours = runs["reference"], runs["yours"]
    broken = next((r for r in ref if r["error"] is not None or not r["sees_file"]), None)
    if broken is not None:
        why = (
            f"the reference failed: {broken['error'].splitlines()[-1]}"
            if broken["error"]
            else "on this file system, bytes written to the file are not seen through a "
            "mapping of it (FUSE direct I/O, some 9p or virtiofs cache modes)"
        )
        return _not_checkable("windows", why)
    ref_vmas = max(r["held"][0] for r in ref)
    ref_fds = max(r["held"][1] for r in ref)
    ref_ms = 1e3 * float(np.median([r["seconds"] for r in ref]))
    right, off = [], []
    failed = [y for y in yours if y["error"]]
    measured: dict[str, Any] = dict(n=n, reference_vmas=ref_vmas, reference_fds=ref_fds,
                                    reference_ms=ref_ms)  # fmt: skip
    if failed:
        off.append(f"your function failed: {failed[0]['error'].splitlines()[-1]}")
        hint = "return a list of n memoryviews, one per page of the file"
        return Verdict("windows", right, off, hint, measured)
    vmas = max(y["held"][0] for y in yours)
    fds = max(y["held"][1] for y in yours)
    ms = 1e3 * float(np.median([y["seconds"] for y in yours]))
    measured.update(vmas=vmas, fds=fds, ms=ms)
    if all(y["count"] == n and y["pages_right"] for y in yours):
        right.append(f"{n:,} views, view i showing the file's page i")
    else:
        off.append(f"expected {n:,} views, view i showing page i; got {yours[0]['count']:,} "
                   "that do not")  # fmt: skip
    if all(y["sees_file"] for y in yours):
        right.append("they show the file as it changes: windows of it, not copies")
    else:
        off.append("after the file changed, your views still showed the old bytes: copies")
    held = (f"held while your views lived: VMAs of the file {vmas:,}, descriptors of it "
            f"{fds:,} (built in {ms:.3g} ms); one mapping sliced into views: {ref_vmas:,} and "
            f"{ref_fds:,} (in {ref_ms:.3g} ms)")  # fmt: skip
    (right if vmas <= ref_vmas and fds <= ref_fds else off).append(held)
    hint = (
        "one mapping can serve every view: slicing a memoryview gives a view of the same "
        "memory, not a copy, and it keeps the mapping alive"
    )
    return Verdict("windows", right, off, hint, measured)
