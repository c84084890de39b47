"""What a DataLoader epoch costs, with and without workers: notebook 06's last measurement.

With no workers, an epoch is ``dataset[i]`` and collating, in this process. With workers,
each batch must also be handed over: the worker puts the batch's tensor in shared memory and
pickles its handle into a pipe, and this process unpickles it. ``speed_lines`` sets the CPU
time the workers and this process's main thread used per batch against the work itself, and
from it the best epoch the workers could reach on the CPUs this process may use:
``usable_cpus`` takes the fewer of the CPUs in its affinity mask and its cgroup's CPU quota
(a container may see 64 CPUs yet be allowed 2).

The reveals of the notebook's predictions about the workers, each from the run's own numbers:
``why_list_growth`` (what a list worker copied), ``numpy_arm`` and ``why_numpy_arm`` (whether
NumPy arrays in RAM stay flat under fork), ``freeze_effect`` and ``why_freeze``
(``gc.freeze()``), ``why_forkserver_gap`` (what pickling puts into each worker), and
``workers_effect`` and ``why_workers_speed`` (whether workers made the epoch faster).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmlab.course.workers import EpochRun

__all__ = [
    "epoch_in_process",
    "freeze_effect",
    "numpy_arm",
    "one_sample",
    "speed_lines",
    "usable_cpus",
    "why_forkserver_gap",
    "why_freeze",
    "why_list_growth",
    "why_numpy_arm",
    "why_workers_speed",
    "workers_effect",
]

MiB = 2**20
_PAGE = os.sysconf("SC_PAGE_SIZE")


def usable_cpus(report) -> tuple[float, str]:
    """CPUs the workers may run on at once, from a ``machine.report``: the fewer of
    ``cpus_usable`` (affinity) and ``cgroup_cpu_limit`` (a quota may be fractional: 1.5 CPUs
    is 1.5 CPU-seconds per second, however many threads run); and a phrase naming both."""
    aff = report.cpus_usable
    cpus: float = aff.value if aff.known else os.cpu_count() or 1
    said = f"affinity {cpus}" if aff.known else f"os.cpu_count() {cpus}"
    quota = report.cgroup_cpu_limit
    if quota.known and not isinstance(quota.value, str):
        cpus = min(cpus, quota.value)
        said += f", cgroup CPU quota {quota.value:g}"
    else:
        said += f", cgroup CPU quota {quota.value if quota.known else 'unknown'}"
    return cpus, f"{cpus:g} CPUs ({said})"


def epoch_in_process(dataset, *, batch_size: int = 256) -> float:
    """Seconds for one shuffled epoch with no workers: ``dataset[i]`` and collating only."""
    from torch.utils.data import DataLoader

    began = time.perf_counter()
    for _ in DataLoader(dataset, batch_size=batch_size, shuffle=True):
        pass
    return time.perf_counter() - began


def speed_lines(
    runs: list[EpochRun],
    per_batch: dict[str, float],
    alone: dict[str, float],
    cpus: float,
    cpus_said: str | None = None,
) -> list[str]:
    """Cell lines: per batch, the work (getitem + collate timed in this process, ``per_batch``,
    seconds) against the CPU the workers and this process's main thread used; epochs without
    workers (``alone``) beside work x batches, and with workers; and the best epoch those CPU
    times allow on ``cpus`` idle CPUs (the main thread's share is serial, the workers' spreads
    over at most one CPU each). ``cpus_said`` names where ``cpus`` came from."""
    lines, cost, best_ratio = [], [], []
    for run in runs:
        n, work = run.batches, per_batch[run.label]
        w, m = run.worker_cpu_s / n, run.main_cpu_s / n
        best = _best_epoch(run, cpus)
        best_ratio.append(best / alone[run.label])
        cost.append((w + m - work) * 1e3)
        lines.append(
            f"{run.label}: the work {work * 1e3:.2f} ms per batch x {n:,} batches = {work * n:.2f}"
            f" s; epoch without workers {alone[run.label]:.2f} s; with {len(run.start)} workers "
            f"{run.seconds:.2f} s, their CPU {w * 1e3:.2f} ms + this process's {m * 1e3:.2f} ms "
            f"per batch (best on {cpus:g} idle CPUs: {best:.2f} s)"
        )
    lines.append(f"CPUs the workers may use: {cpus_said or f'{cpus:g}'}")
    gap = [alone[r.label] / (per_batch[r.label] * r.batches) for r in runs]
    lines.append(
        f"epochs without workers took {min(gap):.1f} to {max(gap):.1f}x the work x batches: the "
        "rest is the DataLoader's own steps (shuffled indices, fetching), can be CPU cache "
        "misses (the timing repeats one batch, whose records stay cached; an epoch reads all), "
        "and, on a busy machine, time other processes held the CPUs (an epoch is wall time)"
    )
    ratios = [run.seconds / alone[run.label] for run in runs]
    slower, faster = sum(r > 1.2 for r in ratios), sum(r < 1 / 1.2 for r in ratios)
    rest = len(runs) - slower - faster
    unsure = f", {rest} within 20%" if rest else ""
    lines.append(
        f"-> with workers, {slower} of {len(runs)} arms were over 1.2x slower, {faster} over "
        f"1.2x faster{unsure}"
    )
    lines.append(f"   {one_sample(runs, alone)}")
    if min(cost) > 0:
        win, lose = sum(r < 1 / 1.1 for r in best_ratio), sum(r > 1.1 for r in best_ratio)
        lines.append(
            f"-> handing each batch over (shared memory, pickling, unpickling) cost {min(cost):.2f}"
            f" to {max(cost):.2f} ms of CPU per batch on top of the work; even on {cpus:g} idle "
            f"CPUs, workers could beat no workers by over 10% in {_count(win, len(runs))} arms, "
            f"and would lose by over 10% in {_count(lose, len(runs))}"
        )
    else:
        lines.append("-> this run cannot tell what handing batches over costs (CPU times noisy)")
    return lines


def _count(k: int, n: int) -> str:
    """ "none of the 3", "2 of 3", "all 3"."""
    return f"none of the {n}" if k == 0 else f"all {n}" if k == n else f"{k} of {n}"


def one_sample(runs: list[EpochRun], alone: dict[str, float]) -> str:
    """What one epoch per arm each way can support: each arm was timed once with workers
    (section 3) and once without (later), not interleaved, so a ratio is one sample."""
    ratios = [run.seconds / alone[run.label] for run in runs]
    same_way = all(r > 1.2 for r in ratios) or all(r < 1 / 1.2 for r in ratios)
    return (
        f"One epoch per arm each way (with / without workers: {min(ratios):.1f} to "
        f"{max(ratios):.1f}x), timed in different cells, not interleaved: one sample each. "
        "On a busy or shared machine one epoch can swing by 20% or more, so "
        + (
            f"what the verdict rests on is that all {len(runs)} arms went the same way, each "
            "by over 1.2x; rerun both cells to see how much the ratios move."
            if same_way
            else "this run cannot say more than which way the median arm went; rerun both cells."
        )
    )


# -- the reveals: what the workers did in this run, and why ---------------------------------


def why_list_growth(runs: list[EpochRun], fp: dict[str, int]) -> str:
    """Why a Python-list worker's private dirty memory grew as it did (runs: list, NumPy,
    store; ``fp``: ``workers.footprint`` of the list)."""
    lst, arr = runs[0], runs[1]
    copied = lst.growth() - arr.growth()
    objects = fp["objects"]
    return (
        f"the list holds {objects / MiB:.1f} MiB of refcounted objects (the list, a tuple, a "
        f"string and an array header per record) beside {fp['array_data'] / MiB:.1f} MiB of "
        f"array data. A list worker grew {lst.growth() / MiB:.1f} MiB: the NumPy worker's "
        f"{arr.growth() / MiB:.1f} MiB that every worker allocates for itself, plus "
        f"{copied / MiB:.1f} MiB copied ({copied / objects:.0%} of the objects). Reading a "
        "record writes the refcounts of its objects, and the kernel copies the whole page on "
        f"the first write ({_PAGE // 1024} KiB here): every page holds objects of many records, "
        f"so each of the {len(lst.start)} workers copies nearly every page of them, though it "
        "reads only its share of the records. Larger pages copy more per write, never less."
    )


def numpy_arm(runs: list[EpochRun], fp: dict[str, int]) -> str:
    """ "flat" if the NumPy worker grew like the store's (``workers.arms_alike``: apart by
    under a quarter of what the list worker copied), else "grows"."""
    from mmlab.course.workers import arms_alike

    return "flat" if arms_alike(runs) else "grows"


def why_numpy_arm(runs: list[EpochRun], fp: dict[str, int]) -> str:
    """Why NumPy arrays in RAM, shared by fork, grew (or not) like the mapped store."""
    lst, arr, sto = runs
    head = (
        f"per worker, the NumPy arm grew {arr.growth() / MiB:+.1f} MiB, the mapped store "
        f"{sto.growth() / MiB:+.1f} MiB, the list {lst.growth() / MiB:+.1f} MiB. "
    )
    if numpy_arm(runs, fp) == "flat":
        return head + (
            "The arrays are three objects whose data buffers hold no refcounts: reading a "
            "record writes only the three arrays' own counts (a page or two), so the data "
            "stays shared although it is in RAM, not mapped. What is copied is decided by "
            "refcounted objects, not by RAM against mmap."
        )
    return head + (
        "Here the NumPy workers grew more than the store's by over a quarter of what a list "
        "worker copied: something else wrote to their pages (memory pressure, or another process); "
        "the arrays' buffers hold no refcounts, so reading them alone copies nothing."
    )


def freeze_effect(plain: EpochRun, frozen: EpochRun) -> str:
    """ "less" if ``gc.freeze()`` cut a list worker's growth by over a fifth, else "same"."""
    return "less" if frozen.growth() < 0.8 * plain.growth() else "same"


