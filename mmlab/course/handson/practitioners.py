"""Notebook 09's hands-on checks: a memmap dataset spawned workers share; a batch in one call.

A ``DataLoader`` started by ``spawn`` or ``forkserver`` (the default on macOS and Windows, and
on Linux from Python 3.14) pickles the dataset into every worker. A ``numpy.memmap`` pickles
as a plain array: its whole data, copied into each worker's anonymous memory.
``worker_safe_memmap`` builds a ``.npy`` file of QM9's values and makes the student's dataset
class over it: are its rows the file's, does it pickle to a small fraction of the data, does
it map the file instead of reading it (``rchar``: mapping reads the header only), and after
one short epoch of two spawned workers, does each hold no more private dirty memory than the
reference's workers (interleaved: reference, yours, reference; quick mode runs the reference
once)? A class defined in a notebook cannot be imported by a spawned worker (its ``__main__``
is not the kernel's), so the check sends the class by value with cloudpickle; the object's
own state goes as plain pickle would send it.

The second check of notebook 09, ``batch_getitems`` (a batch fetched by one call), lives in
``mmlab.course.handson.batching`` and is found here too.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmlab.course.handson.batching import ReferenceBatches, batch_getitems
from mmlab.course.handson.verdict import Verdict, attempt
from mmlab.instruments.compare import quick_mode
from mmlab.instruments.facts import format_size

__all__ = ["ReferenceBatches", "ReferenceMemmapValues", "batch_getitems", "worker_safe_memmap"]

_HAS_SMAPS_ROLLUP = os.path.exists("/proc/self/smaps_rollup")
_PICKLE_SHARE = 100  # a pickle may carry at most 1/_PICKLE_SHARE of the data


def _size(size: float) -> str:
    return format_size(round(size))


def _sizes(*sizes: float) -> list[str]:
    """``sizes`` in one unit, the one ``format_size`` picks for the largest, so they compare."""
    unit = format_size(round(max(abs(s) for s in sizes))).split()[-1]
    scale = {"GiB": 2**30, "MiB": 2**20, "KiB": 2**10}.get(unit)
    if scale is None:
        return [f"{round(s):,} bytes" for s in sizes]
    return [f"{s / scale:,.1f} {unit}" for s in sizes]


# -- worker_safe_memmap: a dataset that pickles its path and maps the file in each worker ---


class ReferenceMemmapValues:
    """The reference: ``self[i]`` is row ``i`` of a ``.npy`` file, mapped on first use in
    each process; pickling sends the path only."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self._values: np.ndarray | None = None

    def _mapped(self) -> np.ndarray:
        if self._values is None:
            self._values = np.load(self.path, mmap_mode="r")
        return self._values

    def __len__(self) -> int:
        return len(self._mapped())

    def __getitem__(self, i: int) -> np.ndarray:
        return self._mapped()[i]

    def __getstate__(self) -> dict:
        return {"path": self.path, "_values": None}


def _rchar() -> int | None:
    """Bytes this thread has passed through read()-like calls (/proc/thread-self/io), or None
    where the OS does not say (not Linux): mapped pages are not counted, read() calls are."""
    try:
        with open("/proc/thread-self/io", "rb") as f:
            return int(f.readline().split()[1])  # the first line is "rchar: N"
    except (OSError, IndexError, ValueError):
        return None


def _pickled_size(obj) -> int:
    """Bytes of ``obj`` pickled as a worker would get it were its class in a module: the class
    by reference (a short token here), the rest by value (cloudpickle, so that functions
    defined in a notebook pickle too)."""
    import cloudpickle

    class Pickler(cloudpickle.Pickler):
        def persistent_id(self, o):
            return "class" if o is type(obj) else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.tell()


