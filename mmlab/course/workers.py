"""DataLoader workers and copy-on-read, measured: notebook 06's third section.

A ``DataLoader`` with workers runs ``dataset[i]`` in worker processes. Started by ``fork``, a
worker shares every page of its parent copy-on-write: a dataset the parent holds looks free.
But every Python object carries a reference count, and reading an object writes it, so the
first read of any object on a page copies that whole page into the worker: "copy-on-read"
(pytorch issue 13246). A list of tuples is millions of such objects; the same records as a
few NumPy arrays are a few objects whose data buffers hold no refcounts, so reading them
copies nothing; a memory-mapped store holds page-cache pages no one writes.

Started by ``spawn`` (the default on macOS and Windows) or ``forkserver`` (the default on
Linux from Python 3.14), a worker shares nothing by fork: the dataset is pickled into it, so
arrays held in RAM are copied whole into every worker, while a dataset that only names a
file (the store) pickles its path and each worker maps the same page-cache pages.

``run_epoch`` iterates one epoch and reads each worker's private memory (``private_memory``,
from ``smaps_rollup``) before it reads a record and after the epoch, and the CPU time the
workers and this process's main thread used. ``footprint`` sizes a ``ListDataset``'s objects,
``dataset_lines`` prints each arm's records and sizes;
``epoch_lines``, ``copy_lines``, ``freeze_lines`` and ``start_method_lines`` turn a run into
the sentences the notebook prints, each verdict computed from the run's own numbers (the
epoch times: ``mmlab.course.epochs``).
"""

from __future__ import annotations

import functools
import gc
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from mmlab.data.dataset import ListDataset

__all__ = [
    "ALIKE",
    "EpochRun",
    "arms_alike",
    "copy_lines",
    "dataset_lines",
    "epoch_lines",
    "footprint",
    "freeze_lines",
    "plot_workers",
    "private_memory",
    "run_epoch",
    "start_method_lines",
    "workers_summary",
]

MiB = 2**20
_TICK = os.sysconf("SC_CLK_TCK")

_ROLLUP = {
    b"Private_Clean": "private_clean",
    b"Private_Dirty": "private_dirty",
    b"Pss_Anon": "pss_anon",
    b"Pss_File": "pss_file",
    b"Pss_Shmem": "pss_shmem",
}


def private_memory(pid: int) -> dict[str, int]:
    """A process's pages from ``/proc/PID/smaps_rollup``, bytes: ``private_dirty`` (pages only
    it maps that were written: its heap and copy-on-write copies, anonymous memory here, as
    nothing writes a mapped file), ``private_clean`` (unwritten pages only it maps: file pages
    no other process maps), ``uss`` (their sum), and ``pss_anon``, ``pss_file``, ``pss_shmem``
    (shared memory, e.g. torch's batches in /dev/shm)."""
    with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
        text = f.read()
    out = dict.fromkeys(_ROLLUP.values(), 0)
    for line in text.splitlines():
        key, _, rest = line.partition(b":")
        if key in _ROLLUP:
            out[_ROLLUP[key]] = int(rest.split()[0]) * 1024
    out["uss"] = out["private_clean"] + out["private_dirty"]
    return out


def _cpu_seconds(pid: int) -> float:
    # utime + stime, fields 14 and 15 of /proc/PID/stat (after the parenthesised name)
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass
class EpochRun:
    """One epoch of a DataLoader with workers: its wall time, each worker's private memory
    when it was up (``start``) and after the epoch (``end``), and CPU seconds used meanwhile by
    the workers together (``worker_cpu_s``) and by this process's main thread (``main_cpu_s``)."""

    label: str
    seconds: float  # the whole epoch, from starting the workers to the last batch
    first_batch_s: float  # of which: until the first batch arrived (the workers' start)
    items: int
    batches: int
    start: list[dict[str, int]]
    end: list[dict[str, int]]
    worker_cpu_s: float
    main_cpu_s: float
    start_method: str = "fork"
    # gc.get_freeze_count() in each worker at its start: objects the collector never walks
    # there (frozen in this process before a fork, or in a fork server that froze its heap)
    frozen: list[int] = field(default_factory=list)

    def growth(self, name: str = "private_dirty") -> float:
        """Mean growth of ``name`` per worker during the epoch, bytes."""
        return float(
            np.mean([e[name] - s[name] for s, e in zip(self.start, self.end, strict=True)])
        )

    def after(self, name: str = "uss") -> float:
        """Mean ``name`` per worker after the epoch, bytes."""
        return float(np.mean([e[name] for e in self.end]))


