"""The same QM9 task in five formats, under the same instruments: lab 09's race.

Practitioners keep memory-mapped ML data in a handful of formats: ``numpy.memmap`` files
(``np.load(mmap_mode="r")``), an Arrow IPC file (what Hugging Face ``datasets`` maps), SQLite
with a row per record (PyG's ``OnDiskDataset``), LMDB with a pickle per record (fairchem/OCP),
and here the ``RecordStore``. ``race`` does the same four things with each of them
(``mmlab.data.peers`` holds the tools' code) and measures each step with this process's own
counters (``mmlab.instruments.proc.counters``: wall time, minor and major page faults,
bytes read from and written to storage from ``/proc/self/io``):

1. **build**: write the columns as durable files; the time, the bytes written, the size on
   disk right after the build;
2. **double** U0 in place and make it durable; the time, the bytes dirtied, and whether the
   data file is still the same inode afterwards (a format that cannot update in place writes
   a new file and renames it over: Arrow). The build and the double of the store,
   ``numpy.memmap`` and Arrow (milliseconds apart) are repeated afresh in interleaved rounds
   (``builds``, ``doubles``: medians and spread); SQLite's and LMDB's are orders of magnitude
   slower and measured once;
3. **read** 1,024 random full records **cold** (every file of the format dropped from the
   page cache first, ``pagecache.evict``: the storage bytes read and the major faults say
   what a cold read costs) and **warm** (rounds interleaved across the formats, medians and
   spread: ``Spread``); a batch of the same 1,024 records with the format's ``take`` too;
4. one ``DataLoader`` **epoch** with 2 forked workers over ``peers.PeerDataset``
   (``mmlab.course.workers.run_epoch``): its time and how much each worker's private
   (``Private_Dirty``) and file-backed (``Pss_File``) memory grew during it (the growth, not
   the total: a forked worker inherits whatever the parent's heap holds, which is not the
   format's doing).

``hf_gets`` reads the same records through Hugging Face ``datasets.Dataset.from_file`` over an
Arrow stream export of the table, or says why it cannot (not installed, or it needs the
network). ``hf_recorded`` and ``dask_recorded`` (for ``mmlab.scale``'s run) give the numbers
the notebook records. The sentences, the table and the figure are
``mmlab.course.practiceviews``.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmlab.data import peers
from mmlab.instruments import pagecache
from mmlab.instruments.proc import Counters, counters
from mmlab.instruments.spread import Spread

__all__ = [
    "KINDS",
    "REPEATED",
    "Cold",
    "FormatRun",
    "HFGets",
    "Race",
    "Step",
    "dask_recorded",
    "hf_gets",
    "hf_recorded",
    "parquet_baseline",
    "race",
]

KINDS = ("store", "memmap", "arrow", "sqlite", "lmdb")
REPEATED = ("store", "memmap", "arrow")  # build and double within milliseconds: rounds
READS = 1024


@dataclass(frozen=True)
class Step:
    """One operation measured once: its time and what it cost the machine (None: unknown)."""

    seconds: float
    write_bytes: int | None
    read_bytes: int | None
    minor_faults: int | None
    major_faults: int | None

    @classmethod
    def between(cls, before: Counters, after: Counters) -> Step:
        d = after - before
        return cls(d.wall_s, d.write_bytes, d.read_bytes, d.minor_faults, d.major_faults)


@dataclass(frozen=True)
class Cold:
    """The first reads after the format's files were dropped from the page cache."""

    open: Step  # opening the format (headers, footers, a schema, a count)
    gets: Step  # then READS random full records, one get each, the files dropped again first
    file_bytes: int  # the format's files' size (what the cache could hold)
    left_pages: int | None  # pages that stayed in the cache after eviction (None: unknown)
    note: str  # why pages stayed or could not be counted ("" when all went)

    def both(self) -> Step:
        """The open and the gets together: what a cold start costs (None where unknown)."""

        def add(a, b):
            return None if a is None or b is None else a + b

        o, g = self.open, self.gets
        return Step(o.seconds + g.seconds, add(o.write_bytes, g.write_bytes),
                    add(o.read_bytes, g.read_bytes), add(o.minor_faults, g.minor_faults),
                    add(o.major_faults, g.major_faults))  # fmt: skip