def why_freeze(plain: EpochRun, frozen: EpochRun, items: list) -> str:
    """Why ``gc.freeze()`` did (not) stop a list worker's copies: whether the cyclic collector
    tracks the list's tuples at all, and the growth with and without it."""
    import gc

    sample = items[:: max(1, len(items) // 10_000)]
    tracked = sum(gc.is_tracked(t) for t in sample)
    head = (
        f"a list worker grew {plain.growth() / MiB:+.1f} MiB; with gc.freeze() "
        f"{frozen.growth() / MiB:+.1f} MiB. The cyclic collector tracks {tracked:,} of "
        f"{len(sample):,} of the list's tuples checked (a tuple of a string and an array "
        "holds no container, so Python untracks it). "
    )
    if freeze_effect(plain, frozen) == "same":
        return head + (
            "gc.freeze() only keeps the collector from scanning (and writing to) the objects "
            "it tracks; every read still writes a refcount, and that write alone copies the "
            "page."
        )
    return head + (
        "Here the collector's own writes were a real share of the copies, and freezing "
        "removed them; the refcount writes of reading remain."
    )


def why_forkserver_gap(served: list[EpochRun], array_bytes: int) -> str:
    """Why a forkserver NumPy worker holds more USS than a store worker (runs: NumPy, store)."""
    arr, sto = served
    gap = arr.after() - sto.after()
    return (
        f"with {arr.start_method}, a NumPy worker held {arr.after() / MiB:.1f} MiB of USS and "
        f"a store worker {sto.after() / MiB:.1f} MiB: {gap / MiB:.1f} MiB more, "
        f"{gap / array_bytes:.0%} of the arrays' {array_bytes / MiB:.1f} MiB. A worker that is "
        "not forked from this process gets the dataset pickled into it: the arrays arrive as a "
        "private copy in each worker's anonymous memory, while the store pickles only its "
        "path, and its workers map the same page-cache pages, which count in no worker's USS "
        "once two map them. This holds under spawn (the default on macOS and Windows) and "
        "forkserver (the default on Linux from Python 3.14)."
    )


def workers_effect(runs: list[EpochRun], alone: dict[str, float]) -> str:
    """ "faster", "slower" or "same" (within 20%): the median arm's epoch with workers against
    its epoch without."""
    ratios = sorted(run.seconds / alone[run.label] for run in runs)
    median = ratios[len(ratios) // 2]
    return "slower" if median > 1.2 else "faster" if median < 1 / 1.2 else "same"


def _best_epoch(run: EpochRun, cpus: float) -> float:
    """The fastest epoch the run's CPU times allow on ``cpus`` idle CPUs: this process's main
    thread is serial, each worker runs on one CPU at a time."""
    w, m = run.worker_cpu_s / run.batches, run.main_cpu_s / run.batches
    return run.batches * max(m, w / min(len(run.start), cpus), (w + m) / cpus)


def why_workers_speed(
    runs: list[EpochRun],
    per_batch: dict[str, float],
    alone: dict[str, float],
    cpus: float,
    cpus_said: str,
) -> str:
    """Why workers made the epochs faster or slower here (``workers_effect``): the work per
    batch against the CPU the hand-over cost, and the best epoch on idle CPUs."""
    outcome = workers_effect(runs, alone)
    parts, could_win, waited = [], 0, False
    for run in runs:
        cpu = (run.worker_cpu_s + run.main_cpu_s) / run.batches
        best = _best_epoch(run, cpus)
        could_win += best < alone[run.label] / 1.1  # by over 10%, as speed_lines says
        waited = waited or run.seconds > 1.2 * best
        parts.append(
            f"{run.label} {alone[run.label]:.2f} s without workers, {run.seconds:.2f} s with "
            f"(best on idle CPUs {best:.2f} s; work {per_batch[run.label] * 1e3:.2f} ms per "
            f"batch, CPU spent {cpu * 1e3:.2f} ms)"
        )
    head = f"epochs: {'; '.join(parts)}. Usable: {cpus_said}. {one_sample(runs, alone)} "
    if outcome == "same":
        return head + (
            "With and without workers the median arm was within 20%. "
            "Handing each batch over (shared memory, pickling, unpickling here) costs CPU on "
            "top of the work, which the workers' parallel work must win back."
        )
    if outcome == "faster":
        return head + (
            "The work, split over the workers, saved more than handing the batches over cost: "
            "workers pay when dataset[i] does real work per item and CPUs are idle."
        )
    wait = (
        "they waited, for CPUs that other processes were using meanwhile (on a shared "
        "machine) or on the hand-over itself (a batch waits in the pipe until this process "
        "takes it)"
    )
    if could_win * 2 > len(runs):
        return head + (
            "On idle CPUs the workers could have beaten no workers by over 10% in "
            f"{_count(could_win, len(runs))} arms (the best epochs above), yet they lost: "
            f"their CPU times do not explain it, so {wait}."
        )
    return head + (
        "Even on idle CPUs, workers could have beaten no workers by over 10% in "
        f"{_count(could_win, len(runs))} arms: handing each batch over (shared memory, pickling, "
        "unpickling here) costs about as much CPU as splitting the work saves when dataset[i] "
        "takes microseconds."
        + (f" And the epochs with workers took over 1.2x even that best: {wait}." if waited else "")
    )