class _Checked:
    """What the workers get: the student's object sent by value (cloudpickle), and each row's
    CRC. A worker that finds a wrong row (or cannot unpickle the object) writes why to the
    ``report`` file and goes on: an error raised in a worker would stop the epoch while the
    other worker is still starting. An item is its index, so no row is collated."""

    def __init__(self, dataset, crcs: np.ndarray, report: str) -> None:
        self.dataset, self.crcs, self.report, self.said = dataset, crcs, report, False

    def __reduce__(self):
        import cloudpickle

        return _restore, (cloudpickle.dumps(self.dataset), self.crcs, self.report)

    def __len__(self) -> int:
        return len(self.crcs)

    def _say(self, why: str) -> None:
        if not self.said:  # once per worker is enough
            self.said = True
            with open(self.report, "a") as f:
                f.write(why + "\n")

    def __getitem__(self, i: int) -> int:
        got = attempt(_crc_of, self.dataset, i)
        if not got.ok:
            self._say(f"in a worker, dataset[{i}] raised:\n{got.error}")
        elif got.result != self.crcs[i]:
            self._say(f"in a worker, dataset[{i}] is not row {i} of the file")
        return i


def _crc_of(dataset, i: int) -> int:
    row = np.ascontiguousarray(dataset[i], dtype=np.float64)
    return zlib.crc32(memoryview(row).cast("B"))


def _restore(blob: bytes, crcs: np.ndarray, report: str) -> _Checked:
    loaded = attempt(pickle.loads, blob)  # the student's __setstate__ runs here
    checked = _Checked(loaded.result, crcs, report)
    if not loaded.ok:
        checked._say(f"unpickling your dataset in a worker raised:\n{loaded.error}")
    return checked


def _wrong_rows(dataset, values: np.ndarray) -> str | None:
    """Why ``dataset`` does not give the rows of ``values`` (checked in this process), or None."""
    rng = np.random.default_rng(9)
    picks = [0, len(values) - 1, *rng.integers(0, len(values), 64).tolist()]
    try:
        if len(dataset) != len(values):
            return f"len(dataset) is {len(dataset):,}; the file has {len(values):,} rows"
        for i in picks:
            row = np.asarray(dataset[i])
            if row.shape != values[i].shape or not np.array_equal(row, values[i]):
                return f"dataset[{i}] is {row!r:.120}, not row {i} of the file"
    except Exception as error:  # the student's class may raise anything: report it
        return f"reading rows raised {error!r}"
    return None


def _after(run) -> list[float]:
    return [float(end["private_dirty"]) for end in run.end]


def worker_safe_memmap(cls: Callable) -> Verdict:
    """Judge ``cls(path)``, a dataset of a ``.npy`` file's rows: right rows, a pickle that
    carries no data, no ``read()`` of the data, and spawned workers that hold no more private
    memory after an epoch than the reference's (reference, yours, reference)."""
    from mmlab.data import peers

    name = "worker_safe_memmap"
    try:
        import cloudpickle  # noqa: F401 (sends a notebook's class to the workers)
    except ImportError:
        return Verdict(name, off=["this check needs cloudpickle: pip install cloudpickle"])
    values = peers.qm9_columns(None)[1]  # all of QM9: its size dwarfs the workers' noise
    data = values.nbytes
    Path("data").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir="data") as folder:
        path = Path(folder) / "qm9_values.npy"
        np.save(path, values)
        read_before = _rchar()
        built = attempt(cls, str(path))
        if not built.ok:
            return Verdict(name, off=[f"{cls!r:.60}(path) raised:\n{built.error}"], hint=_HINT)
        problem = _wrong_rows(built.result, values)
        read_after = _rchar()
        if problem:
            return Verdict(name, off=[problem], hint=_HINT)
        verdict = Verdict(name, hint=_HINT, measured={"data_bytes": data})
        verdict.right.append(f"its rows equal the file's ({len(values):,} rows of 19 float64)")
        _judge_reads(verdict, read_before, read_after, data)
        _judge_pickle(verdict, built.result, data)
        if verdict.off:  # spawned workers take seconds to start: measure only what may pass
            verdict.notes.append("the spawned workers' memory is measured once the rest passes")
        else:
            _judge_workers(verdict, built.result, str(path), values)
    return verdict


