"""Notebook 06's hands-on checks: keep workers' private memory flat; share an array's pages.

Forked DataLoader workers copy every page of Python objects they read, because reading an
object writes its reference count (copy-on-read). ``flat_workers`` runs forked workers over
what the student's ``build_dataset(smiles)`` returns, over the naive list itself and over this
module's reference (the strings' bytes in one array plus an offsets array: no refcount per
string), interleaved, and reads each worker's private dirty memory (``smaps_rollup``) before
and after the epoch; every item is checked against its source string in the worker itself.

A process that reads a file into its memory holds a private copy; one that maps it shares the
page cache's pages. ``shared_array`` forks children that each call the student's
``load_shared(path)`` on a ``.npy`` file and read every byte: a private copy grows each
child's USS by the array's size; shared pages leave it flat, and the children's PSS sums to
the array once. A child that raises, exits or hangs gets a verdict, and is killed.

Tolerances come from this run: the reference's own spread between its workers and runs, the
naive arm's growth, and the page size (the unit the kernel copies).
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import multiprocessing
import os
import tempfile
import time
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


def _size(size: float) -> str:
    """A size with no sign: a spread or a tolerance, not a change."""
    return f"{max(size, 0.0) / MiB:.1f} MiB"


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
    # Every arm runs with gc.freeze() (run_epoch freezes just before the workers start and
    # unfreezes after): the cyclic collector's writes (incremental from Python 3.14) would
    # copy pages in proportion to what an arm allocates, noise beside the refcount writes
    # this exercise is about. A student's own gc.freeze() is undone here, and changes nothing.
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

    def epoch(data, label: str):
        return workers.run_epoch(_Verified(data, crcs), label, workers=2, freeze=True)

    first = epoch(reference, "reference")
    naive = epoch(smiles, "naive list")
    mine = attempt(epoch, dataset, "yours")
    second = epoch(reference, "reference")
    if not mine.ok:
        return Verdict(name, off=[f"the workers failed over your dataset:\n{mine.error}"])
    ref = _growths(first) + _growths(second)
    ref_mean, spread = float(np.mean(ref)), float(np.ptp(ref))
    naive_extra = float(np.mean(_growths(naive))) - ref_mean
    yours_extra = float(np.mean(_growths(mine.result))) - ref_mean
    # half the naive copies: a copied dataset grows by about all of them, a flat one by the
    # few MiB its returned items allocate (more on a busy machine than the reference's)
    tolerance = max(2 * spread, naive_extra / 2)
    measured = {
        "strings": len(smiles),
        "objects_bytes": _objects_bytes(smiles),
        "reference_growth": ref_mean,
        "reference_spread": spread,
        "naive_extra": naive_extra,
        "yours_extra": yours_extra,
        "tolerance": tolerance,
        "gc_frozen": froze,  # the student called gc.freeze() (every arm runs frozen anyway)
    }
    said = (
        f"per worker during the epoch, private dirty memory grew: reference {_mib(ref_mean)} "
        f"(its workers and runs {_size(spread)} apart), naive list "
        f"{_mib(ref_mean + naive_extra)}, yours {_mib(ref_mean + yours_extra)}"
    )
    right, off = [f"all {len(smiles):,} items the workers returned equal the source strings"], []
    if naive_extra < measured["objects_bytes"] / 2:
        off.append(
            f"{said}: the naive list copied under half its {_mib(measured['objects_bytes'])} of "
            "string objects, so this run cannot tell copies from noise: run the check again"
        )
    elif yours_extra <= tolerance:
        right.append(
            f"{said}: yours stayed within {_size(tolerance)} of the reference, while each naive "
            f"worker copied {_pages(naive_extra)}"
        )
    else:
        off.append(
            f"{said}: yours copied {_pages(yours_extra)} per worker more than the reference, "
            f"over the {_size(tolerance)} allowed (the larger of twice the reference's spread "
            "and half the naive list's copies)"
        )
    return Verdict(name, right=right, off=off, hint=_HINT_FLAT, measured=measured)


_HINT_FLAT = (
    "each str in a list is an object with a reference count; a worker that returns it writes "
    "that count, and the kernel copies the whole page. gc.freeze() stops the collector's "
    "writes, not the refcount's. What could hold every string's bytes without one object per "
    "string, the way section 3's NumPy arm holds the records?"
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
    gc.disable()  # collecting would copy (USS up) or free (PSS down) the parent's objects
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


class ChildFailure(RuntimeError):
    """A child exited, or did not answer in time, before it had read the array."""


def _wait_for(conn, proc, seconds: float):
    """The child's answer on ``conn``, or ChildFailure if it exits or loops past ``seconds``."""
    try:
        if conn.poll(seconds):
            return conn.recv()
    except EOFError:  # the child exited (os._exit, a crash) before it sent its answer
        pass
    proc.join(timeout=1)
    if proc.is_alive():
        raise ChildFailure(f"a child did not return within {seconds:.0f} s (it loops or blocks)")
    raise ChildFailure(f"a child exited (code {proc.exitcode}) before returning an array")


