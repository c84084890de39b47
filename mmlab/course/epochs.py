"""What a DataLoader epoch costs, with and without workers: notebook 06's last measurement.

With no workers, an epoch is ``dataset[i]`` and collating, in this process. With workers,
each batch must also be handed over: the worker puts the batch's tensor in shared memory and
pickles its handle into a pipe, and this process unpickles it. ``speed_lines`` sets the CPU
time the workers and this process's main thread used per batch against the work itself, and
from it the best epoch the workers could reach on the CPUs this process may use:
``usable_cpus`` takes the fewer of the CPUs in its affinity mask and its cgroup's CPU quota
(a container may see 64 CPUs yet be allowed 2).
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmlab.course.workers import EpochRun

__all__ = ["epoch_in_process", "speed_lines", "usable_cpus"]


def usable_cpus(report) -> tuple[int, str]:
    """CPUs the workers may run on at once, from a ``machine.report``: the fewer of
    ``cpus_usable`` (affinity) and ``cgroup_cpu_limit`` rounded up; and a phrase naming both."""
    aff = report.cpus_usable
    cpus = aff.value if aff.known else os.cpu_count() or 1
    said = f"affinity {cpus}" if aff.known else f"os.cpu_count() {cpus}"
    quota = report.cgroup_cpu_limit
    if quota.known and not isinstance(quota.value, str):
        cpus = min(cpus, max(1, math.ceil(quota.value)))
        said += f", cgroup CPU quota {quota.value:g}"
    else:
        said += f", cgroup CPU quota {quota.value if quota.known else 'unknown'}"
    return cpus, f"{cpus} CPUs ({said})"


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
    cpus: int,
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
        best = n * max(m, w / min(len(run.start), cpus), (w + m) / cpus)
        best_ratio.append(best / alone[run.label])
        cost.append((w + m - work) * 1e3)
        lines.append(
            f"{run.label}: the work {work * 1e3:.2f} ms per batch x {n:,} batches = {work * n:.2f}"
            f" s; epoch without workers {alone[run.label]:.2f} s; with {len(run.start)} workers "
            f"{run.seconds:.2f} s, their CPU {w * 1e3:.2f} ms + this process's {m * 1e3:.2f} ms "
            f"per batch (best on {cpus} idle CPUs: {best:.2f} s)"
        )
    lines.append(f"CPUs the workers may use: {cpus_said or cpus}")
    gap = [alone[r.label] / (per_batch[r.label] * r.batches) for r in runs]
    lines.append(
        f"epochs without workers took {min(gap):.1f} to {max(gap):.1f}x the work x batches: the "
        "rest is the DataLoader's own steps (shuffled indices, fetching) and can be CPU cache "
        "misses (the timing repeats one batch, whose records stay cached; an epoch reads all)"
    )
    ratios = [run.seconds / alone[run.label] for run in runs]
    slower, faster = sum(r > 1.2 for r in ratios), sum(r < 1 / 1.2 for r in ratios)
    rest = len(runs) - slower - faster
    unsure = f", {rest} within 20% (one run cannot tell)" if rest else ""
    lines.append(
        f"-> with workers, {slower} of {len(runs)} arms were over 1.2x slower, {faster} over "
        f"1.2x faster{unsure}"
    )
    if min(cost) > 0:
        win, lose = sum(r < 1 / 1.1 for r in best_ratio), sum(r > 1.1 for r in best_ratio)
        lines.append(
            f"-> handing each batch over (shared memory, pickling, unpickling) cost {min(cost):.2f}"
            f" to {max(cost):.2f} ms of CPU per batch on top of the work; even on {cpus} idle "
            f"CPUs, workers could beat no workers by over 10% in {win} of {len(runs)} arms, and "
            f"would lose by over 10% in {lose}"
        )
    else:
        lines.append("-> this run cannot tell what handing batches over costs (CPU times noisy)")
    return lines
