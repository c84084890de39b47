"""Notebook 06's hands-on checks: keep workers' private memory flat; share an array's pages.

Forked DataLoader workers copy every page of Python objects they read, because reading an
object writes its reference count (copy-on-read). ``flat_workers`` gives the student's
``build_dataset(smiles)`` a Python list of SMILES strings and runs forked workers over what
it returns, over the naive list itself, and over this module's reference (the strings packed
into one bytes array plus an offsets array: two objects, no refcount per string), interleaved
in one call. Each worker's private dirty memory (anonymous pages only it maps that were
written: ``smaps_rollup``) is read before it reads an item and after the epoch; every item a
worker returns is checked against the source string in the worker itself.

A process that reads a file into its own memory holds a private copy; one that maps it shares
the page cache's pages with every other process mapping them. ``shared_array`` forks children
that each call the student's ``load_shared(path)`` on a ``.npy`` file and read every byte of
the array it returns; their USS (pages only one process maps) and PSS (each page split between
its sharers) show whether each child holds its own copy (USS grows by the array's size) or
all share one (USS stays flat, the children's PSS adds up to the array once).

Tolerances come from this run: the reference's own spread between its workers and runs, the
naive arm's growth, and the page size (the unit the kernel copies).
"""

from __future__ import annotations

import gc
import mmap
import multiprocessing
import os
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmlab.course.handson.verdict import Verdict, attempt

__all__ = ["PackedStrings", "flat_workers", "shared_array"]

MiB = 2**20
_PAGE = mmap.PAGESIZE
_HAS_SMAPS_ROLLUP = os.path.exists("/proc/self/smaps_rollup")
_NOT_HERE = (
    "not available here: a process's USS and PSS come from /proc/PID/smaps_rollup, which "
    "this system does not have (Linux has it from 4.14; macOS and Windows do not)"
)


def _quick() -> bool:
    return os.environ.get("MMLAB_QUICK") == "1"


def _mib(size: float) -> str:
    return f"{0.0 if abs(size) < 0.05 * MiB else size / MiB:+.1f} MiB"


def _pages(size: float) -> str:
    return f"{size / _PAGE:,.0f} pages of {_PAGE // 1024} KiB"


# -- flat_workers: a Python list of SMILES under forked DataLoader workers --------------------


class PackedStrings:
    """Strings as one ``uint8`` array of their UTF-8 bytes and an ``int64`` array of offsets:
    ``self[i]`` builds a new ``str`` from its bytes, so reading writes no shared refcount."""

    def __init__(self, strings: list[str]) -> None:
        encoded = [s.encode() for s in strings]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self.offsets[1:])
        self.heap = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.heap[self.offsets[i] : self.offsets[i + 1]].tobytes().decode()


class WrongItemError(ValueError):
    """A dataset returned an item that is not the source's string at that index."""


class _Verified:
    """Wraps a dataset: each item, in the worker, is checked against its source string's CRC
    (a flat array, so checking copies nothing), and an item that differs raises."""

    def __init__(self, dataset, crcs: np.ndarray) -> None:
        self.dataset, self.crcs = dataset, crcs

    def __len__(self) -> int:
        return len(self.crcs)

    def __getitem__(self, i: int):
        item = self.dataset[i]
        if not isinstance(item, str) or zlib.crc32(item.encode()) != self.crcs[i]:
            raise WrongItemError(f"item {i} is {item!r}, not the source's SMILES string {i}")
        return item


def _smiles() -> list[str]:
    from mmlab import qm9

    limit = 100_000 if _quick() else None  # None: all of QM9, 130,831 strings
    return [smiles for smiles, _ in qm9.records("qm9pack", limit=limit)]


def _growths(run) -> list[float]:
    return [
        e["private_dirty"] - s["private_dirty"] for s, e in zip(run.start, run.end, strict=True)
    ]