@dataclass
class FormatRun:
    """Everything ``race`` measured for one format."""

    kind: str
    title: str
    path: Path
    build: Step
    disk_bytes: int  # right after the build
    double: Step
    rewritten: bool  # the data file is a new inode after the doubling
    cold: Cold
    warm_get: Spread = field(default_factory=lambda: Spread.of([float("nan")]))  # s per get
    take: Spread = field(default_factory=lambda: Spread.of([float("nan")]))  # s per batch
    epoch: object = None  # a workers.EpochRun, or None when the epoch was not run
    disk_after: int = 0  # size on disk after the doubling (LMDB keeps freed pages for reuse)
    builds: Spread | None = None  # seconds of each fresh build, interleaved rounds
    doubles: Spread | None = None  # seconds of each fresh double, the same rounds

    def worker_memory(self, name: str) -> list[int]:
        """Each worker's ``name`` memory (``private_dirty``, ``pss_file`` ...) after the epoch."""
        return [] if self.epoch is None else [w.get(name, 0) for w in self.epoch.end]

    def worker_growth(self, name: str) -> list[int]:
        """How much each worker's ``name`` memory grew from its start to the epoch's end."""
        if self.epoch is None:
            return []
        return [
            e.get(name, 0) - s.get(name, 0)
            for s, e in zip(self.epoch.start, self.epoch.end, strict=True)
        ]


@dataclass
class Race:
    """The whole race: one ``FormatRun`` per kind, in ``KINDS`` order, and its set-up."""

    records: int
    reads: int
    rounds: int
    runs: dict[str, FormatRun]
    indices: np.ndarray

    def __getitem__(self, kind: str) -> FormatRun:
        return self.runs[kind]

    def ratio(self, kind: str, what: str) -> float:
        """``what`` of ``kind`` over the store's (``build``, ``double``, ``get``, ``take``,
        ``epoch``, ``disk``): above 1, the store is faster (or smaller)."""
        return _value(self.runs[kind], what) / _value(self.runs["store"], what)


def _value(run: FormatRun, what: str) -> float:
    return {
        "build": lambda: run.builds.median if run.builds else run.build.seconds,
        "double": lambda: run.doubles.median if run.doubles else run.double.seconds,
        "double_written": lambda: float(run.double.write_bytes or 0),
        "get": lambda: run.warm_get.median,
        "take": lambda: run.take.median,
        "epoch": lambda: float("nan") if run.epoch is None else run.epoch.seconds,
        "disk": lambda: float(run.disk_bytes),
        "cold": lambda: run.cold.both().seconds,
    }[what]()


def _data_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def _inode(path: Path) -> tuple[int, ...]:
    return tuple(p.stat().st_ino for p in _data_files(path))


def _evict(path: Path) -> tuple[int | None, str]:
    """Drop every file of the format from the page cache: (pages left, why any stayed)."""
    left: int | None = 0
    notes = []
    for file in _data_files(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pagecache.EvictionWarning)  # reported, not warned
            report = pagecache.evict(file)
        if report.resident_after is None:
            left = None
        elif left is not None:
            left += report.resident_after
        if report.reason:
            notes.append(f"{file.name}: {report.reason}")
    return left, "; ".join(notes)


def _measured(action) -> tuple[Step, object]:
    before = counters()
    result = action()
    return Step.between(before, counters()), result


def _gets(peer, indices: np.ndarray) -> None:
    get = peer.get
    for i in indices.tolist():
        get(i)


def _cold(kind: str, path: Path, indices: np.ndarray) -> Cold:
    left, note = _evict(path)
    opened, peer = _measured(lambda: peers.open_peer(kind, path))
    try:
        # the open may read much of the file (SQLite's count(*) reads every page, a first
        # fault's read-around brings in up to read_ahead_kb): drop it again so the gets are cold
        _evict(path)
        gets, _ = _measured(lambda: _gets(peer, indices))
    finally:
        peer.close()
    size = sum(p.stat().st_size for p in _data_files(path))
    return Cold(opened, gets, size, left, note)