def _report_start(queue, worker_id: int) -> None:
    # Runs in each worker once it is up (after unpickling the dataset, if it was pickled),
    # before it reads a record.
    pid = os.getpid()
    queue.put((pid, private_memory(pid), _cpu_seconds(pid), gc.get_freeze_count()))


def run_epoch(
    dataset,
    label: str,
    *,
    workers: int = 2,
    batch_size: int = 256,
    start_method: str = "fork",
    freeze: bool = False,
    max_batches: int | None = None,
) -> EpochRun:
    """Iterate once over a shuffled ``DataLoader`` of ``dataset`` with ``workers`` workers.

    ``start_method`` is explicit ("fork", "forkserver", "spawn"): Python 3.14 changed the
    default on Linux. ``freeze`` calls ``gc.freeze()`` before the workers start (and
    ``gc.unfreeze()`` after). ``max_batches`` stops early. Persistent workers outlive the
    epoch, so their memory and CPU time are read where the epoch left them. No sampler runs
    during the epoch: reading the workers' ``smaps_rollup`` every few ms would cost them time.
    Each worker also reports ``gc.get_freeze_count()`` at its start (``EpochRun.frozen``).
    """
    import multiprocessing

    from torch.utils.data import DataLoader

    context = multiprocessing.get_context(start_method)
    queue = context.SimpleQueue()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        shuffle=True,
        persistent_workers=True,
        multiprocessing_context=context,
        worker_init_fn=functools.partial(_report_start, queue),
    )
    if freeze:
        gc.freeze()
    try:
        began, cpu = time.perf_counter(), time.thread_time()
        batches = iter(loader)
        next(batches)
        first = time.perf_counter() - began
        started = {pid: rest for pid, *rest in (queue.get() for _ in range(workers))}
        pids = sorted(started)
        done = 1
        for _ in batches:
            done += 1
            if max_batches is not None and done >= max_batches:
                break
        seconds = time.perf_counter() - began
        main_cpu = time.thread_time() - cpu
        end = [private_memory(pid) for pid in pids]
        worker_cpu = sum(_cpu_seconds(pid) - started[pid][1] for pid in pids)
    finally:
        if freeze:
            gc.unfreeze()
    del batches, loader  # shuts the workers down
    start = [started[pid][0] for pid in pids]
    frozen = [started[pid][2] for pid in pids]
    return EpochRun(
        label,
        seconds,
        first,
        len(dataset),
        done,
        start,
        end,
        worker_cpu,
        main_cpu,
        start_method,
        frozen,
    )


def footprint(dataset: ListDataset) -> dict[str, int]:
    """Bytes of a ``ListDataset``: ``objects`` (the list, each tuple, string and array header:
    everything that carries a refcount) and ``array_data`` (the arrays' data buffers)."""
    objects, data = sys.getsizeof(dataset.items), 0
    for item in dataset.items:
        objects += sys.getsizeof(item)
        for x in item:
            size = sys.getsizeof(x)
            if isinstance(x, np.ndarray) and x.base is None:
                data += x.nbytes
                size -= x.nbytes
            objects += size
    return {"objects": objects, "array_data": data}