def flat_workers(build_dataset: Callable) -> Verdict:
    """Judge ``build_dataset(smiles) -> dataset`` (``dataset[i] == smiles[i]``): do forked
    workers' private dirty pages stay as flat over it as over the reference, while the naive
    list's grow, in one interleaved run (reference, naive, student's, reference)?"""
    from mmlab.course import workers

    name = "flat_workers"
    if not _HAS_SMAPS_ROLLUP:
        return Verdict(name, off=[_NOT_HERE], hint=_HINT_FLAT)
    smiles = _smiles()
    frozen_before = gc.get_freeze_count()
    built = attempt(build_dataset, list(smiles))
    # A gc.freeze() in the student's code holds for their arm only: run_epoch freezes again
    # just before their workers start, and unfreezes after.
    froze = gc.get_freeze_count() > frozen_before
    if froze:
        gc.unfreeze()
    if not built.ok:
        return Verdict(name, off=[f"build_dataset raised:\n{built.error}"], hint=_HINT_FLAT)
    dataset = built.result
    problem = _wrong_dataset(dataset, smiles)
    if problem:
        return Verdict(name, off=[problem], hint=_HINT_FLAT)
    crcs = np.array([zlib.crc32(s.encode()) for s in smiles], dtype=np.uint32)
    reference = PackedStrings(smiles)

    def epoch(data, label: str, freeze: bool = False):
        return workers.run_epoch(_Verified(data, crcs), label, workers=2, freeze=freeze)

    first = epoch(reference, "reference")
    naive = epoch(smiles, "naive list")
    mine = attempt(epoch, dataset, "yours", freeze=froze)
    second = epoch(reference, "reference")
    if not mine.ok:
        return Verdict(name, off=[f"the workers failed over your dataset:\n{mine.error}"])
    ref = _growths(first) + _growths(second)
    ref_mean, spread = float(np.mean(ref)), float(np.ptp(ref))
    naive_extra = float(np.mean(_growths(naive))) - ref_mean
    yours_extra = float(np.mean(_growths(mine.result))) - ref_mean
    tolerance = max(2 * spread, naive_extra / 4)
    measured = {
        "strings": len(smiles),
        "objects_bytes": _objects_bytes(smiles),
        "reference_growth": ref_mean,
        "reference_spread": spread,
        "naive_extra": naive_extra,
        "yours_extra": yours_extra,
        "tolerance": tolerance,
        "gc_frozen": froze,  # the student's gc.freeze() held for their workers' fork
    }
    said = (
        f"per worker, private dirty memory grew {_mib(ref_mean)} over the reference (offsets + "
        f"bytes; {_mib(spread)} between its workers and runs), {_mib(ref_mean + naive_extra)} "
        f"over the naive list, {_mib(ref_mean + yours_extra)} over yours"
    )
    right, off = [f"all {len(smiles):,} items the workers returned equal the source strings"], []
    if naive_extra < measured["objects_bytes"] / 2:
        off.append(
            f"{said}: the naive list copied under half its {_mib(measured['objects_bytes'])} of "
            "string objects, so this run cannot tell copies from noise: run the check again"
        )
    elif yours_extra <= tolerance:
        right.append(
            f"{said}: yours stayed within {_mib(tolerance)} of the reference, while each naive "
            f"worker copied {_pages(naive_extra)}"
        )
    else:
        off.append(
            f"{said}: yours copied {_pages(yours_extra)} per worker beyond the reference, over "
            f"the {_mib(tolerance)} allowed (the larger of twice the reference's spread and a "
            "quarter of the naive list's copies)"
        )
    return Verdict(name, right=right, off=off, hint=_HINT_FLAT, measured=measured)


_HINT_FLAT = (
    "each str in a list is an object with a reference count; a worker that returns it writes "
    "that count, and the kernel copies the whole page. gc.freeze() stops the collector's "
    "writes, not the refcount's. Keep the strings' bytes in one array (np.frombuffer of the "
    "joined UTF-8 bytes, with an offsets array) and build each str on demand in __getitem__."
)