def _build_and_double(kind: str, path: Path, smiles, values, field_: str, indices) -> FormatRun:
    built, _ = _measured(lambda: peers.build(kind, path, smiles, values))
    disk = peers.disk_bytes(path)
    inode = _inode(path)
    writer = peers.open_peer(kind, path, writable=True)
    try:
        doubled, _ = _measured(functools.partial(writer.double, field_))
    finally:
        writer.close()
        del writer  # its maps must go before the eviction of _cold
    title = peers.PEERS[kind].title
    rewritten = _inode(path) != inode
    run = FormatRun(kind, title, path, built, disk, doubled, rewritten, None)
    run.disk_after = peers.disk_bytes(path)
    run.cold = _cold(kind, path, indices)
    return run


def _warm_up(directory: Path, kinds, smiles, values) -> None:
    """Build, double and read a few records in each format and delete them, so that no
    measurement below pays for a library's import or its first call's set-up."""
    import shutil

    scratch = directory / "warm-up"
    scratch.mkdir()
    try:
        for kind in kinds:
            path = peers.build(kind, scratch / kind, smiles[:16], values[:16])
            with peers.open_peer(kind, path, writable=True) as peer:
                peer.double("U0")
                peer.get(0)
                peer.take([1, 0])
    finally:  # an error (a full disk, a library's) leaves no copies of the data behind
        shutil.rmtree(scratch, ignore_errors=True)


def _rounds(directory: Path, runs: dict[str, FormatRun], smiles, values, field_: str,
            rounds: int) -> None:  # fmt: skip
    """Build and double each format of ``runs`` afresh, ``rounds`` times, the formats in a
    rotating order: the seconds of every build and double, as ``builds`` and ``doubles``."""
    import shutil

    kinds = list(runs)
    builds: dict[str, list[float]] = {kind: [] for kind in kinds}
    doubles: dict[str, list[float]] = {kind: [] for kind in kinds}
    for r in range(rounds):
        scratch = directory / f"round-{r}"
        scratch.mkdir()
        try:
            for kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
                began = time.perf_counter()
                path = peers.build(kind, scratch / kind, smiles, values)
                builds[kind].append(time.perf_counter() - began)
                with peers.open_peer(kind, path, writable=True) as peer:
                    began = time.perf_counter()
                    peer.double(field_)
                    doubles[kind].append(time.perf_counter() - began)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    for kind, run in runs.items():
        run.builds, run.doubles = Spread.of(builds[kind]), Spread.of(doubles[kind])


def _warm(runs: dict[str, FormatRun], indices: np.ndarray, rounds: int) -> None:
    """Interleaved rounds, the formats in a rotating order: a get per record, then a take."""
    opened = {kind: peers.open_peer(kind, run.path) for kind, run in runs.items()}
    gets: dict[str, list[float]] = {kind: [] for kind in runs}
    takes: dict[str, list[float]] = {kind: [] for kind in runs}
    try:
        for peer in opened.values():
            _gets(peer, indices[:64])  # first use: lazy set-up (Arrow's numpy views)
        kinds = list(runs)
        for r in range(rounds):
            for kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
                peer = opened[kind]
                began = time.perf_counter()
                _gets(peer, indices)
                gets[kind].append((time.perf_counter() - began) / len(indices))
                began = time.perf_counter()
                peer.take(indices)
                takes[kind].append(time.perf_counter() - began)
    finally:
        for peer in opened.values():
            peer.close()
    for kind, run in runs.items():
        run.warm_get, run.take = Spread.of(gets[kind]), Spread.of(takes[kind])


def race(
    directory: str | os.PathLike[str],
    smiles,
    values,
    *,
    kinds=KINDS,
    reads: int = READS,
    rounds: int = 7,
    workers: int = 2,
    epoch: bool = True,
    field: str = "U0",
    seed: int = 0,
) -> Race:
    """Build, double, read cold and warm, and feed a DataLoader from each format of ``kinds``
    in a new folder ``directory`` (it must not exist yet). ``epoch=False`` skips the epochs."""
    directory = Path(directory)
    directory.mkdir(parents=True)
    values = np.asarray(values, dtype=np.float64)
    _warm_up(directory, kinds, smiles, values)
    # distinct records: a repeated index would be a free warm read inside a cold one
    rng = np.random.default_rng(seed)
    indices = rng.choice(len(smiles), size=min(reads, len(smiles)), replace=False)
    runs = {
        kind: _build_and_double(kind, directory / f"qm9-{kind}", smiles, values, field, indices)
        for kind in kinds
    }
    close = {kind: run for kind, run in runs.items() if kind in REPEATED}
    if close:
        _rounds(directory, close, smiles, values, field, max(rounds, 5))
    _warm(runs, indices, rounds)
    if epoch:
        from mmlab.course import workers as loader

        for kind, run in runs.items():
            dataset = peers.PeerDataset(kind, run.path)
            # gc.freeze(): the kernel's own heap, inherited by the forked workers, is then not
            # walked (and so not copied) by their collector; what grows is the format's
            run.epoch = loader.run_epoch(dataset, run.title, workers=workers, freeze=True)
    return Race(len(smiles), len(indices), rounds, runs, indices)


