"""The DataLoader memory matrix: start method x data holder, private memory per worker.

Lab 06 showed three holders under ``fork``: a Python list is copied on read (reading writes
refcounts, pytorch issue 13246), NumPy arrays and a mapped store are not. Under ``spawn`` a
worker is a new interpreter: the DataLoader *pickles* the dataset into it, so what a holder's
pickle carries is what each worker holds privately. Under ``forkserver`` the dataset is
pickled too, but the worker is forked from a server process that imported
``FORKSERVER_PRELOAD`` (torch): it inherits the server's objects, and a worker that allocates
many objects (unpickling a list, importing pyarrow) runs the cyclic collector, which writes
the header of every inherited object it tracks and so copies their pages (lab 06's effect,
on the server's heap). The last preload, ``mmlab.course.forkfreeze``, calls ``gc.freeze()``
in the server: the inherited objects leave the collector's lists. A fork server already
running with another preload is stopped first (else the preload would not take effect), and
each worker reports ``gc.get_freeze_count()``, so the matrix says whether the freeze
happened rather than assuming it. The matrix adds the two memory-mapped holders
practitioners write most, as they are usually written:

==================  ===========================================================================
``Python list``     ``ListDataset``: a ``(smiles, float32 values)`` tuple per record
``NumPy in RAM``    ``ArrayDataset``: string offsets, string bytes and values in three arrays
``numpy.memmap``    ``MemmapHolder``: ``np.load(mmap_mode="r")`` arrays held as attributes
``Arrow table``     ``ArrowHolder``: an IPC file read through ``pa.memory_map``, the Table held
``RecordStore``     ``StoreDataset``: pickles its path, opens the store in each worker
==================  ===========================================================================

Pickling a ``numpy.memmap`` gives a plain copy of its data (its ``__reduce__`` is ndarray's),
and pickling a ``pyarrow.Table`` serializes its buffers, mapped or not: both holders map the
file in this process and ship its whole data to every spawned worker. ``pickled_bytes``
measures what each holder's pickle weighs; ``run_matrix`` runs one epoch per cell with
``workers.run_epoch`` and redraws a live heat map (``mmlab.course.matrixviews``) as each cell
completes.
"""

from __future__ import annotations

import gc
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmlab.course.workers import EpochRun, run_epoch
from mmlab.data import peers
from mmlab.data.dataset import ArrayDataset, ListDataset, StoreDataset

__all__ = [
    "FORKSERVER_PRELOAD",
    "HOLDERS",
    "METHODS",
    "ArrowHolder",
    "Matrix",
    "MemmapHolder",
    "holders",
    "pickled_bytes",
    "preload_fork_server",
    "prepare",
    "run_matrix",
]

METHODS = ("fork", "forkserver", "spawn")
HOLDERS = ("Python list", "NumPy in RAM", "numpy.memmap", "Arrow table", "RecordStore")
# Imported once by the fork server that forkserver workers are forked from; forkfreeze last:
# its body is gc.freeze(), which freezes every object the earlier imports made.
FORKSERVER_PRELOAD = ("torch", "mmlab.course.loadermatrix", "mmlab.course.forkfreeze")
# The peers of mmlab.data.peers whose files the holders read.
_KINDS = ("store", "memmap-rows", "arrow")


