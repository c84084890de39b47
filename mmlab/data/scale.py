"""When one machine is not enough: the store's doubling done by Dask, across workers.

A ``RecordStore`` doubles a field in place: it touches one column's pages and nothing else.
That is the fastest way there is while the data fits one machine. When it no longer does,
practitioners do not write their own distributed engine: they put the data in shared
storage as Parquet shards and run **Dask** (or Spark, or Ray) over them. This module is that
path, end to end and checked:

1. export the store to Parquet shards (``mmlab.store.arrow.export_parquet``), one shard per
   task to come;
2. start a ``distributed.LocalCluster`` (``scheduler=None``: worker *processes* on this
   machine) or connect to a running cluster (``scheduler="tcp://host:port"``), with the same
   code either way;
3. ``dask.dataframe.read_parquet`` the shards, multiply the field by ``factor``, and
   ``to_parquet`` the result as new shards, a task per shard, under a temporary name that is
   renamed to ``out`` only once complete and verified: a failure or Ctrl-C leaves nothing;
4. verify every value of the output against the store (the field ``factor`` times the
   store's, bit for bit; the strings and every other field unchanged, in order).

``double_distributed`` returns a ``DistributedRun``: the seconds of each phase, the shards,
the scheduler's address, the dashboard link, the task stream (plain dicts, for
``plot_task_stream``) and the verification. ``compare_with_in_place`` says, from the run's
measured rates, why the one machine wins at this size and where the balance turns.

Dask and distributed are imported inside the functions only: ``import mmlab`` never loads
them. Install them with ``pip install mmlab[scale]``. On a real cluster, ``out`` and the
shards must be on storage every worker and this process can reach (a shared file system
here; object storage such as S3 on a cloud cluster, through ``fsspec``): a memory mapping
does not cross machines, which is why the data travels as files.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mmlab.store.store import RecordStore

__all__ = [
    "DEFAULT_SHARD_ROWS",
    "DistributedRun",
    "Verification",
    "compare_with_in_place",
    "double_distributed",
    "plot_phases",
    "plot_task_stream",
    "verify",
]

DEFAULT_SHARD_ROWS = 32_768  # records per shard: QM9 (130,831) gives 4 shards, 2 per worker
PHASES = ("export", "start cluster", "plan", "compute + write", "verify")
INSTALL = "pip install mmlab[scale] (or pip install 'dask[dataframe,distributed,diagnostics]')"

# progress(phase, done, total): records exported, then shards written
Progress = Callable[[str, int, int], object]


def _require_dask() -> None:
    missing = [
        name
        for name in ("dask", "distributed", "pandas", "pyarrow")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise ImportError(
            f"the distributed doubling needs Dask; missing: {', '.join(missing)}: {INSTALL}"
        )
    try:
        import dask.dataframe  # noqa: F401  (its own dependencies, e.g. a too-old pandas)
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"Dask does not import ({exc}): {INSTALL}") from exc


# -- the result ------------------------------------------------------------------------------


@dataclass(repr=False)
class Verification:
    """What ``verify`` found: ``ok`` and, if not, the first problems found."""

    ok: bool
    records: int
    shards: int
    field: str
    factor: float
    other_fields: tuple[str, ...]
    problems: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        if self.ok:
            return (
                f"verified: {self.records:,} records in {self.shards:,} shard(s): "
                f"{self.field} = {self.factor:g} x the store's, bit for bit; smiles and "
                f"{len(self.other_fields)} other field(s) unchanged, in order"
            )
        return "verification FAILED: " + "; ".join(self.problems)

    __repr__ = __str__


@dataclass(repr=False)
class DistributedRun:
    """One distributed doubling, measured: print it, plot it (``plot_task_stream``)."""

    field: str
    factor: float
    store: Path
    out: Path
    parquet: Path | None  # the input shards, if kept (None: exported to a temporary folder)
    exported: bool  # False: the shards in ``parquet`` were used as they were
    published: bool  # out holds the result (False if verification failed)
    records: int
    shards: int
    shard_rows: int
    store_bytes: int
    parquet_bytes: int  # the input shards, on disk
    out_bytes: int  # the output shards, on disk
    local: bool  # a LocalCluster started (and closed) by the run
    scheduler: str
    workers: int
    threads: int
    dashboard: str | None
    dashboard_note: str  # why there is no link, or what the link is
    seconds: dict[str, float]
    tasks: list[dict[str, Any]]
    verification: Verification | None
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    @property
    def task_span(self) -> float:
        """Seconds from the first task's start to the last one's stop: the part of the
        compute + write phase in which tasks ran (the rest: optimizing and sending the graph,
        scheduling, gathering the result)."""
        return max((t["stop"] for t in self.tasks), default=0.0)

    @property
    def ok(self) -> bool:
        return self.published and (self.verification is None or self.verification.ok)

    def task_kinds(self) -> dict[str, int]:
        """Tasks run per kind (read_parquet, multiply, toparquetdata, ...), in order of first
        run."""
        counts: dict[str, int] = {}
        for task in sorted(self.tasks, key=lambda t: t["start"]):
            if task["action"] == "compute":
                counts[task["kind"]] = counts.get(task["kind"], 0) + 1
        return counts

    def verify(self, store: RecordStore | str | os.PathLike[str] | None = None) -> Verification:
        """Check the output again against ``store`` (default: the store the run read)."""
        return verify(self.out, self.store if store is None else store, self.field, self.factor)

    def lines(self) -> list[str]:
        cluster = (
            f"a LocalCluster of {self.workers} worker process(es) started here"
            if self.local
            else f"the cluster at {self.scheduler}, {self.workers} worker(s)"
        )
        lines = [
            f"distributed doubling: {self.field} x {self.factor:g} on {self.records:,} records "
            f"in {self.shards:,} shard(s) of up to {self.shard_rows:,}, {cluster}, "
            f"{self.threads} thread(s) in all",
        ]
        computed = sum(1 for t in self.tasks if t["action"] == "compute")
        notes = {
            "export": f"{_size(self.store_bytes)} store -> {_size(self.parquet_bytes)} of Parquet"
            if self.exported
            else "reused the shards in " + str(self.parquet),
            "start cluster": "" if self.local else "connect to the scheduler",
            "plan": "read the shards' footers, build the task graph",
            "compute + write": f"{computed:,} tasks, running for {self.task_span:.3f} s of it; "
            f"{_size(self.out_bytes)} written",
            "verify": "" if self.verification is not None else "skipped (verify=False)",
        }
        for name in PHASES:
            if name in self.seconds:
                lines.append(f"  {name:<16} {self.seconds[name]:>9.3f} s   {notes.get(name, '')}")
        lines.append(f"  {'total':<16} {self.total_seconds:>9.3f} s")
        lines.append(f"scheduler: {self.scheduler}")
        lines.append(
            f"dashboard: {self.dashboard}"
            if self.dashboard
            else f"dashboard: none ({self.dashboard_note})"
        )
        lines.append(
            str(self.verification)
            if self.verification is not None
            else "not verified (verify=False)"
        )
        lines.append(
            f"output: {self.out}"
            if self.published
            else f"output: none (not published to {self.out}: the verification failed)"
        )
        return lines

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready values (paths as strings), to save with a lab's results."""
        data = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name not in ("verification", "tasks")
        }
        for name in ("store", "out", "parquet"):
            data[name] = None if data[name] is None else str(data[name])
        data["seconds"] = dict(self.seconds)
        data["total_seconds"] = self.total_seconds
        data["task_span"] = self.task_span
        data["tasks"] = [dict(task) for task in self.tasks]
        data["verified"] = None if self.verification is None else self.verification.ok
        data["problems"] = [] if self.verification is None else list(self.verification.problems)
        return data

    def __str__(self) -> str:
        return "\n".join(self.lines())

    __repr__ = __str__


