"""The Dask side of ``mmlab.data.scale``: the cluster, the task, the task stream.

Dask and distributed are imported inside the functions only: ``import mmlab`` never loads
them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Callable, Iterator
from typing import Any

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