def dataset_lines(datasets: dict, fp: dict[str, int]) -> list[str]:
    """Cell lines: each arm's records and item 0, the list's ``footprint``, and the sizes of
    ``ArrayDataset``'s arrays (what a pickled copy of it weighs)."""
    lines = [
        f"{name}: {len(d):,} records; item 0 = ({d[0][0]!r}, {d[0][1].size} {d[0][1].dtype})"
        for name, d in datasets.items()
    ]
    lines.append(
        f"the list: {fp['objects'] / MiB:.1f} MiB of refcounted objects (list, tuples, "
        f"strings, array headers) + {fp['array_data'] / MiB:.1f} MiB of array data"
    )
    for d in (d for d in datasets.values() if hasattr(d, "heap")):
        lines.append(
            f"the NumPy arrays: offsets {d.offsets.nbytes / MiB:.1f} MiB + strings' "
            f"bytes {d.heap.nbytes / MiB:.1f} MiB + values {d.values.nbytes / MiB:.1f}"
            f" MiB = {d.nbytes / MiB:.1f} MiB"
        )
    return lines


# -- what the notebook prints and records, each verdict from the run's own numbers ----------


def _mib(size: float) -> float:
    """MiB, with sizes that round to 0.0 printed as +0.0, not -0.0."""
    return 0.0 if abs(size) < 0.05 * MiB else size / MiB


def epoch_lines(runs: list[EpochRun]) -> list[str]:
    """Cell lines: each worker's growth during the epoch, by kind."""
    return [
        f"{r.label}: per worker, private dirty {_mib(r.growth('private_dirty')):+.1f} MiB, "
        f"private clean {_mib(r.growth('private_clean')):+.1f} MiB, USS "
        f"{_mib(r.growth('uss')):+.1f} MiB during one epoch of {r.items:,} records"
        for r in runs
    ]


def _copied(runs: list[EpochRun]) -> tuple[float, float]:
    """A list worker's growth minus what any worker allocates for itself (the NumPy arm's
    growth, the baseline), and that baseline."""
    lst, arr = runs[0], runs[1]
    return lst.growth() - arr.growth(), arr.growth()


ALIKE = 0.25  # the NumPy and store arms grow alike: apart by under this share of the list's copy


def arms_alike(runs: list[EpochRun]) -> bool:
    """Whether the NumPy and store workers (``runs[1]``, ``runs[2]``) grew alike: apart by
    less than a quarter of what a list worker copied in the same run.

    Both grow by what any worker allocates for itself (its batches, its interpreter's heap),
    which moves by a MiB or so from run to run with scheduling and load: on a small store (quick
    mode) that is a tenth of the list's objects, the bar this once was, and a loaded machine
    crossed it. The claim is about copies, so the bar is the effect measured in the same run:
    a NumPy worker that copied its arrays would grow by their size, about 100 bytes a record
    (19 float32 values, the SMILES' bytes, an offset), some 40% of what a list worker copies
    (a tuple, a string and an array header a record, on 64-bit CPython): over the bar."""
    copied = _copied(runs)[0]
    return copied > 0 and abs(runs[1].growth() - runs[2].growth()) < ALIKE * copied


def copy_lines(runs: list[EpochRun], fp: dict[str, int]) -> list[str]:
    """Cell lines: what a list worker copied, against the list's refcounted objects."""
    lst, arr, sto = runs
    copied, base = _copied(runs)
    objects, data = fp["objects"] / MiB, fp["array_data"] / MiB
    lines = [
        f"the list: {objects:.1f} MiB of refcounted objects (list, tuples, strings, array "
        f"headers) + {data:.1f} MiB of array data buffers, which reading never writes",
        f"a list worker grew {_mib(lst.growth()):+.1f} MiB; minus what every worker allocates "
        f"for itself (the NumPy worker's {_mib(base):+.1f} MiB) = {copied / MiB:.1f} MiB copied, "
        f"{copied / fp['objects']:.0%} of the refcounted objects",
        f"NumPy worker {_mib(arr.growth()):+.1f} MiB, store worker {_mib(sto.growth()):+.1f} MiB",
    ]
    if copied > 0.5 * fp["objects"] and arms_alike(runs):
        lines.append(
            "-> each list worker copied about every page holding an object (copies are whole "
            "pages, shared with the array buffers), while the NumPy arrays in RAM stayed as "
            "flat as the store: the copies come from refcounted objects, not RAM vs mmap"
        )
    else:
        lines.append(
            "-> this run cannot tell: the list's extra growth is under half its objects, or the "
            "NumPy and store arms differ by over a quarter of that extra growth"
        )
    return lines