def _judge_reads(verdict: Verdict, before: int | None, after: int | None, data: int) -> None:
    if before is None or after is None:
        verdict.notes.append("whether it read() the file is not known here (no /proc)")
        return
    read = after - before
    verdict.measured["read_bytes"] = read
    # Mapping reads the .npy header (a few KiB) each time it maps; reading the data is MiB.
    if read > data / 2:
        verdict.off.append(
            f"building it and reading a few rows passed {_size(read)} through read() calls, for a "
            f"{_size(data)} file: it reads the data into memory instead of mapping it"
        )


def _judge_pickle(verdict: Verdict, dataset, data: int) -> None:
    pickled = attempt(_pickled_size, dataset)
    if not pickled.ok:
        verdict.off.append(f"it cannot be pickled, so spawn cannot send it:\n{pickled.error}")
        return
    mine, ref = pickled.result, _pickled_size(ReferenceMemmapValues("data/x.npy"))
    verdict.measured.update(pickle_bytes=mine, reference_pickle_bytes=ref)
    said = (
        f"pickled for a spawned worker it weighs {_size(mine)} (the reference: "
        f"{_size(ref)}) for {_size(data)} of data"
    )
    if mine > data / _PICKLE_SHARE:
        verdict.off.append(f"{said}: each worker gets a copy of the data")
    else:
        verdict.right.append(f"{said}: it sends where the data is, not the data")


def _judge_workers(verdict: Verdict, dataset, path: str, values: np.ndarray) -> None:
    from mmlab.course import workers

    if not _HAS_SMAPS_ROLLUP:
        verdict.notes.append("the workers' memory is not measured here: no smaps_rollup")
        return
    crcs = np.array([zlib.crc32(memoryview(row).cast("B")) for row in values], dtype=np.uint32)
    batches = 3 if quick_mode() else 8

    report = Path(path).with_name("worker_report.txt")

    def epoch(data, label: str):
        checked = _Checked(data, crcs, str(report))
        return workers.run_epoch(checked, label, start_method="spawn", max_batches=batches)

    # Interleaved, so a machine that drifts drifts under both; quick mode runs the reference
    # once (a spawned worker takes seconds to start).
    first = epoch(ReferenceMemmapValues(path), "reference")
    mine = attempt(epoch, dataset, "yours")
    second = [] if quick_mode() else _after(epoch(ReferenceMemmapValues(path), "reference again"))
    if not mine.ok:
        verdict.off.append(f"one epoch of spawned workers over it failed:\n{mine.error}")
        return
    if report.exists():  # only "yours" can write it: the reference's rows are the file's
        verdict.off.append(report.read_text().strip())
        return
    ref = _after(first) + second
    ref_mean, spread = float(np.mean(ref)), float(np.ptp(ref))
    extra = float(np.mean(_after(mine.result))) - ref_mean
    data = values.nbytes
    # A pickled copy adds the whole data to each worker; a quarter of it is allowed, or twice
    # the reference workers' own spread where a machine is noisier than that.
    tolerance = max(2 * spread, data / 4)
    verdict.measured.update(
        reference_private_dirty=ref_mean, reference_spread=spread, extra=extra, tolerance=tolerance
    )
    more, apart = _sizes(max(extra, 0), spread)
    said = (
        f"after one epoch of 2 spawned workers, each held {more} of private dirty memory more "
        f"than the reference's workers (theirs {apart} apart)"
    )
    if 2 * spread >= data / 2:
        verdict.off.append(f"{said}: too noisy to tell a copy of the data: run the check again")
    elif extra <= tolerance:
        verdict.right.append(f"{said}: the workers share the file's pages")
    else:
        verdict.off.append(f"{said}: each worker holds its own copy of the data")


_HINT = (
    "a numpy.memmap pickles as a plain array, all its data. Keep only the path in the object "
    "(define __getstate__ to leave the mapped array out) and map the file with "
    'np.load(path, mmap_mode="r") on first use, in whichever process that is'
)
