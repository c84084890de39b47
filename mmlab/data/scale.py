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

The run is here; the check is ``mmlab.data.scaleverify``, the figures and the explanation
``mmlab.data.scaleviews``, the Dask pieces (cluster, task, task stream)
``mmlab.data.scaledask``. This module re-exports the public names of all of them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmlab.data.scaledask import (
    INSTALL,
    Progress,
    _client,
    _dashboard,
    _multiplier,
    _require_dask,
    _task_records,
    _tqdm_progress,
)
from mmlab.data.scaleverify import Verification, _check, _opened, _shards, verify
from mmlab.data.scaleviews import (
    PHASES,
    compare_with_in_place,
    plot_phases,
    plot_task_stream,
    run_lines,
)

if TYPE_CHECKING:
    from mmlab.store.store import RecordStore

__all__ = [
    "DEFAULT_SHARD_ROWS",
    "INSTALL",
    "PHASES",
    "DistributedRun",
    "Verification",
    "compare_with_in_place",
    "double_distributed",
    "plot_phases",
    "plot_task_stream",
    "verify",
]

DEFAULT_SHARD_ROWS = 32_768  # records per shard: QM9 (130,831) gives 4 shards, 2 per worker


# -- the result ------------------------------------------------------------------------------


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
        """The run, as the lines ``print(run)`` shows."""
        return run_lines(self)

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


# -- the run ---------------------------------------------------------------------------------


def _bytes_in(directory: Path | None) -> int:
    if directory is None or not directory.is_dir():
        return 0
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


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
    from mmlab.store import arrow, publish

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
        publish.check_out(out, overwrite, opened.path)
        _require_dask()
        store_path, records, store_bytes = opened.path, len(opened), opened.nbytes
        given = Path(parquet).absolute() if parquet is not None else None
        if given is not None and given == out:
            raise ValueError(f"the input shards and the output are both {out}")
        if given is not None and given.exists() and not given.is_dir():
            raise NotADirectoryError(
                f"parquet={given} is a file: it must name a directory of shards (or a new one)"
            )
        reuse = given is not None and given.exists()
        source = given if given is not None else publish.temp_name(out, "input")
        tmp = publish.temp_name(out, "writing")
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
            # ``verify`` here is the parameter (a bool), which shadows this module's
            # ``verify()``: the check is called as ``_check`` (what ``verify()`` runs).
            if verify:
                started = time.perf_counter()
                checked = _check(tmp, opened, field, factor)
                seconds["verify"] = time.perf_counter() - started
            out_bytes = _bytes_in(tmp)
            published = checked is None or checked.ok
            if published:
                for shard in _shards(tmp):
                    publish.fsync(shard)
                publish.fsync(tmp)
                publish.publish(tmp, out, overwrite)
        finally:
            publish.remove(tmp)  # gone already when published
            if given is None:
                publish.remove(source)
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