@dataclass(frozen=True)
class HFGets:
    """Hugging Face ``datasets`` over the same Arrow table: seconds per get, or why unknown."""

    seconds_per_get: Spread | None  # ds[i], one record at a time
    reason: str  # why it could not run ("" when it ran)
    version: str = ""
    batch_per_record: Spread | None = None  # ds[rows]: the same records in one call


def hf_gets(arrow_path: str | os.PathLike[str], out: str | os.PathLike[str], indices,
            rounds: int = 5) -> HFGets:  # fmt: skip
    """Export the Arrow IPC file at ``arrow_path`` as an Arrow *stream* at ``out`` (what
    ``Dataset.from_file`` maps), open it with ``datasets`` offline, and time ``ds[i]`` over
    ``indices`` in ``rounds``, and ``ds[indices]`` (one call for them all); or say why it
    cannot run here."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import datasets
    except ImportError as err:
        return HFGets(None, f"Hugging Face datasets is not installed ({err})")
    import pyarrow as pa
    import pyarrow.ipc

    with pa.memory_map(str(arrow_path)) as source:
        table = pa.ipc.open_file(source).read_all()
        with pa.OSFile(str(out), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        del table
    try:
        ds = datasets.Dataset.from_file(str(out), in_memory=False)
    except Exception as err:  # offline, cache or version problems: all reported
        return HFGets(None, f"Dataset.from_file failed: {type(err).__name__}: {err}")
    singles, batches = [], []
    rows = [int(i) for i in indices]
    for _ in range(rounds):
        began = time.perf_counter()
        for i in rows:
            ds[i]
        singles.append((time.perf_counter() - began) / len(rows))
        began = time.perf_counter()
        ds[rows]
        batches.append((time.perf_counter() - began) / len(rows))
    del ds  # unmaps ``out``: the caller may evict or delete it
    return HFGets(Spread.of(singles), "", datasets.__version__, Spread.of(batches))


def hf_recorded(hf: HFGets) -> dict:
    """What the Hugging Face reads recorded: seconds per record one by one and in a batch."""

    def median(spread: Spread | None) -> float | None:
        return None if spread is None else spread.median

    return {
        "task_hf_get_s": median(hf.seconds_per_get),
        "task_hf_batch_s": median(hf.batch_per_record),
    }


def parquet_baseline(shards: str | os.PathLike[str], out: str | os.PathLike[str],
                     field: str = "U0", factor: float = 2.0) -> float:  # fmt: skip
    """Seconds to do a distributed run's work in this process with pyarrow alone: read each
    Parquet shard in ``shards`` whole, multiply ``field``, write it as a new shard in ``out``
    (a new folder). No cluster and no scheduler: what is left is the format's cost."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out = Path(out)
    out.mkdir(parents=True)
    began = time.perf_counter()
    for shard in sorted(Path(shards).glob("*.parquet")):
        table = pq.read_table(shard)
        k = table.schema.get_field_index(field)
        table = table.set_column(k, field, pc.multiply(table.column(k), factor))
        pq.write_table(table, out / shard.name)
    return time.perf_counter() - began


def dask_recorded(run, in_place_seconds: float, baseline_seconds: float | None = None) -> dict:
    """The numbers of the Dask run the notebook records (``results.record``)."""
    return {
        "dask_ok": bool(run.ok),
        "dask_records": run.records,
        "dask_workers": run.workers,
        "dask_shards": run.shards,
        "dask_total_s": run.total_seconds,
        "dask_seconds": dict(run.seconds),
        "dask_in_place_s": in_place_seconds,
        "dask_compute_tasks": sum(1 for t in run.tasks if t["action"] == "compute"),
        "dask_baseline_s": baseline_seconds,
    }