def _children(load: Callable, path: Path, count: int, seconds: float) -> tuple[list, list[dict]]:
    """Fork ``count`` children that each run ``load(path)`` and read it all; their answers and
    their memory growth (``workers.private_memory`` after minus before). Raises ChildFailure if
    a child exits or does not answer within ``seconds``; no child outlives the call."""
    from mmlab.course.workers import private_memory

    context = multiprocessing.get_context("fork")
    pipes, procs = [], []
    gc.collect()  # no garbage of this process for the children to inherit and free
    try:
        for _ in range(count):
            mine, theirs = context.Pipe()
            proc = context.Process(target=_child, args=(load, str(path), theirs), daemon=True)
            proc.start()
            theirs.close()  # so that recv sees EOF once the child has gone
            pipes.append(mine)
            procs.append(proc)
        before = [private_memory(p.pid) for p in procs]
        for conn in pipes:
            conn.send("go")
        answers = [_wait_for(conn, p, seconds) for conn, p in zip(pipes, procs, strict=True)]
        after = [private_memory(p.pid) for p in procs]  # all have read the array: measure now
        for conn in pipes:
            with contextlib.suppress(OSError):  # a child that died after answering
                conn.send("stop")
        for proc in procs:
            proc.join(timeout=5)
    finally:
        for proc in procs:
            if proc.is_alive():  # a child that loops or ignores "stop": end it, do not wait
                proc.kill()
                proc.join(timeout=5)
        for conn in pipes:
            conn.close()
    growth = [{k: a[k] - b[k] for k in a} for a, b in zip(after, before, strict=True)]
    return answers, growth


_MIN_WAIT = 10.0  # seconds: a student's child answering later is judged stuck


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
        arms, failed = {}, None
        # The children of this module's own loads answer in well under a second; a child of
        # the student's gets ten times the naive arm's time (at least _MIN_WAIT), then a verdict.
        seconds = 60.0
        for label, load in (
            ("reference", _reference_load),
            ("naive", np.load),
            ("yours", load_shared),
            ("reference again", _reference_load),
        ):
            began = time.perf_counter()
            try:
                arms[label] = _children(load, path, count, seconds)
            except ChildFailure as failure:
                if label != "yours":
                    raise
                failed = str(failure)
                break
            if label == "naive":
                seconds = max(_MIN_WAIT, 10 * (time.perf_counter() - began))
    if failed:
        return Verdict(name, off=[f"load_shared: {failed}"], hint=_HINT_SHARE)
    for answer in arms["yours"][0]:
        if answer[0] == "error":
            failed = f"load_shared raised in a child:\n{answer[1]}"
        elif tuple(answer) != expected:
            failed = (
                f"a child got an array of shape {answer[0]} and dtype {answer[1]} whose bytes "
                f"{'match' if answer[2] == expected[2] else 'differ from'} the file's "
                f"({expected[0]}, {expected[1]})"
            )
        if failed:
            return Verdict(name, off=[failed], hint=_HINT_SHARE)
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
        f"{count} children each read a {size / MiB:.0f} MiB array; USS per child grew: "
        f"this machine's reference {_mib(ref_mean)} (its children and runs {_size(spread)} "
        f"apart), np.load(path) {_mib(ref_mean + naive_extra)}, yours "
        f"{_mib(ref_mean + yours_extra)}; the children's PSS, summed, grew: reference "
        f"{_mib(pss['reference'])}, yours {_mib(pss['yours'])}"
    )
    # Shared pages: the summed PSS holds the array once, as the reference's does (each
    # child's own growth is within the tolerance of the reference's).
    counted_once = pss["yours"] <= pss["reference"] + count * tolerance
    right, off = [f"every child read the file's {size / MiB:.0f} MiB array, byte for byte"], []
    if naive_extra < size / 2:
        off.append(
            f"{said}: np.load did not grow each child by the array's size, so this run cannot "
            "tell shared from private pages: run the check again"
        )
    elif yours_extra <= tolerance:
        right.append(
            f"{said}: each child's USS stayed within {_size(tolerance)} of the reference's: "
            "the children share the array's pages"
            + (
                f", and their summed PSS counts them once ({_mib(pss['yours'])} for a "
                f"{size / MiB:.0f} MiB array and {count} children)"
                if counted_once
                else ", though their summed PSS grew more than the reference's"
            )
        )
    else:
        off.append(
            f"{said}: each child holds {_pages(yours_extra)} of its own more than with the "
            f"reference, over the {_size(tolerance)} allowed: a private copy of the array"
        )
    return Verdict(name, right=right, off=off, hint=_HINT_SHARE, measured=measured)


_HINT_SHARE = (
    "reading a file into an array (np.load, np.fromfile, .copy()) puts a private copy in each "
    "process's anonymous memory; mapping it (np.load's mmap_mode, np.memmap) makes every "
    "process map the same page-cache pages, which count in no child's USS once two map them."
)