class MemmapHolder:
    """A dataset as it is usually written over ``.npy`` files: the ``numpy.memmap`` arrays
    opened in ``__init__`` and kept as attributes (offsets, string bytes, ``(n, fields)``
    values of a ``"memmap-rows"`` peer). Forked workers share the mapping; a spawned worker
    gets the attributes pickled, and a ``numpy.memmap`` pickles as a copy of its data."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        directory = Path(directory)
        self.offsets = np.load(directory / "offsets.npy", mmap_mode="r")
        self.heap = np.load(directory / "heap.npy", mmap_mode="r")
        self.values = np.load(directory / "values.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray]:
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.heap[start:end].tobytes().decode(), self.values[i].astype(np.float32)


class ArrowHolder:
    """A dataset holding a ``pyarrow.Table`` read from a memory-mapped IPC file, the usual
    way (``ipc.open_file(pa.memory_map(path)).read_all()`` in ``__init__``). Its pickle is the
    table's: Arrow serializes every buffer, so a spawned worker gets the data, not the map.
    The NumPy views ``__getitem__`` reads through are made per process and never pickled."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import pyarrow as pa
        import pyarrow.ipc

        self.table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        self._views: tuple | None = None

    def __len__(self) -> int:
        return self.table.num_rows

    def _columns(self) -> tuple:
        if self._views is None:
            # one chunk per column as written: read it in place (combine_chunks would copy)
            chunks = [
                c.chunk(0) if c.num_chunks == 1 else c.combine_chunks() for c in self.table.columns
            ]
            # the values' buffer viewed in place: to_numpy() would import pandas (40 MiB)
            floats = [
                np.frombuffer(c.buffers()[1], np.float64, len(c), c.offset * 8) for c in chunks[1:]
            ]
            self._views = (chunks[0], floats)
        return self._views

    def __getitem__(self, i: int) -> tuple[str, np.ndarray]:
        smiles, floats = self._columns()
        return smiles[i].as_py(), np.array([c[i] for c in floats], dtype=np.float32)

    def __getstate__(self) -> dict:
        return {"table": self.table, "_views": None}


def prepare(
    directory: str | os.PathLike[str], smiles: Sequence[str], values, fields=peers.FIELDS
) -> dict[str, Path]:
    """The peers the holders read (``"store"``, ``"memmap-rows"``, ``"arrow"``), built in
    ``directory`` with ``peers.build`` unless they exist there: ``{kind: path}``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind in _KINDS:
        path = directory / f"qm9-{kind}"
        paths[kind] = path if path.exists() else peers.build(kind, path, smiles, values, fields)
    return paths


def holders(paths: dict[str, Path]) -> dict[str, object]:
    """The five holders of ``HOLDERS`` over the same records, from ``prepare``'s paths."""
    store = paths["store"]
    return {
        "Python list": ListDataset(store),
        "NumPy in RAM": ArrayDataset(store),
        "numpy.memmap": MemmapHolder(paths["memmap-rows"]),
        "Arrow table": ArrowHolder(paths["arrow"]),
        "RecordStore": StoreDataset(store),
    }


