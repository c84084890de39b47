"""Two traps of memory-mapped data in DataLoader workers, each beside its fix, measured.

**numpy.memmap pickles its whole data.** A dataset that opens ``np.load(mmap_mode="r")`` in
``__init__`` and keeps the arrays works under ``fork`` (the workers inherit the map), but a
spawned or forkserver worker receives the dataset pickled, and ``numpy.memmap`` pickles as
ndarray does: the bytes, not the file name. Each worker then holds a private copy of the
file. The fix keeps only the path and maps the file lazily, once per process
(``mmlab.data.peers.PeerDataset`` does it; so do ``StoreDataset`` and ``H5Dataset``).

**h5py files must be opened per worker.** An open ``h5py.File`` cannot be pickled at all
("h5py objects cannot be pickled"), so a dataset holding one fails as soon as a spawned
worker starts. Under fork it is worse, silently: the workers inherit the HDF5 library's state
and the open file's descriptor and caches, which h5py's documentation warns may cause issues
(open the file independently in each reader process). ``H5Holder`` is the trap,
``H5Dataset`` the fix (it pickles its path and opens the file on first use in each process).

``pickle_line`` and ``attempt_epoch`` show what a worker would receive, or the error as one
line; ``trap_lines`` compares a trap and its fix under the same start method.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmlab.course.loadermatrix import pickled_bytes
from mmlab.course.workers import EpochRun, run_epoch

__all__ = [
    "H5Dataset",
    "H5Holder",
    "attempt_epoch",
    "build_h5",
    "h5_outcome",
    "pickle_line",
    "trap_lines",
    "unpickled_line",
    "why_h5",
]

MiB = 2**20


def build_h5(path: str | os.PathLike[str], smiles: Sequence[str], values) -> Path:
    """An HDF5 file of the records: ``smiles`` (variable-length UTF-8 strings) and ``values``
    (``(n, fields)`` float64), as h5py writes them by default (contiguous, uncompressed)."""
    import h5py

    path = Path(path)
    with h5py.File(path, "w") as f:
        f.create_dataset("smiles", data=list(smiles), dtype=h5py.string_dtype())
        f.create_dataset("values", data=np.asarray(values, dtype=np.float64))
    return path


class H5Holder:
    """The trap: the ``h5py.File`` opened in ``__init__`` and kept, as tutorials often do."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import h5py

        self.file = h5py.File(path, "r")
        self.smiles, self.values = self.file["smiles"], self.file["values"]

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray]:
        return self.smiles[i].decode(), self.values[i].astype(np.float32)


class H5Dataset:
    """The fix: only the path is kept (and pickled); each process opens the file itself on
    its first read, so no HDF5 state crosses a fork or a pickle."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import h5py

        self.path = Path(path)
        with h5py.File(self.path, "r") as f:
            self._length = len(f["values"])
        self._file = None
        self._pid: int | None = None

    def _open(self):
        if self._file is None or self._pid != os.getpid():
            import h5py

            # a forked worker opens its own: HDF5 state inherited from the parent is unsafe
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, i: int) -> tuple[str, np.ndarray]:
        f = self._open()
        return f["smiles"][i].decode(), f["values"][i].astype(np.float32)

    def __getstate__(self) -> dict:
        return {"path": self.path, "_length": self._length, "_file": None, "_pid": None}


def pickle_line(name: str, dataset: object, file_bytes: int | None = None) -> str:
    """One line: what ``pickle.dumps(dataset)`` gives a spawned worker, beside the file's
    size; or the error it raises."""
    size = pickled_bytes(dataset)
    if isinstance(size, str):
        return f"{name}: cannot be pickled: {size}"
    beside = f" (the file: {file_bytes / MiB:.2f} MiB)" if file_bytes is not None else ""
    said = f"{size:,} bytes" if size < 2**16 else f"{size / MiB:.2f} MiB"
    return f"{name}: pickles to {said}{beside}"


def unpickled_line(array) -> str:
    """One line: what a ``numpy.memmap`` becomes after a pickle round trip (what a spawned
    worker unpickles): its type, the file behind it, and whether its bytes equal the map's."""
    import pickle

    copy = pickle.loads(pickle.dumps(array))
    same = bool(np.array_equal(copy, array))
    kind = f"{type(copy).__module__.split('.')[0]}.{type(copy).__name__}"
    where = getattr(copy, "filename", None)
    became = (
        f"a {kind} with filename None, an array in RAM"
        if where is None
        else f"a {kind} of {where}, still mapped"
    )
    travelled = " (the data travelled, the file did not)" if where is None and same else ""
    return (
        f"a numpy.memmap of {array.filename}, pickled and unpickled: {became}; "
        f"equal bytes: {same}{travelled}"
    )


