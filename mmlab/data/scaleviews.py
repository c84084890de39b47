"""The lab's views of a ``DistributedRun``: its text, its task stream, its phases, and why
the in-place doubling wins (``compare_with_in_place``). matplotlib and psutil are imported
inside the functions only. ``mmlab.data.scale`` re-exports ``plot_task_stream``,
``plot_phases`` and ``compare_with_in_place``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmlab.data.scale import DistributedRun

__all__ = ["PHASES", "compare_with_in_place", "plot_phases", "plot_task_stream", "run_lines"]

PHASES = ("export", "start cluster", "plan", "compute + write", "verify")


def run_lines(run: DistributedRun) -> list[str]:
    """The lines ``print(run)`` shows: the phases with what each did, the scheduler, the
    dashboard, the verification and where the output went."""
    cluster = (
        f"a LocalCluster of {run.workers} worker process(es) started here"
        if run.local
        else f"the cluster at {run.scheduler}, {run.workers} worker(s)"
    )
    lines = [
        f"distributed doubling: {run.field} x {run.factor:g} on {run.records:,} records "
        f"in {run.shards:,} shard(s) of up to {run.shard_rows:,}, {cluster}, "
        f"{run.threads} thread(s) in all",
    ]
    computed = sum(1 for t in run.tasks if t["action"] == "compute")
    notes = {
        "export": f"{_size(run.store_bytes)} store -> {_size(run.parquet_bytes)} of Parquet"
        if run.exported
        else "reused the shards in " + str(run.parquet),
        "start cluster": "" if run.local else "connect to the scheduler",
        "plan": "read the shards' footers, build the task graph",
        "compute + write": f"{computed:,} tasks, running for {run.task_span:.3f} s of it; "
        f"{_size(run.out_bytes)} written",
        "verify": "" if run.verification is not None else "skipped (verify=False)",
    }
    for name in PHASES:
        if name in run.seconds:
            lines.append(f"  {name:<16} {run.seconds[name]:>9.3f} s   {notes.get(name, '')}")
    lines.append(f"  {'total':<16} {run.total_seconds:>9.3f} s")
    lines.append(f"scheduler: {run.scheduler}")
    lines.append(
        f"dashboard: {run.dashboard}"
        if run.dashboard
        else f"dashboard: none ({run.dashboard_note})"
    )
    lines.append(
        str(run.verification) if run.verification is not None else "not verified (verify=False)"
    )
    lines.append(
        f"output: {run.out}"
        if run.published
        else f"output: none (not published to {run.out}: the verification failed)"
    )
    return lines


VISIBLE = 0.0  # every kind with a bar: even a hairline bar is seen, and needs its name


def plot_task_stream(run: DistributedRun, ax: Any = None) -> Any:
    """The run's task stream: one row per worker thread, one bar per task from its start to
    its stop, coloured by kind (read_parquet, mul, toparquetdata, ...; transfers between
    workers hatched). The legend sits outside the axes, so it covers no bar, and names every
    kind drawn (``VISIBLE``: the least share of the stream's span a named bar has). Returns
    ``ax``."""
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
    handles: dict[str, Any] = {}
    widest: dict[str, float] = {}
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
        widest[label] = max(widest.get(label, 0.0), width)
    span = max((t["stop"] for t in run.tasks), default=0.0) * 1e3
    handles = {k: h for k, h in handles.items() if widest[k] >= VISIBLE * span}
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
        # named by its tick and its time label: a legend entry would match nothing visible
        ax.barh(1, in_place_seconds, height=0.6, color="black")
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
        return f"{_two(seconds * 1e9)} ns"
    if seconds < 1e-3:
        return f"{_three(seconds * 1e6)} µs"
    if seconds < 1:
        return f"{_three(seconds * 1e3)} ms"
    if seconds < 120:
        return f"{seconds:,.2f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.1f} min"
    return f"{seconds / 3600:,.1f} h"


def _three(x: float) -> str:
    """``x`` (under 1,000) to 3 significant figures, trailing zeros kept: 2.00, 12.7, 243."""
    return f"{x:.{max(0, 2 - math.floor(math.log10(x)))}f}" if x >= 1 else f"{x:.3g}"


def _two(x: float) -> str:
    """``x`` to 2 significant figures, without an exponent: 2.5, 12, 240."""
    text = f"{x:.2g}"
    return f"{float(text):,.0f}" if "e" in text else text


def _about(n: float) -> str:
    """A large count in words, to 2 significant figures: 130 million, 5.2 billion."""
    n = float(f"{n:.2g}")
    for word, scale in (("billion", 1e9), ("million", 1e6)):
        if n >= scale:
            return f"{n / scale:g} {word}"
    return f"{n:,.0f}"


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
    import os
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
        f"{_duration(run.task_span)} of it ({run.task_span / max(compute, 1e-9):.0%}; the rest: "
        "optimizing and sending the graph before the first task, collecting results after "
        "the last); each shard read and decoded whole (all columns, "
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
    task_s = busy / n  # task time per record: the sum of the task bars over the records
    per_record = in_place_seconds / n
    ram = psutil.virtual_memory().total
    free = shutil.disk_usage(run.out.parent).free
    record_bytes = store_bytes / n
    records_in_ram = ram / record_bytes
    cpus = os.cpu_count() or 1
    lines += [
        f"Format or distribution? The {run.workers} workers ran on this machine's {cpus} CPU(s), "
        "the same ones the in-place doubling used, so the cluster's start and the export are "
        f"fixed costs ({_duration(start + export)}). The tasks themselves, reading, decoding "
        "and re-encoding immutable Parquet shards whole, ran "
        f"{_duration(run.task_span)} from the first task's start to the last one's end (the "
        f"tasks' wall span): already {run.task_span / in_place_seconds:,.0f}x the "
        f"in-place doubling (the tasks' own work, pandas conversions included); the other "
        f"{_duration(max(compute - run.task_span, 0.0))} of the compute + write phase went to "
        "sending the graph and collecting the results.",
        "Where the balance turns (an estimate from this run's measured rates, not a measurement; "
        "a small run's rates include its fixed costs, such as the flush and the first tasks, "
        "so they overstate the time a bigger run takes per record):",
        f"  per record, this run's tasks ran {_duration(task_s)} (summed task time: the "
        f"lengths of all task bars, over {run.threads} thread(s), divided by the "
        f"{run.records:,} records; not the wall span above), the in-place doubling took "
        f"{_duration(per_record)}: {task_s / per_record:,.0f}x, before the export and the "
        "start, at any size that fits this machine.",
        f"  it fits while the store stays in this machine's memory ({_size(ram)}, about "
        f"{_about(records_in_ram)} records of {record_bytes:,.0f} bytes); doubling a column that "
        "big in place is bounded by the storage's write bandwidth and the kernel's dirty-page "
        "throttling, not by this run's small flush.",
        "  past memory (lab 07), in place reads the column from disk: it slows to the disk's "
        "bandwidth but still touches one column, 8 bytes a record; "
        "the distributed run reads every column either way.",
        "  heavy per-record work (far more than a multiply) can be spread over one machine's "
        f"{cpus} core(s) without a cluster: a process pool whose workers map the same file. "
        "Dask adds something only beyond one machine's cores, or its disk.",
        f"  past this machine's free disk ({_size(free)} here), no one machine holds the "
        "store: the data must be sharded across machines or in object storage, with no mmap "
        "across machines. That is where the balance turns, and Dask (the same code with a "
        "scheduler address) is the tool.",
    ]
    return lines