def pickled_bytes(dataset: object) -> int | str:
    """Bytes of ``pickle.dumps(dataset)``: what spawn and forkserver send to each worker; or,
    where it cannot be pickled, the error as ``"TypeError: ..."``."""
    try:
        return len(pickle.dumps(dataset, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception as error:  # any pickling failure is the result shown, not a crash
        return f"{type(error).__name__}: {error}"


@dataclass
class Matrix:
    """One epoch per (start method, holder): ``runs[method][holder]`` is its ``EpochRun``;
    ``pickled`` each holder's pickle size (bytes, or the error), ``data_bytes`` the bytes of
    the records' data (the NumPy arrays' size), ``objects`` the list's refcounted bytes and
    ``array_data`` its arrays' data buffers (``workers.footprint``)."""

    methods: tuple[str, ...]
    names: tuple[str, ...]
    pickled: dict[str, int | str]
    data_bytes: int
    objects: int
    array_data: int = 0
    runs: dict[str, dict[str, EpochRun]] = field(default_factory=dict)
    server: str = ""  # what was done to a fork server found running, "" if none ran

    def frozen(self, method: str) -> int:
        """Fewest objects frozen (``gc.get_freeze_count()``) in a worker under ``method`` at
        its start: above 0 under forkserver when the server froze its heap; 0 if none ran."""
        counts = [c for run in self.runs.get(method, {}).values() for c in run.frozen]
        return min(counts, default=0)

    def value(self, method: str, name: str, kind: str = "uss", at: str = "end") -> float:
        """Mean ``kind`` per worker after the epoch (``at="end"``) or when the worker was up,
        after unpickling the dataset and before reading a record (``at="start"``), bytes;
        NaN for a cell not yet run."""
        run = self.runs.get(method, {}).get(name)
        if run is None:
            return float("nan")
        return float(np.mean([s[kind] for s in (run.end if at == "end" else run.start)]))

    def size(self, name: str) -> int:
        """What a full copy of ``name``'s data weighs, bytes: the list's refcounted objects
        (what ``fork`` copies on read), another holder's pickle; 0 if it does not pickle."""
        if name == "Python list" and self.objects:
            return self.objects
        size = self.pickled[name]
        return size if isinstance(size, int) else 0

    def spread(self, method: str, at: str = "start") -> float:
        """Largest difference between the RecordStore's workers' USS under ``method``: the
        noise a difference between cells must beat."""
        run = self.runs[method]["RecordStore"]
        uss = [s["uss"] for s in (run.end if at == "end" else run.start)]
        return float(max(uss) - min(uss))

    def grid(self, kind: str = "uss") -> np.ndarray:
        """``(holders, methods)`` array of ``value``."""
        return np.array([[self.value(m, n, kind) for m in self.methods] for n in self.names])

    def extra(self, method: str, name: str, at: str = "end") -> float:
        """USS per worker over the store's, same start method and moment (``at``): what
        holding the data cost."""
        return self.value(method, name, at=at) - self.value(method, "RecordStore", at=at)

    @property
    def done(self) -> int:
        return sum(len(r) for r in self.runs.values())


def run_matrix(
    datasets: dict[str, object],
    *,
    methods: Sequence[str] = METHODS,
    workers: int = 2,
    max_batches: int | None = None,
    objects: int = 0,
    array_data: int = 0,
    on_cell: Callable[[Matrix], None] | None = None,
) -> Matrix:
    """One ``run_epoch`` per start method and holder (methods outer, holders inner, in the
    order given but a ``"RecordStore"`` first: the baseline of its column), ``on_cell(matrix)``
    after each, e.g. a ``LiveFigure``'s redraw. The fork server preloads ``FORKSERVER_PRELOAD``
    (``preload_fork_server``: ``Matrix.server`` says if one already running was stopped).
    ``objects``, ``array_data``: the list's refcounted bytes and its arrays' data
    (``workers.footprint``), for the verdicts."""
    # What practitioners do: the server imports torch once and forks each worker from it
    # (a worker then starts in a fraction of a second instead of importing torch itself).
    # The dataset is still pickled into each worker, which is what the matrix measures.
    server = preload_fork_server() if "forkserver" in methods else ""
    data = next((d for d in datasets.values() if isinstance(d, ArrayDataset)), None)
    matrix = Matrix(
        tuple(methods),
        tuple(datasets),
        {name: pickled_bytes(d) for name, d in datasets.items()},
        data.nbytes if data is not None else 0,
        objects,
        array_data,
        server=server,
    )
    for method in methods:
        row = matrix.runs.setdefault(method, {})
        for name in sorted(datasets, key=lambda n: n != "RecordStore"):  # stable sort
            # A full collection in this process during a fork epoch writes the header of every
            # object it tracks, and each page it writes stays behind, private, in the forked
            # workers: collecting first leaves no full collection due during the epoch.
            gc.collect()
            row[name] = run_epoch(
                datasets[name],
                name,
                workers=workers,
                start_method=method,
                max_batches=max_batches,
            )
            if on_cell is not None:
                on_cell(matrix)
    return matrix


def preload_fork_server(modules: Sequence[str] = FORKSERVER_PRELOAD) -> str:
    """Make this process's fork server preload ``modules``: ``set_forkserver_preload`` only
    acts when the server starts, so a server already running with another preload (an earlier
    run, another lab's check) is stopped first and the next worker starts a new one. What was
    done, as a sentence ("" if no server ran or it already preloaded ``modules``)."""
    import multiprocessing
    from multiprocessing import forkserver

    server, wanted = forkserver._forkserver, list(modules)
    before = list(getattr(server, "_preload_modules", []))
    note = ""
    if getattr(server, "_forkserver_pid", None) is not None and before != wanted:
        ran = f"this process's fork server already ran, preloading {', '.join(before) or 'nothing'}"
        if hasattr(server, "_stop"):
            server._stop()
            note = f"{ran}: stopped, so the matrix's forkserver workers come from a new one"
        else:
            note = f"{ran}, and could not be stopped: the matrix's preload did not take effect"
    multiprocessing.get_context("forkserver").set_forkserver_preload(wanted)
    return note
