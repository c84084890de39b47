"""Sharing memory between processes, measured: readers of one mapped file, DataLoader workers.

Notebook 06's helpers. RSS counts every resident page a process maps; USS only the pages no
other process maps; PSS splits each shared page between its sharers, so PSS adds up across
processes. Each splits by what backs the page: *anonymous* memory (heap, copy-on-write copies)
belongs to the processes that map it and is freed when the last one exits; *file-backed*
pages are page cache, which outlives every process that maps it. So the USS of a process
that is the only one mapping a file counts those pages as "unique", yet killing it frees
none of them: they stay cached until the kernel reclaims them.

``Readers`` starts reader processes that map a ``RecordStore`` and read all of it, and
``snapshot`` measures them: the store's pages (``file_memory``), each reader's memory by kind
and the store's pages in the page cache. ``data_pages`` counts the file's pages that hold
records (the rest is capacity the store reserved and never wrote), which is why the readers'
PSS, summed, sits under the file's size.

DataLoader workers (pytorch issue 13246): a worker forked from a process holding a list of
Python objects shares their pages copy-on-write, but reading an object writes its reference
count, so each page of objects a worker reads is copied into it: "copy-on-read".
``mmlab.dataset``'s ``ListDataset`` (a list of ``(smiles, values)`` tuples), ``ArrayDataset``
(the same data as three numpy arrays in RAM: offsets, bytes, values; a few objects, no
per-record refcounts) and ``StoreDataset`` (the mapped store) return the same items: the
SMILES string and its values as float32. ``run_epoch`` iterates one epoch with forked workers and
measures each worker's private memory (``private_memory``: USS split into private dirty
pages, i.e. anonymous copies, and private clean ones, i.e. file pages only it maps) when the
workers are up and after the epoch.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmlab.data.dataset import ListDataset
from mmlab.instruments import pagecache
from mmlab.instruments.proc import memory_by_kind
from mmlab.instruments.sampler import RSSSampler, file_memory
from mmlab.store import RecordStore

__all__ = [
    "READER",
    "EpochRun",
    "Readers",
    "data_pages",
    "epoch_in_process",
    "list_footprint",
    "plot_readers",
    "plot_workers",
    "private_memory",
    "readers_summary",
    "run_epoch",
    "snapshot",
    "workers_summary",
]

_PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 2**20

# A reader process: maps the store, touches every field page and every string, then holds
# the mapping until it reads a line on stdin.
READER = """
import sys
from mmlab import RecordStore
store = RecordStore.open(sys.argv[1])
total = sum(float(store.column(name).sum()) for name in store.fields)  # every field page
chars = sum(len(store.smiles(i)) for i in range(len(store)))  # offsets and heap pages
print("ready", flush=True)
sys.stdin.readline()
"""


class Readers:
    """Reader processes of one store: ``join()`` starts one and waits until it has read it all,
    ``leave()`` stops the oldest; ``pids`` are those alive. A context manager stops the rest."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._procs: list[subprocess.Popen] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def join(self) -> int:
        proc = subprocess.Popen(
            [sys.executable, "-c", READER, str(self.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            raise RuntimeError(f"reader {proc.pid} of {self.path} failed (exit {proc.wait()})")
        self._procs.append(proc)
        return proc.pid

    def leave(self) -> None:
        proc = self._procs.pop(0)
        proc.communicate("stop\n", timeout=30)

    def __enter__(self) -> Readers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        while self._procs:
            self.leave()


def snapshot(path: str | os.PathLike[str], pids: list[int]) -> dict[str, float]:
    """Now: the store's pages summed over ``pids`` (``rss``, ``pss``, ``uss``), each reader's
    whole-process memory by kind summed (``all_uss``, ``all_pss_anon``, ``all_pss_file``),
    the USS of the first reader alone (``first_uss``, of the store) and the store's pages in
    the page cache (``cached``), all in bytes; ``readers`` is how many."""
    path = Path(path).resolve()
    out: dict[str, float] = {"readers": len(pids), **file_memory(str(path), pids)}
    out["first_uss"] = file_memory(str(path), pids[:1])["uss"] if pids else 0
    for name in ("uss", "pss_anon", "pss_file"):
        out[f"all_{name}"] = 0
    for pid in pids:
        kinds = memory_by_kind(pid, uss_pss=True)
        for name in ("uss", "pss_anon", "pss_file"):
            out[f"all_{name}"] += getattr(kinds, name) or 0
    out["cached"] = int(pagecache.residency(path).sum()) * _PAGE
    return out


def data_pages(path: str | os.PathLike[str]) -> dict[str, int]:
    """Bytes of the store file: ``file`` (its size), ``data`` (the pages of each section that
    hold records: offsets, strings, values) and ``reserved`` (the rest: capacity never written,
    padding to each section's 64 KiB boundary, the header)."""
    with RecordStore.open(path) as store:
        n, sections = len(store), store.sections
        used = {"offsets": 8 * (n + 1), "heap": int(store._offsets[n])}
        used.update(dict.fromkeys(store.fields, 8 * n))
        size = store.nbytes
    data = sum(-(-used[name] // _PAGE) * _PAGE for name in sections)
    return {"file": size, "data": data, "reserved": size - data}


def plot_readers(steps: list[dict], file_size: int, data_size: int, sampler=None):
    """Left: the readers' whole processes over time (PSS by kind, USS). Right: the store's
    pages at each step (readers joining then leaving) against the file and data sizes."""
    import matplotlib.pyplot as plt

    fig, (over_time, per_step) = plt.subplots(1, 2, figsize=(11, 4))
    if sampler is not None:
        for name, label in (("pss_anon", "Pss_Anon"), ("pss_file", "Pss_File"), ("uss", "USS")):
            series = sampler.series(f"children_{name}")
            over_time.plot(sampler.times, series / MiB, label=f"sum of {label}")
        from mmlab.instruments.live import draw_marks

        draw_marks(over_time, sampler.marks)
        over_time.set(xlabel="time (s)", ylabel="MiB", title="the readers' whole processes")
        over_time.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, fontsize=8)
    x = np.arange(len(steps))
    for key in ("rss", "pss", "uss", "cached"):
        label = "in the page cache" if key == "cached" else f"sum of {key.upper()}"
        style = "s--" if key == "cached" else "o-"
        per_step.plot(x, [s[key] / MiB for s in steps], style, label=label)
    per_step.axhline(file_size / MiB, color="0.5", linestyle=":", label="file size")
    per_step.axhline(data_size / MiB, color="0.3", linestyle="-.", label="pages holding data")
    per_step.set_xticks(x, [f"{s['readers']}" for s in steps])
    per_step.set(xlabel="readers alive (joining, then leaving)", ylabel="MiB")
    per_step.set_title("the store's pages only")
    per_step.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, fontsize=8)
    return fig


# -- DataLoader workers ----------------------------------------------------------------------


_ROLLUP = {
    b"Private_Clean": "private_clean",
    b"Private_Dirty": "private_dirty",
    b"Pss_Anon": "pss_anon",
    b"Pss_File": "pss_file",
}


def private_memory(pid: int) -> dict[str, int]:
    """A process's private pages from ``/proc/PID/smaps_rollup``, bytes: ``private_dirty``
    (pages only it maps that were written: its own heap and copy-on-write copies, i.e.
    anonymous memory here, as nothing writes a mapped file), ``private_clean`` (unwritten pages
    only it maps: file pages no other process maps), ``uss`` (their sum), and ``pss_anon``,
    ``pss_file``."""
    with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
        text = f.read()
    out = dict.fromkeys(_ROLLUP.values(), 0)
    for line in text.splitlines():
        key, _, rest = line.partition(b":")
        if key in _ROLLUP:
            out[_ROLLUP[key]] = int(rest.split()[0]) * 1024
    out["uss"] = out["private_clean"] + out["private_dirty"]
    return out


@dataclass
class EpochRun:
    """One epoch of a DataLoader with forked workers: its wall time, each worker's private
    memory when the workers were up (``start``) and after the epoch (``end``), the sampler."""

    label: str
    seconds: float  # the whole epoch, from starting the workers to the last batch
    first_batch_s: float  # of which: until the first batch arrived (the workers' start)
    items: int
    batches: int
    start: list[dict[str, int]]
    end: list[dict[str, int]]
    sampler: RSSSampler = field(repr=False)

    def growth(self, name: str = "private_dirty") -> float:
        """Mean growth of ``name`` per worker during the epoch, bytes."""
        return float(
            np.mean([e[name] - s[name] for s, e in zip(self.start, self.end, strict=True)])
        )


def _report_start(queue, worker_id: int) -> None:
    # Runs in each worker right after the fork, before it reads any record.
    queue.put((os.getpid(), private_memory(os.getpid())))


def run_epoch(dataset, label: str, *, workers: int = 2, batch_size: int = 256) -> EpochRun:
    """Iterate once over a shuffled ``DataLoader`` of ``dataset`` with ``workers`` forked workers.

    Fork explicitly: spawn and forkserver (Python 3.14's default on Linux) pickle the dataset
    into each worker instead, so each starts with its own full copy of a list. Each worker
    reports its private memory before it reads a record; persistent workers outlive the
    epoch, so their memory is read again where the epoch left it.
    """
    import multiprocessing

    from torch.utils.data import DataLoader

    context = multiprocessing.get_context("fork")
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
    with RSSSampler(interval=0.05, children=True, uss_pss=True, memory_kinds=True) as sampler:
        began = time.perf_counter()
        batches = iter(loader)
        next(batches)
        first = time.perf_counter() - began
        started = dict(queue.get() for _ in range(workers))
        pids = sorted(started)
        start = [started[pid] for pid in pids]
        sampler.mark("workers up")
        for _ in batches:
            pass
        seconds = time.perf_counter() - began
        end = [private_memory(pid) for pid in pids]
    n_batches = len(loader)
    del batches, loader  # shuts the workers down
    return EpochRun(label, seconds, first, len(dataset), n_batches, start, end, sampler)


def _label_bars(ax, values, positions, fmt: str) -> None:
    for value, at in zip(values, positions, strict=True):
        ax.annotate(
            fmt.format(value),
            (max(value, 0), at),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )


def plot_workers(runs: list[EpochRun], objects_bytes: int | None = None):
    """Bars: growth per worker of private dirty (anonymous copies) and private clean (file
    pages only that worker maps) memory during the epoch, per dataset, with the size of the
    list's objects (``objects_bytes``) as a line; and each epoch's time."""
    import matplotlib.pyplot as plt

    fig, (memory, times) = plt.subplots(
        1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [2, 1]}
    )
    y = np.arange(len(runs))
    dirty = [r.growth("private_dirty") / MiB for r in runs]
    clean = [r.growth("private_clean") / MiB for r in runs]
    memory.barh(y - 0.2, dirty, 0.4, label="private dirty: anonymous copies", color="#d62728")
    memory.barh(
        y + 0.2, clean, 0.4, label="private clean: file pages only it maps", color="#7f7f7f"
    )
    _label_bars(memory, dirty, y - 0.2, "{:+.1f}")
    _label_bars(memory, clean, y + 0.2, "{:+.1f}")
    right = max(dirty + clean)
    if objects_bytes is not None:
        memory.axvline(objects_bytes / MiB, color="0.3", linestyle="--", label="the list's objects")
        right = max(right, objects_bytes / MiB)
    memory.set_yticks(y, [r.label for r in runs])
    memory.invert_yaxis()
    memory.set(
        xlabel="MiB per worker, growth during one epoch", title="each worker's private memory"
    )
    memory.set_xlim(right=right * 1.15 + 1)
    memory.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize=8)
    seconds = [r.seconds for r in runs]
    times.barh(y, seconds, color="#1f77b4")
    _label_bars(times, seconds, y, "{:.2f} s")
    times.set_xlim(right=max(seconds) * 1.3)
    times.set_yticks(y, [""] * len(runs))
    times.invert_yaxis()
    times.set(xlabel="seconds", title="one epoch")
    return fig


def list_footprint(dataset: ListDataset) -> int:
    """Bytes the list's objects take: the list, each tuple, string and array (with its data)."""
    total = sys.getsizeof(dataset.items)
    for item in dataset.items:
        total += sys.getsizeof(item) + sum(sys.getsizeof(x) for x in item)
    return total


def epoch_in_process(dataset, *, batch_size: int = 256) -> float:
    """Seconds for one shuffled epoch with no workers: ``dataset[i]`` and collating only."""
    from torch.utils.data import DataLoader

    began = time.perf_counter()
    for _ in DataLoader(dataset, batch_size=batch_size, shuffle=True):
        pass
    return time.perf_counter() - began


# -- what the notebook records for its tests and the course's claims table -------------------


def readers_summary(steps: list[dict], sizes: dict[str, int]) -> tuple[dict, str, str]:
    """From a join-and-leave run (``snapshot`` per step, ``data_pages``): the values to record,
    and the claims table's "measured" and "verdict" sentences, both from this run's numbers."""
    full = max(steps, key=lambda s: s["readers"])
    one, two, last, gone = steps[1], steps[2], steps[-2], steps[-1]
    values = {f"sum_{k}": full[k] for k in ("rss", "pss", "uss")} | {"readers": full["readers"]}
    values |= {"file_bytes": sizes["file"], "data_bytes": sizes["data"], "last_uss": last["uss"]}
    values |= {"first_uss_alone": one["first_uss"], "first_uss_with_two": two["first_uss"]}
    values["cached_after_exit"] = gone["cached"]
    measured = (
        f"{full['readers']} readers of a {sizes['file'] / 1e6:.0f} MB store: sum of RSS "
        f"{full['rss'] / MiB:.1f} MiB, sum of PSS {full['pss'] / MiB:.1f} MiB (pages holding "
        f"records {sizes['data'] / MiB:.1f} MiB), sum of USS {full['uss'] / MiB:.1f} MiB; reader "
        f"1's USS {one['first_uss'] / MiB:.1f} MiB alone, {two['first_uss'] / MiB:.1f} with reader "
        f"2; {gone['cached'] / MiB:.1f} MiB still cached after the last reader exited"
    )
    ratio = full["rss"] / full["pss"] if full["pss"] else 0.0
    if ratio > 0.8 * full["readers"] and gone["cached"] >= 0.9 * last["uss"]:
        verdict = "true: the pages exist once, in the page cache, and outlive the readers"
    else:
        verdict = (
            f"partly: the sum of RSS was {ratio:.1f}x the sum of PSS with {full['readers']} "
            f"readers, and {gone['cached'] / MiB:.1f} MiB stayed cached after the last exited"
        )
    return values, measured, verdict


def workers_summary(runs: list[EpochRun], list_bytes: int) -> tuple[dict, str, str]:
    """From the three ``run_epoch`` runs (list, NumPy, store, in that order): the values to
    record, and the claims table's "measured" and "verdict" sentences."""
    lst, arr, sto = runs
    workers = len(lst.start)
    arms = dict(zip(("list", "numpy", "store"), runs, strict=True))
    values = {f"{arm}_worker_growth": run.growth() for arm, run in arms.items()}
    values |= {f"{arm}_epoch_s": run.seconds for arm, run in arms.items()}
    values |= {"records": lst.items, "workers": workers, "list_bytes": list_bytes}
    measured = (
        f"{workers} forked workers over {lst.items:,} records (SMILES + 19 float32 each), one "
        f"epoch: private dirty memory per worker {lst.growth() / MiB:+.1f} MiB from a Python "
        f"list, {arr.growth() / MiB:+.1f} MiB from NumPy arrays in RAM, "
        f"{sto.growth() / MiB:+.1f} MiB from the mapped store; epochs {lst.seconds:.2f} s, "
        f"{arr.seconds:.2f} s, {sto.seconds:.2f} s"
    )
    if lst.growth() > 3 * max(arr.growth(), sto.growth()):
        verdict = (
            "true; a Python list 'shared' by fork is copied on read, and the cause is refcounted "
            "objects: NumPy arrays in RAM are not copied either"
        )
    else:
        verdict = "not shown clearly by this run: the list's workers grew about as much"
    return values, measured, verdict