# -- verification ----------------------------------------------------------------------------


def _shards(directory: Path) -> list[Path]:
    from mmlab.store.arrow import _natural

    found = [
        p
        for p in Path(directory).iterdir()
        if p.suffix == ".parquet" and not p.name.startswith((".", "_")) and p.is_file()
    ]
    return sorted(found, key=_natural)


def _same_bits(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Equal bit for bit, or both NaN (a NaN's payload may change across machines)."""
    got = np.ascontiguousarray(got, dtype=np.float64)
    want = np.ascontiguousarray(want, dtype=np.float64)
    same = got.view(np.uint64) == want.view(np.uint64)
    return same | (np.isnan(got) & np.isnan(want))


@contextlib.contextmanager
def _opened(store: RecordStore | str | os.PathLike[str]) -> Iterator[RecordStore]:
    from mmlab.store.store import RecordStore

    if isinstance(store, RecordStore):
        yield store
    else:
        with RecordStore.open(store) as opened:
            yield opened


def verify(
    out: str | os.PathLike[str],
    store: RecordStore | str | os.PathLike[str],
    field: str = "U0",
    factor: float = 2.0,
) -> Verification:
    """Check the Parquet shards in ``out`` against ``store`` (see ``_check``)."""
    return _check(out, store, field, factor)


def _check(
    out: str | os.PathLike[str],
    store: RecordStore | str | os.PathLike[str],
    field: str,
    factor: float,
) -> Verification:
    """Check the Parquet shards in ``out`` against ``store``, one shard at a time.

    ``field`` must equal ``factor`` times the store's, computed here in float64 (for a
    factor of 2 that is exact: a doubling never rounds); the strings and every other field
    must equal the store's, bit for bit (-0.0 stays -0.0, NaN stays NaN), in the store's
    order and column order. Reads the shards with pyarrow, not Dask.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    problems: list[str] = []
    with _opened(store) as opened:
        fields = opened.fields
        if field not in fields:
            raise KeyError(f"unknown field {field!r}; this store's fields are {list(fields)}")
        snapshot = opened.to_arrow()
        shards = _shards(Path(out))
        expected_columns = ["smiles", *fields]
        position = 0
        for shard in shards:
            part = pq.read_table(shard, partitioning=None)
            if part.column_names != expected_columns:
                problems.append(
                    f"{shard.name} has the columns {part.column_names}, not {expected_columns}"
                )
                break
            n = part.num_rows
            if position + n > len(opened):
                problems.append(f"the shards hold more than the store's {len(opened):,} records")
                break
            smiles = part.column("smiles").cast(pa.large_string())
            if not smiles.equals(snapshot.column("smiles").slice(position, n)):
                want = snapshot.column("smiles").slice(position, n).to_pylist()
                first = next(
                    i
                    for i, (a, b) in enumerate(zip(smiles.to_pylist(), want, strict=True))
                    if a != b
                )
                problems.append(f"record {position + first:,}: the SMILES differs")
            for name in fields:
                nulls = part.column(name).null_count
                if nulls:
                    problems.append(
                        f"{shard.name}: {name} holds {nulls:,} null(s) (missing values, as "
                        "pandas writes a NaN); the store holds none"
                    )
                got = part.column(name).to_numpy(zero_copy_only=False)
                want = opened.column(name)[position : position + n]
                if name == field:
                    with np.errstate(over="ignore", invalid="ignore"):  # inf, as on workers
                        want = np.multiply(want, factor)
                same = _same_bits(got, want)
                if not same.all():
                    first = int(np.argmin(same))
                    problems.append(
                        f"record {position + first:,}: {name} = {float(got[first])!r}, "
                        f"expected {float(want[first])!r}"
                        + (f" ({factor:g} x the store's)" if name == field else " (unchanged)")
                    )
            position += n
            if len(problems) >= 5:
                break
        if not problems and position != len(opened):
            problems.append(f"the shards hold {position:,} records, the store {len(opened):,}")
        others = tuple(name for name in fields if name != field)
    return Verification(
        ok=not problems,
        records=position,
        shards=len(shards),
        field=field,
        factor=factor,
        other_fields=others,
        problems=problems,
    )


# -- the run ---------------------------------------------------------------------------------


def _bytes_in(directory: Path | None) -> int:
    if directory is None or not directory.is_dir():
        return 0
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def _tqdm_progress() -> Progress:
    from tqdm.auto import tqdm

    bars: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        bar = bars.get(phase)
        if bar is None:
            unit = "rec" if phase == "export" else "shard"
            bar = bars[phase] = tqdm(total=total, unit=unit, desc=phase, disable=None)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def _dashboard(client: Any, local: bool) -> tuple[str | None, str]:
    try:
        link = client.dashboard_link
    except (KeyError, AttributeError, OSError):
        link = None
    if link:
        return link, "the scheduler's live view: task stream, progress, workers' memory"
    if importlib.util.find_spec("bokeh") is None:
        return None, "bokeh is not installed here: pip install mmlab[scale] adds it"
    if local:
        return None, "the LocalCluster started without a dashboard"
    return None, "the scheduler serves no dashboard (is bokeh installed on its machine?)"


def _task_records(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """distributed's task stream as plain dicts, one per start-stop, times in seconds from
    the first start: key, kind (the key's prefix), worker, thread, action, start, stop."""
    from dask.utils import key_split

    rows = []
    for record in raw:
        for span in record.get("startstops", ()):
            rows.append(
                {
                    "key": str(record["key"]),
                    "kind": key_split(record["key"]),
                    "worker": str(record.get("worker", span.get("source", "?"))),
                    "thread": int(record.get("thread") or 0),
                    "action": str(span["action"]),
                    "start": float(span["start"]),
                    "stop": float(span["stop"]),
                    "status": str(record.get("status", "")),
                }
            )
    if rows:
        zero = min(row["start"] for row in rows)
        for row in rows:
            row["start"] -= zero
            row["stop"] -= zero
    return sorted(rows, key=lambda row: (row["start"], row["worker"], row["thread"]))


def _quiet_worker() -> None:
    """Run in each worker process of a LocalCluster started here: its ``distributed`` log
    handlers (stderr, which a notebook shows) print CRITICAL records only."""
    root = logging.getLogger("distributed")
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.CRITICAL)


def _multiplier() -> Callable[[Any, str, float], Any]:
    """The task that multiplies one partition's field: Arrow's multiply, which keeps NaN a
    NaN (pandas' ``*`` on Arrow-backed columns turns NaN into a null). Made inside a
    function, so Dask ships it by value: a remote cluster's workers need no mmlab."""

    def multiply(part: Any, field: str, factor: float) -> Any:
        import pandas as pd
        import pyarrow as pa
        import pyarrow.compute as pc

        product = pc.multiply(pa.array(part[field].array), pa.scalar(factor, pa.float64()))
        part = part.copy(deep=False)
        part[field] = pd.Series(
            pd.arrays.ArrowExtensionArray(product), index=part.index, name=field
        )
        return part

    return multiply


@contextlib.contextmanager
def _client(
    scheduler: str | None, n_workers: int, threads_per_worker: int
) -> Iterator[tuple[Any, bool]]:
    """A ``distributed.Client``: of a LocalCluster started here and closed after, or of the
    cluster at ``scheduler``. A LocalCluster is quiet: its scheduler, nannies and workers log
    nothing below CRITICAL (a task's error reaches the caller as an exception; what would
    print is noise, such as a worker's heartbeat racing its own shutdown), and its dashboard
    takes a free port (no "port 8787 is already in use" warning when a notebook runs two)."""
    from distributed import Client, LocalCluster

    if scheduler is None:
        dashboard = ":0" if importlib.util.find_spec("bokeh") is not None else None
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=dashboard,
            silence_logs=logging.CRITICAL,  # this process: the scheduler and the nannies
        )
        try:
            with Client(cluster) as client:
                client.run(_quiet_worker)  # the worker processes: silence_logs misses them
                yield client, True
        finally:
            cluster.close()
    else:
        with Client(scheduler, timeout="10s") as client:
            client.wait_for_workers(1, timeout=60)
            yield client, False


def double_distributed(
    store: RecordStore | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    field: str = "U0",
    factor: float = 2.0,
    scheduler: str | None = None,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    parquet: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    verify: bool = True,
    progress: bool | Progress = False,
) -> DistributedRun:
    """Multiply ``field`` by ``factor`` in every record of ``store`` with Dask, across
    workers, and write the result as Parquet shards in the directory ``out``.

    ``scheduler=None`` starts a ``LocalCluster`` of ``n_workers`` processes with
    ``threads_per_worker`` threads each on this machine, and closes it after; an address
    (``"tcp://host:port"``, as ``dask scheduler`` prints) runs the same code on that cluster,
    whose workers must reach ``out`` and the shards at the same paths.

    ``parquet``: where the store's Parquet shards (``shard_rows`` records each) go. ``None``:
    a temporary folder beside ``out``, removed after; a folder that does not exist: exported
    there and kept; an existing folder: its shards are used as they are (no export). Each
    shard is one Dask partition, so one task of each kind.

    The output is written under a hidden temporary name beside ``out`` and renamed to ``out``
    once complete and (with ``verify=True``, the default) checked against the store: an
    error, a failed check or Ctrl-C leaves no ``out``. An existing ``out`` is refused unless
    ``overwrite``. An unknown field is refused before any cluster starts.

    ``progress``: ``True`` shows bars (export in records, write in shards), or a callable
    ``progress(phase, done, total)``. Returns a ``DistributedRun`` (print it).
    """
    from mmlab.store import arrow

    if shard_rows < 1:
        raise ValueError(f"shard_rows must be at least 1, got {shard_rows}")
    if n_workers < 1 or threads_per_worker < 1:
        raise ValueError(
            f"n_workers and threads_per_worker must be at least 1: {n_workers}, "
            f"{threads_per_worker}"
        )
    factor = float(factor)
    report: Progress | None
    report = _tqdm_progress() if progress is True else (progress or None)  # type: ignore[assignment]
    out = Path(out).absolute()
    seconds: dict[str, float] = {}
    with _opened(store) as opened:
        if field not in opened.fields:
            raise KeyError(
                f"unknown field {field!r}; this store's fields are {list(opened.fields)}"
            )
        arrow._check_out(out, overwrite, opened.path)
        _require_dask()
        store_path, records, store_bytes = opened.path, len(opened), opened.nbytes
        given = Path(parquet).absolute() if parquet is not None else None
        if given is not None and given == out:
            raise ValueError(f"the input shards and the output are both {out}")
        reuse = given is not None and given.exists()
        source = given if given is not None else arrow._temp_name(out, "input")
        tmp = arrow._temp_name(out, "writing")
        import dask
        import dask.dataframe as dd
        import distributed
        import pyarrow.parquet as pq
        from dask.dataframe.utils import make_meta
        from distributed import get_task_stream

        try:
            started = time.perf_counter()
            if not reuse:
                done = 0

                def exported(k: int) -> None:
                    nonlocal done
                    done += k
                    if report is not None:
                        report("export", done, records)

                arrow.export_parquet(opened, source, shard_rows=shard_rows, progress=exported)
            seconds["export"] = time.perf_counter() - started
            parquet_bytes = _bytes_in(source)
            shard_rows = max(
                (pq.ParquetFile(shard).metadata.num_rows for shard in _shards(source)),
                default=0,
            )
            started = time.perf_counter()
            with _client(scheduler, n_workers, threads_per_worker) as (client, local):
                seconds["start cluster"] = time.perf_counter() - started
                address = client.scheduler.address
                nthreads = client.nthreads()
                link, note = _dashboard(client, local)
                started = time.perf_counter()
                # One partition per shard: Dask would otherwise merge small files into one
                # partition of at least 75 MB, and one worker would do all the work.
                with dask.config.set({"dataframe.parquet.minimum-partition-size": 1}):
                    # pyarrow-backed columns: NaN stays a NaN value (pandas' own float64 would
                    # leave as a null, which is not what the store holds)
                    frame = dd.read_parquet(
                        str(source), split_row_groups=False, dtype_backend="pyarrow"
                    )
                    if list(frame.columns) != ["smiles", *opened.fields]:
                        raise ValueError(
                            f"the shards in {source} hold the columns {list(frame.columns)}, "
                            f"not this store's {['smiles', *opened.fields]}"
                        )
                    frame = frame.map_partitions(
                        _multiplier(), field, factor, meta=make_meta(frame)
                    )
                    shards = frame.npartitions
                    width = max(5, len(str(shards - 1)))
                    written = frame.to_parquet(
                        str(tmp),
                        compute=False,
                        write_index=False,
                        write_metadata_file=False,
                        # a bound str method: pickles with no mmlab code on the workers
                        name_function=f"part-{{:0{width}d}}.parquet".format,
                    )
                    seconds["plan"] = time.perf_counter() - started
                    started = time.perf_counter()
                    with get_task_stream(client) as stream:
                        future = client.compute(written)
                        try:
                            while True:
                                try:
                                    distributed.wait(future, timeout=0.1)
                                    break
                                except TimeoutError:
                                    if report is not None and tmp.is_dir():
                                        files = sum(1 for _ in tmp.glob("*.parquet"))
                                        report("compute + write", max(0, files - 1), shards)
                            future.result()  # raises the first task's error, if any
                        except BaseException:
                            client.cancel(future)
                            raise
                    if report is not None:
                        report("compute + write", shards, shards)
                seconds["compute + write"] = time.perf_counter() - started
            tasks = _task_records(stream.data)
            checked = None
            if verify:
                started = time.perf_counter()
                checked = _check(tmp, opened, field, factor)
                seconds["verify"] = time.perf_counter() - started
            out_bytes = _bytes_in(tmp)
            published = checked is None or checked.ok
            if published:
                for shard in _shards(tmp):
                    arrow._fsync(shard)
                arrow._fsync(tmp)
                arrow._publish(tmp, out, overwrite)
        finally:
            arrow._remove(tmp)  # gone already when published
            if given is None:
                arrow._remove(source)
    versions = {"dask": dask.__version__, "distributed": distributed.__version__}
    return DistributedRun(
        field=field,
        factor=factor,
        store=store_path,
        out=out,
        parquet=given,
        exported=not reuse,
        published=published,
        records=records,
        shards=shards,
        shard_rows=shard_rows,
        store_bytes=store_bytes,
        parquet_bytes=parquet_bytes,
        out_bytes=out_bytes,
        local=local,
        scheduler=address,
        workers=len(nthreads),
        threads=sum(nthreads.values()),
        dashboard=link,
        dashboard_note=note,
        seconds=seconds,
        tasks=tasks,
        verification=checked,
        versions=versions,
    )


# -- for the lab: a figure and an explanation ------------------------------------------------


def plot_task_stream(run: DistributedRun, ax: Any = None) -> Any:
    """The run's task stream: one row per worker thread, one bar per task from its start to
    its stop, coloured by kind (read_parquet, mul, toparquetdata, ...; transfers between
    workers hatched). The legend sits outside the axes, so it covers no bar. Returns ``ax``."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 1.2 + 0.45 * max(1, run.threads)))
    rows = sorted({(t["worker"], t["thread"]) for t in run.tasks})
    workers = sorted({worker for worker, _ in rows})
    labels = []
    for worker, thread in rows:
        threads = sorted(th for w, th in rows if w == worker)
        labels.append(f"worker {workers.index(worker) + 1} · thread {threads.index(thread) + 1}")
    kinds = list(dict.fromkeys(t["kind"] for t in run.tasks if t["action"] == "compute"))
    colours = plt.get_cmap("tab10")
    handles = {}
    for task in run.tasks:
        y = rows.index((task["worker"], task["thread"]))
        width = max(task["stop"] - task["start"], 1e-6) * 1e3
        if task["action"] == "compute":
            colour = colours(kinds.index(task["kind"]) % 10)
            label, hatch = task["kind"], None
        else:
            colour, label, hatch = "0.75", task["action"], "///"
        bar = ax.barh(
            y,
            width,
            left=task["start"] * 1e3,
            height=0.7,
            color=colour,
            hatch=hatch,
            edgecolor="white" if hatch is None else "0.4",
            linewidth=0.3,
        )
        handles.setdefault(label, bar)
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("time since the first task started (ms)")
    computed = sum(1 for t in run.tasks if t["action"] == "compute")
    ax.set_title(
        f"Dask task stream: {computed:,} tasks on {run.workers} worker(s), "
        f"{run.shards:,} shard(s) of {run.field} x {run.factor:g}"
    )
    if handles:
        ax.legend(
            handles.values(),
            handles.keys(),
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            borderaxespad=0.0,
            frameon=False,
            title="task kind",
        )
    ax.figure.tight_layout()
    return ax


def plot_phases(run: DistributedRun, in_place_seconds: float | None = None, ax: Any = None) -> Any:
    """The run's phases as one stacked bar (export, start cluster, plan, compute + write,
    verify), beside the in-place doubling's bar if its seconds are given; each bar is
    labelled with its time, since the in-place one is too short to see. Returns ``ax``."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 2.4))
    colours = plt.get_cmap("tab10")
    left = 0.0
    for k, name in enumerate(PHASES):
        if name in run.seconds:
            ax.barh(0, run.seconds[name], left=left, height=0.6, color=colours(k), label=name)
            left += run.seconds[name]
    ax.text(left, 0, f"  {_duration(left)}", va="center")
    labels = [f"Dask, {run.workers} worker(s)"]
    if in_place_seconds is not None:
        ax.barh(1, in_place_seconds, height=0.6, color="black", label="in place (RecordStore)")
        ax.text(in_place_seconds, 1, f"  {_duration(in_place_seconds)}", va="center")
        labels.append("RecordStore, in place")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, max(left, in_place_seconds or 0) * 1.15 or 1)
    ax.set_xlabel("seconds")
    ax.set_title(f"doubling {run.field} of {run.records:,} records: where the time goes")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    ax.figure.tight_layout()
    return ax