def attempt_epoch(
    dataset, label: str, *, start_method: str = "spawn", max_batches: int | None = None
) -> EpochRun | str:
    """``run_epoch`` with 2 workers, or, if the DataLoader cannot start them (a dataset
    that does not pickle), the error as ``"TypeError: ..."``. The workers are started by
    this process, so a dataset that fails to pickle fails here, before any worker runs."""
    # torch warns before it re-raises a pickling error: the error is the line shown
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Got pickle error", UserWarning)
        try:
            return run_epoch(dataset, label, start_method=start_method, max_batches=max_batches)
        except Exception as error:  # the failure is the result shown
            return f"{type(error).__name__}: {error}"


def trap_lines(trap: EpochRun | str, fix: EpochRun | str, reference: EpochRun) -> list[str]:
    """Cell lines: the trap's and the fix's workers (or the trap's error) against a
    ``reference`` run of the same start method (the RecordStore's), USS per worker."""
    lines = []
    for run in (trap, fix):
        if isinstance(run, str):
            lines.append(f"trap: the DataLoader could not start its workers: {run}")
            continue
        extra = run.after() - reference.after()
        lines.append(
            f"{run.label} ({run.start_method}, {run.batches} batches): USS per worker "
            f"{run.after() / MiB:.1f} MiB, "
            f"{extra / MiB:+.1f} MiB over the {reference.label} worker; private dirty "
            f"{run.after('private_dirty') / MiB:.1f} MiB, file-backed PSS "
            f"{run.after('pss_file') / MiB:.1f} MiB"
        )
    return lines


def h5_outcome(attempt: EpochRun | str, reference: EpochRun, pickle_size: int | str) -> str:
    """ "error" if a spawned DataLoader over the holder failed, "copied" if its workers held at
    least half the pickle more than ``reference``'s, else "shared"."""
    if isinstance(attempt, str):
        return "error"
    if isinstance(pickle_size, int) and attempt.after() - reference.after() >= 0.5 * pickle_size:
        return "copied"
    return "shared"


def why_h5(attempt: EpochRun | str, fix: EpochRun, reference: EpochRun, file_bytes: int) -> str:
    """Why a dataset holding an open ``h5py.File`` did what it did under spawn, and what the
    fix's workers held beyond a ``reference`` worker, against the file's ``file_bytes``."""
    extra = fix.after() - reference.after()
    fixed = (
        f"The fix, H5Dataset, pickles only its path and opens the file in each worker: its "
        f"workers held {extra / MiB:+.1f} MiB of USS over a {reference.label} worker's, "
        f"against a {file_bytes / MiB:.1f} MiB file: "
        + (
            "less than half the file, so no copy of the data; what they hold more is h5py and "
            "the HDF5 library, which only they import (its reads go through the page cache)."
            if extra < 0.5 * file_bytes
            else "at this size the h5py and HDF5 libraries, which only they import, weigh as "
            "much as half the file or more: compare again with more records."
        )
    )
    if isinstance(attempt, str):
        return (
            f"starting the spawned workers raised {attempt!r}. h5py refuses to pickle any "
            "object holding an HDF5 identifier: the id names state inside this process's HDF5 "
            "library, which means nothing in another process. " + fixed
        )
    return (
        "the spawned workers started: this h5py pickled the holder, which it is documented "
        "not to do. " + fixed
    )