def _wrong_dataset(dataset, smiles: list[str]) -> str | None:
    """Why ``dataset`` cannot stand for ``smiles`` (checked in this process), or None."""
    try:
        size = len(dataset)
        if size != len(smiles):
            return f"len(dataset) is {size:,}; the list has {len(smiles):,} strings"
        for i in (0, len(smiles) // 2, len(smiles) - 1):
            if dataset[i] != smiles[i]:
                return f"dataset[{i}] is {dataset[i]!r}, not {smiles[i]!r}"
    except Exception as error:  # the student's dataset may raise anything: report it
        return f"your dataset does not behave like a list of the strings: {error!r}"
    return None


def _objects_bytes(strings: list[str]) -> int:
    import sys

    return sys.getsizeof(strings) + sum(sys.getsizeof(s) for s in strings)


# -- shared_array: children that read one array, privately or through shared pages ----------


def _child(load: Callable, path: str, conn) -> None:
    """In a forked child: wait for "go", load the array and read every byte of it (a CRC),
    report its shape, dtype and CRC (or the error), then hold it until "stop"."""
    conn.recv()
    loaded = attempt(load, path)
    outcome = attempt(_read_all, loaded.result) if loaded.ok else loaded
    conn.send(outcome.result if outcome.ok else ("error", outcome.error))
    conn.recv()  # holds the array (and any mapping behind it) until measured
    del loaded


def _read_all(array) -> tuple:
    array = np.asarray(array)
    whole = np.ascontiguousarray(array)
    return array.shape, str(array.dtype), zlib.crc32(memoryview(whole).cast("B"))


def _children(load: Callable, path: Path, count: int) -> tuple[list, list[dict]]:
    """Fork ``count`` children that each run ``load(path)`` and read it all; their answers and
    their memory growth (``workers.private_memory`` after minus before)."""
    from mmlab.course.workers import private_memory

    context = multiprocessing.get_context("fork")
    pipes, procs = [], []
    for _ in range(count):
        mine, theirs = context.Pipe()
        proc = context.Process(target=_child, args=(load, str(path), theirs), daemon=True)
        proc.start()
        pipes.append(mine)
        procs.append(proc)
    try:
        before = [private_memory(p.pid) for p in procs]
        for conn in pipes:
            conn.send("go")
        answers = [conn.recv() for conn in pipes]  # all have read the array: measure now
        after = [private_memory(p.pid) for p in procs]
        for conn in pipes:
            conn.send("stop")
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    growth = [{k: a[k] - b[k] for k in a} for a, b in zip(after, before, strict=True)]
    return answers, growth


def _reference_load(path: str) -> np.ndarray:
    return np.load(path, mmap_mode="r")


def shared_array(load_shared: Callable) -> Verdict:
    """Judge ``load_shared(path) -> array`` of a ``.npy`` file: two forked children each load
    the array and read all of it; does each child's USS stay flat (the pages shared, PSS
    summing to the array once) as with the reference, where ``np.load`` grows it by the
    array's size? Run interleaved: reference, naive ``np.load``, student's, reference."""
    name = "shared_array"
    if not _HAS_SMAPS_ROLLUP:
        return Verdict(name, off=[_NOT_HERE], hint=_HINT_SHARE)
    size = (16 if _quick() else 64) * MiB
    values = np.random.default_rng(6).standard_normal(size // 8)
    expected = (values.shape, str(values.dtype), zlib.crc32(memoryview(values).cast("B")))
    count = 2
    Path("data").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir="data") as folder:
        path = Path(folder) / "shared.npy"
        np.save(path, values)
        del values
        arms = {}
        for label, load in (
            ("reference", _reference_load),
            ("naive", np.load),
            ("yours", load_shared),
            ("reference again", _reference_load),
        ):
            arms[label] = _children(load, path, count)
    answers = arms["yours"][0]
    for answer in answers:
        if answer and answer[0] == "error":
            return Verdict(
                name, off=[f"load_shared raised in a child:\n{answer[1]}"], hint=_HINT_SHARE
            )
        if tuple(answer) != expected:
            return Verdict(
                name,
                off=[
                    f"a child got an array of shape {answer[0]} and dtype {answer[1]} whose "
                    f"bytes {'match' if answer[2] == expected[2] else 'differ from'} the file's "
                    f"({expected[0]}, {expected[1]})"
                ],
                hint=_HINT_SHARE,
            )
    uss = {k: [g["uss"] for g in arm[1]] for k, arm in arms.items()}
    pss = {
        k: sum(g["pss_anon"] + g["pss_file"] + g["pss_shmem"] for g in arm[1])
        for k, arm in arms.items()
    }
    ref = uss["reference"] + uss["reference again"]
    ref_mean, spread = float(np.mean(ref)), float(np.ptp(ref))
    naive_extra = float(np.mean(uss["naive"])) - ref_mean
    yours_extra = float(np.mean(uss["yours"])) - ref_mean
    tolerance = max(2 * spread, naive_extra / 4)
    measured = {
        "array_bytes": size,
        "children": count,
        "reference_uss_growth": ref_mean,
        "reference_spread": spread,
        "naive_uss_extra": naive_extra,
        "yours_uss_extra": yours_extra,
        "tolerance": tolerance,
        **{f"{k.replace(' ', '_')}_pss_sum": v for k, v in pss.items()},
    }
    said = (
        f"{count} children each read a {size / MiB:.0f} MiB array; USS per child grew "
        f"{_mib(ref_mean)} with the reference (np.load(path, mmap_mode='r'); spread "
        f"{_mib(spread)}), {_mib(ref_mean + naive_extra)} with np.load(path), "
        f"{_mib(ref_mean + yours_extra)} with yours; the children's PSS grew, summed: "
        f"{_mib(pss['reference'])} with the reference, {_mib(pss['yours'])} with yours"
    )
    right, off = [f"every child read the file's {size / MiB:.0f} MiB array, byte for byte"], []
    if naive_extra < size / 2:
        off.append(
            f"{said}: np.load did not grow each child by the array's size, so this run cannot "
            "tell shared from private pages: run the check again"
        )
    elif yours_extra <= tolerance:
        right.append(
            f"{said}: each child's USS stayed within {_mib(tolerance)} of the reference's: the "
            f"children share the array's pages, and their summed PSS counts them once "
            f"({_mib(pss['yours'])} for a {size / MiB:.0f} MiB array and {count} children)"
        )
    else:
        off.append(
            f"{said}: each child holds {_pages(yours_extra)} of its own beyond the reference, "
            f"over the {_mib(tolerance)} allowed: a private copy of the array"
        )
    return Verdict(name, right=right, off=off, hint=_HINT_SHARE, measured=measured)


_HINT_SHARE = (
    "reading a file into an array (np.load, np.fromfile, .copy()) puts a private copy in each "
    "process's anonymous memory; mapping it (np.load's mmap_mode, np.memmap) makes every "
    "process map the same page-cache pages, which count in no child's USS once two map them."
)