def _duration(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:,.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:,.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:,.1f} ms"
    if seconds < 120:
        return f"{seconds:,.2f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.1f} min"
    return f"{seconds / 3600:,.1f} h"


def _size(n: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} B"


def compare_with_in_place(
    run: DistributedRun, in_place_seconds: float, store_bytes: int | None = None
) -> list[str]:
    """Lines explaining the run against the in-place doubling the caller measured on the
    same store (``column(field) *= factor`` plus ``flush()``, in ``in_place_seconds``).

    How many times slower the distributed doubling was and why, phase by phase; then, as an
    *estimate from this run's measured rates* (nothing here is a typed-in constant: the
    machine's memory and free disk are read now), where the balance turns.
    """
    import shutil

    import psutil

    if in_place_seconds <= 0:
        raise ValueError(f"in_place_seconds must be positive, got {in_place_seconds}")
    store_bytes = run.store_bytes if store_bytes is None else int(store_bytes)
    n = max(run.records, 1)
    column_bytes = 8 * n
    total = run.total_seconds
    s = run.seconds
    compute = s.get("compute + write", 0.0)
    plan = s.get("plan", 0.0)
    export = s.get("export", 0.0)
    start = s.get("start cluster", 0.0)
    tasks = sum(1 for t in run.tasks if t["action"] == "compute")
    busy = sum(t["stop"] - t["start"] for t in run.tasks if t["action"] == "compute")
    per_task = busy / tasks if tasks else float("nan")
    lines = [
        f"The distributed doubling took {_duration(total)} in all; the in-place doubling of "
        f"the same {run.records:,} records took {_duration(in_place_seconds)}: "
        f"{total / in_place_seconds:,.0f}x slower "
        f"(the compute + write phase alone: {compute / in_place_seconds:,.0f}x).",
        "Why, phase by phase:",
        f"  export {_duration(export)}: every column and every SMILES of the {_size(store_bytes)} "
        f"store encoded and written as {run.shards:,} Parquet file(s) "
        f"({_size(run.parquet_bytes)}); in place writes no new file.",
        f"  start cluster {_duration(start)}: "
        + (
            f"{run.workers} worker processes spawned, each importing Python, pandas and Dask"
            if run.local
            else "a connection to the scheduler and its workers"
        )
        + "; in place has no one to start.",
        f"  plan {_duration(plan)}: the client reads every shard's footer and builds a task "
        "graph; in place has no plan to make.",
        f"  compute + write {_duration(compute)}: {tasks:,} tasks ({_duration(per_task)} each on "
        "average), running for "
        f"{_duration(run.task_span)} of it (the rest: optimizing and sending the graph, "
        "scheduling, collecting results); each shard read and decoded whole (all columns, "
        f"not just {run.field}) into pandas, passed between tasks, then encoded and written "
        f"as a new file ({_size(run.out_bytes)} in all).",
        f"  in place: one column's pages ({_size(column_bytes)}, 8 bytes a record) multiplied "
        "where they lie in the page cache, then flushed: no copy, no decoding, no scheduling.",
    ]
    if "verify" in s:
        lines.append(
            f"  verify {_duration(s['verify'])}: every value read back and compared (in place "
            "needs no such check: nothing left the file)."
        )
    in_place_rate = column_bytes / in_place_seconds  # bytes of the field per second
    per_worker = compute * max(run.workers, 1) / n  # worker-seconds per record, distributed
    per_record = in_place_seconds / n
    ram = psutil.virtual_memory().total
    free = shutil.disk_usage(run.out.parent).free
    record_bytes = store_bytes / n
    records_in_ram = ram / record_bytes
    lines += [
        "Where the balance turns (an estimate from this run's measured rates, not a measurement; "
        "a small run's rates include its fixed costs, such as the flush and the first tasks, "
        "so they overstate the time a bigger run takes per record):",
        f"  per record, this run's distributed work costs {_duration(per_worker)} of worker "
        f"time, the in-place doubling {_duration(per_record)}: a cluster of about "
        f"{per_worker / per_record:,.0f} such workers would only just keep up, before the "
        "export and the start, at any size that fits this machine.",
        f"  it fits while the store stays in this machine's memory ({_size(ram)}, about "
        f"{records_in_ram:,.0f} records of {record_bytes:,.0f} bytes): doubling that in place "
        f"at this run's {_size(in_place_rate)}/s would take about "
        f"{_duration(records_in_ram * 8 / in_place_rate)}.",
        "  past memory (lab 07), in place reads the column from disk: it slows to the disk's "
        "bandwidth but still touches one column, 8 bytes a record; "
        "the distributed run reads every column either way.",
        f"  past this machine's free disk ({_size(free)} here), no one machine holds the "
        "store: the data must be sharded across machines or in object storage, with no mmap "
        "across machines. That is where the balance turns, and Dask (the same code with a "
        "scheduler address) is the tool; so does it when each record needs far more work "
        f"than a multiply (more than about {_duration(per_worker)} of CPU per record, this "
        "run's overhead), which workers share.",
    ]
    return lines