def freeze_lines(plain: EpochRun, frozen: EpochRun, dataset: ListDataset) -> list[str]:
    """Cell lines: the list arm with and without ``gc.freeze()``, and whether the cyclic
    collector tracks the list's tuples at all (tuples of atoms are untracked)."""
    sample = dataset.items[:: max(1, len(dataset.items) // 10_000)]
    tracked = sum(gc.is_tracked(t) for t in sample)
    a, b = plain.growth() / MiB, frozen.growth() / MiB
    lines = [
        f"a list worker grew {a:+.1f} MiB; with gc.freeze() in the parent {b:+.1f} MiB "
        f"({b / a:.0%} of it)"
        if a > 0
        else f"list worker {a:+.1f} MiB, frozen {b:+.1f} MiB",
        f"tuples the cyclic collector tracks: {tracked:,} of {len(sample):,} checked",
    ]
    if a > 0 and b > 0.8 * a and not tracked:
        lines.append(
            "-> the collector tracks none of these tuples, so gc.freeze() had nothing to protect"
            " and the copies stayed: they come from refcount writes alone"
        )
    elif a > 0 and b > 0.8 * a:
        lines.append(
            "-> gc.freeze() left most of the copies: reading still writes refcounts, the cause"
        )
    else:
        lines.append(
            "-> here gc.freeze() removed over a fifth of the growth: the collector wrote too"
        )
    return lines


def start_method_lines(runs: list[EpochRun], array_bytes: int) -> list[str]:
    """Cell lines: USS per worker after a short epoch started by forkserver or spawn, NumPy
    arm against store arm (in that order), against the arrays' size."""
    arr, sto = runs
    extra = arr.after("uss") - sto.after("uss")
    lines = [
        f"{arr.start_method}: USS per worker after {arr.batches} batches: NumPy in RAM "
        f"{arr.after('uss') / MiB:.1f} MiB, mapped store {sto.after('uss') / MiB:.1f} MiB; "
        f"difference {extra / MiB:.1f} MiB; the arrays take {array_bytes / MiB:.1f} MiB"
    ]
    if abs(extra - array_bytes) < 0.25 * array_bytes:
        lines.append(
            "-> each NumPy worker holds its own full copy of the arrays (pickled into it); the "
            "store's workers share its page-cache pages"
        )
    else:
        lines.append("-> this run cannot tell: the difference is not about the arrays' size")
    return lines


def workers_summary(runs: list[EpochRun], fp: dict[str, int]) -> tuple[dict, str, str]:
    """From the three forked runs (list, NumPy, store): values to record, and the claims
    table's "measured" and "verdict" sentences."""
    lst, arr, sto = runs
    copied = _copied(runs)[0]
    arms = dict(zip(("list", "numpy", "store"), runs, strict=True))
    values = {f"{arm}_worker_growth": run.growth() for arm, run in arms.items()}
    values |= {f"{arm}_epoch_s": run.seconds for arm, run in arms.items()}
    values |= {"records": lst.items, "workers": len(lst.start), "list_copied": copied}
    values |= {"list_objects": fp["objects"], "list_array_data": fp["array_data"]}
    measured = (
        f"{len(lst.start)} forked workers over {lst.items:,} records (SMILES + 19 float32 each),"
        f" one epoch: private dirty memory per worker {_mib(lst.growth()):+.1f} MiB from a "
        f"Python list ({copied / MiB:.1f} MiB over the NumPy arm, against {fp['objects'] / MiB:.1f}"
        f" MiB of refcounted objects), {_mib(arr.growth()):+.1f} MiB from NumPy arrays in RAM, "
        f"{_mib(sto.growth()):+.1f} MiB from the mapped store; epochs {lst.seconds:.2f} s, "
        f"{arr.seconds:.2f} s, {sto.seconds:.2f} s"
    )
    if copied > 0.5 * fp["objects"] and arms_alike(runs):
        verdict = (
            "true; a Python list 'shared' by fork is copied on read (every page holding an "
            "object), and the cause is refcounted objects: NumPy arrays in RAM are not copied "
            "under fork either (under spawn/forkserver they are pickled into each worker)"
        )
    else:
        verdict = (
            "not shown clearly by this run: the list's workers copied under half its objects, "
            "or the NumPy and store workers grew apart by over a quarter of that copy"
        )
    return values, measured, verdict


def plot_workers(runs: list[EpochRun], fp: dict[str, int] | None = None):
    """Bars: growth per worker of private dirty (anonymous copies) and private clean (file
    pages only that worker maps) memory during the epoch, per dataset, with the list's
    refcounted objects plus the NumPy arm's growth (every worker's own allocations) as a
    line, and a second line adding the arrays' data buffers; and each epoch's time."""
    import matplotlib.pyplot as plt

    fig, (memory, times) = plt.subplots(
        1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [2, 1]}, layout="constrained"
    )
    y = np.arange(len(runs))
    dirty = [_mib(r.growth("private_dirty")) for r in runs]
    clean = [_mib(r.growth("private_clean")) for r in runs]
    memory.barh(y - 0.2, dirty, 0.4, label="private dirty: anonymous copies", color="#d62728")
    memory.barh(
        y + 0.2, clean, 0.4, label="private clean: file pages only it maps", color="#7f7f7f"
    )
    _label_bars(memory, dirty, y - 0.2, "dirty {:+.1f}")
    _label_bars(memory, clean, y + 0.2, "clean {:+.1f}")
    right = max(dirty + clean)
    if fp is not None and len(runs) > 1:
        # What a worker can copy lies between the pages of objects alone and the whole list
        # (the array buffers share pages with them), plus what it allocates for itself.
        low = (fp["objects"] + runs[1].growth()) / MiB
        high = low + fp["array_data"] / MiB
        memory.axvline(
            low, color="0.3", linestyle="--", label="refcounted objects + own allocations"
        )
        memory.axvline(high, color="0.3", linestyle=":", label="... + array data buffers")
        right = max(right, high)
    memory.set_yticks(y, [r.label for r in runs])
    memory.invert_yaxis()
    memory.set(
        xlabel="MiB per worker, growth during one epoch", title="each worker's private memory"
    )
    memory.set_xlim(right=right * 1.2 + 1)
    memory.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=8)
    seconds = [r.seconds for r in runs]
    times.barh(y, seconds, color="#1f77b4")
    _label_bars(times, seconds, y, "{:.2f} s")
    times.set_xlim(right=max(seconds) * 1.3)
    times.set_yticks(y, [""] * len(runs))
    times.invert_yaxis()
    times.set(xlabel="seconds", title=f"one epoch, {len(runs[0].start)} forked workers")
    return fig


_BAR_LABEL = {"xytext": (3, 0), "textcoords": "offset points", "va": "center", "fontsize": 8}


def _label_bars(ax, values, positions, fmt: str) -> None:
    for value, at in zip(values, positions, strict=True):
        ax.annotate(fmt.format(value), (max(value, 0), at), **_BAR_LABEL)
