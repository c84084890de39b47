"""Notebook 07's working-set sweep: how fast a mapped working set stays as it crosses the budget.

One child maps the store and reads its first W bytes in ``PASSES`` passes (``bigger.passes``):
the first pass is cold (the file is evicted first), the others are warm if the pages stayed
in memory. Under a cgroup the page cache counts against the budget, so once W no longer fits
beside the child's own memory the warm passes read the set from storage again: *thrashing*.

Linux is not a pure least-recently-used cache: a page read again soon after it was dropped
(a *refault*, noticed by the kernel's workingset detection) is put straight on the active
list, so a set a little *under* the room may re-read for a pass or two and then settle, while
a set over the room never settles (MGLRU, where enabled, uses generations instead, and may
settle differently). Just over the room the active list keeps part of the set, so a pass
re-reads only part of it, and by a different amount each pass. So a set counts as thrashing by
what its *last* ``SETTLED`` warm passes read from storage: on average at least ``THRASHING``
of the set (a settled set reads nothing there). Time is the supporting measure (a slow moment
of the machine is not thrashing). A measurement whose last passes read, on average, between
``BORDER`` and 0.4 of the set is borderline and measured again.

``sweep`` measures a grid of W under each usable mechanism (interleaved), then ``refine``
bisects between the largest fast and the first thrashing W under the strongest one, to
``RESOLUTION``. ``WorkingSet.thrashes`` is the same criterion for the exercise.
"""

from __future__ import annotations

import itertools
import mmap
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmlab.course.bigger import PASSES, limited, mechanisms_here, own_memory, passes
from mmlab.instruments import memlimit
from mmlab.instruments.memlimitrun import LimitedRun

__all__ = [
    "BORDER",
    "RESOLUTION",
    "SETTLED",
    "THRASHING",
    "WHOLE",
    "Point",
    "Sweep",
    "WorkingSet",
    "bisect",
    "live_sweep",
    "measure",
    "sweep",
    "sweep_drawer",
    "try_working_set",
]

MiB = 2**20
SETTLED = 3  # the last warm passes that decide: the kernel's refault detection has settled
WHOLE = 0.9  # a set re-read "whole" on each pass: the slowdown is measured on the first
THRASHING = 0.25  # of the set, re-read per pass on average over those passes
BORDER = 0.1  # from here up to 0.4 of the set: borderline, measured again
RESOLUTION = MiB  # the bisection stops when fast and thrashing sets are this close


@dataclass
class Point:
    """One working set: each pass's seconds and bytes read from storage, the cgroup's
    refaults over the run (None without a cgroup) and the peak its limit counted."""

    size: int
    seconds: list[float]
    reads: list[int]
    refaults: int | None = None
    repeated: bool = False  # borderline at first, so measured twice (this is the second)

    @property
    def warm(self) -> float:
        """Median seconds of the last ``SETTLED`` passes, the ones the verdict judges."""
        return float(np.median(self.seconds[-SETTLED:]))

    @property
    def throughput(self) -> float:
        return self.size / self.warm

    @property
    def settled_reads(self) -> list[int]:
        """Bytes read from storage by each of the last ``SETTLED`` passes."""
        return self.reads[-SETTLED:]

    @property
    def reread(self) -> float:
        """The fraction of the set the last passes re-read from storage, on average."""
        return sum(self.settled_reads) / len(self.settled_reads) / self.size

    @property
    def thrashing(self) -> bool:
        return self.reread >= THRASHING

    @property
    def settling(self) -> bool:
        """Thrashing by the verdict, but each of the last passes re-read less than the one
        before, the last by a quarter less than the first: it had not settled *yet*."""
        r = self.settled_reads
        falling = all(b < a for a, b in itertools.pairwise(r))
        return self.thrashing and falling and r[-1] <= 0.75 * r[0]

    @property
    def borderline(self) -> bool:
        return BORDER <= self.reread <= 0.4

    @property
    def settled_after(self) -> int | None:
        """The last warm pass (1-based) that re-read a quarter of the set, if the set then
        settled."""
        heavy = [i for i, r in enumerate(self.reads[1:], 2) if r >= THRASHING * self.size]
        return heavy[-1] if heavy and not self.thrashing else None


def measure(path: Path, size: int, budget: int, mechanism: memlimit.Mechanism) -> Point:
    """``passes`` over the first ``size`` bytes in a child under ``budget``, cold; measured
    again once if borderline."""
    point = None
    for again in (False, True):
        done = limited(passes, path, size, PASSES, budget=budget, evict=path, mechanism=mechanism)
        if not done.completed:
            raise RuntimeError(f"the working set of {size:,} bytes: {done.outcome} {done.error}")
        seconds, reads = zip(*done.value, strict=True)
        if None in reads:  # thrashing is judged by re-reads: without them, say so
            raise RuntimeError(
                f"the working set of {size:,} bytes: its storage reads are unknown "
                "(/proc/self/io cannot be read here), so thrashing cannot be judged"
            )
        point = Point(size, list(seconds), list(reads), done.refaults, repeated=again)
        if not point.borderline:
            break
    assert point is not None
    return point


def _page(size: float) -> int:
    return int(size) // mmap.PAGESIZE * mmap.PAGESIZE


def bisect(
    thrashes: Callable[[int], bool], fast: int, slow: int, resolution: int = RESOLUTION
) -> tuple[int, int]:
    """(largest fast, smallest thrashing) sizes, ``resolution`` apart at most, between a
    ``fast`` size and a ``slow`` one."""
    while slow - fast > resolution:
        middle = _page((fast + slow) // 2)
        if middle in (fast, slow):
            break
        if thrashes(middle):
            slow = middle
        else:
            fast = middle
    return fast, slow


@dataclass
class Sweep:
    """Points per mechanism, in the order measured (interleaved between mechanisms), then
    those the bisection added under the strongest."""

    budget: int
    own: dict[str, int | None]  # None: the child's own charge is unknown (no peak counter)
    points: dict[str, list[Point]] = field(default_factory=dict)

    @property
    def strongest(self) -> str:
        return next(iter(self.points))

    def ordered(self, name: str) -> list[Point]:
        return sorted(self.points[name], key=lambda p: p.size)

    def small(self, name: str) -> list[Point]:
        """The sets of at most half the budget (or the smallest): the baseline's sets."""
        points = self.ordered(name)
        return [p for p in points if p.size <= self.budget // 2] or points[:1]

    def baseline(self, name: str) -> float:
        """Warm seconds per byte of the sets at most half the budget (median)."""
        return float(np.median([p.warm / p.size for p in self.small(name)]))

    def steady(self, name: str | None = None) -> Point | None:
        """The first set whose last passes re-read ``WHOLE`` of it or more on average (near
        the edge a set may re-read only part of itself, the kernel protecting some of its
        pages), else the first that thrashes and is not settling, or None."""
        kept = [p for p in self.ordered(name or self.strongest) if p.thrashing and not p.settling]
        whole = [p for p in kept if p.reread >= WHOLE]
        return (whole or kept or [None])[0]

    def slowdown(self, name: str, point: Point) -> float:
        return point.warm / point.size / self.baseline(name)

    def cliff(self, name: str | None = None) -> tuple[int, int | None]:
        """(the largest fast set below the first thrashing one, the first thrashing set or
        None), over every point measured (the grid and the bisection)."""
        ordered = self.ordered(name or self.strongest)
        fast = ordered[0].size
        for p in ordered:
            if p.thrashing:
                return fast, p.size
            fast = p.size
        return fast, None

    def point(self, size: int, name: str | None = None) -> Point:
        return next(p for p in self.points[name or self.strongest] if p.size == size)

    def room(self, name: str | None = None) -> int | None:
        """The budget minus what the child charges on its own; None where that is unknown."""
        own = self.own[name or self.strongest]
        return None if own is None else self.budget - own


def sweep(
    path: Path,
    budget: int,
    fractions: Sequence[float],
    *,
    live: Callable[[Sweep], None] | None = None,
) -> Sweep:
    """Working sets of ``fractions`` of the budget under each usable mechanism, interleaved;
    then a bisection of the cliff under the strongest, if it has one."""
    mechs = mechanisms_here()
    found = Sweep(budget, {m.name: own_memory(budget, m) for m in mechs})
    found.points = {m.name: [] for m in mechs}
    for fraction in fractions:
        for m in mechs:
            found.points[m.name].append(measure(path, _page(fraction * budget), budget, m))
            if live is not None:
                live(found)
    fast, slow = found.cliff()
    if slow is not None:

        def thrashes(size: int) -> bool:
            found.points[mechs[0].name].append(measure(path, size, budget, mechs[0]))
            if live is not None:
                live(found)
            return found.points[mechs[0].name][-1].thrashing

        bisect(thrashes, fast, slow)
    return found


class WorkingSet:
    """``thrashes(size)``: whether a child under ``budget`` that reads the first ``size``
    bytes of the store in passes still re-reads a quarter of it per pass on its last passes.
    Counts its calls (a borderline measurement is repeated inside one call)."""

    def __init__(self, path: Path, budget: int, limit_calls: int = 16) -> None:
        self.path, self.budget, self.limit_calls = path, budget, limit_calls
        self.mechanism = memlimit.best()
        self.own = own_memory(budget, self.mechanism) if self.mechanism.limits_page_cache else 0
        self.calls: list[Point] = []

    def thrashes(self, size: int) -> bool:
        if len(self.calls) >= self.limit_calls:
            raise RuntimeError(f"more than {self.limit_calls} measurements: search, don't scan")
        size = int(size)
        if not 0 < size <= os.path.getsize(self.path):
            raise ValueError(f"a working set must be 1 to {os.path.getsize(self.path):,} bytes")
        point = measure(self.path, size, self.budget, self.mechanism)
        self.calls.append(point)
        return point.thrashing


# -- drawn live ------------------------------------------------------------------------


def sweep_drawer(budget: int) -> Callable:
    """``draw(axes)`` for a two-panel LiveFigure: warm speed, and what the last passes
    re-read, against working set; the budget marked (the room too, where it differs)."""
    state: dict[str, Sweep] = {}

    def draw(axes) -> None:
        speed, reread = axes
        speed.clear()
        reread.clear()
        found = state.get("sweep")
        for i, name in enumerate(found.points if found else {}):
            ps = found.ordered(name)
            xs = [p.size / MiB for p in ps]
            speed.plot(xs, [p.throughput / MiB for p in ps], "o-", color=f"C{i}", label=name)
            reread.plot(xs, [p.reread for p in ps], "o-", color=f"C{i}", label=name)
        for ax in (speed, reread):
            ax.axvline(budget / MiB, color="k", linestyle="--", linewidth=1,
                       label=f"budget {budget / MiB:.0f} MiB")  # fmt: skip
            if found is not None and budget - found.room() > 2 * MiB:
                ax.axvline(found.room() / MiB, color="0.5", linestyle=":", label="room")
            ax.set_xlabel("working set (MiB)")
        speed.set(ylabel="warm passes (MiB/s)", title="speed of the warm passes")
        speed.set_ylim(bottom=0)
        reread.set(
            ylabel="fraction of the set (>1: read ahead)",
            title=f"re-read per pass, last {SETTLED} passes",
        )
        reread.set_ylim(-0.05, 1.35)
        reread.axhline(THRASHING, color="0.5", linewidth=0.8, label="thrashing from here")
        reread.legend(fontsize=8, loc="center right")
        speed.legend(fontsize=8, loc="lower left")

    def update(found: Sweep) -> None:
        state["sweep"] = found

    draw.update = update  # type: ignore[attr-defined]
    return draw


def live_sweep(path: Path, budget: int, fractions: Sequence[float]) -> Sweep:
    """``sweep`` with its figure redrawn after each working set."""
    from mmlab.instruments.live import LiveFigure

    draw = sweep_drawer(budget)
    with LiveFigure(draw, every=0.2, ncols=2, figsize=(10, 3.6)) as live:

        def redraw(found: Sweep) -> None:
            draw.update(found)
            live.update()

        return sweep(path, budget, fractions, live=redraw)


def try_working_set(path, size_mib: int, budget_mib: int, widget: bool | None = None) -> None:
    """Read the first ``size_mib`` MiB of the file in ``PASSES`` passes (as the sweep), in a
    child under ``budget_mib``: its memory drawn live, then each pass's time and bytes re-read."""
    from mmlab.instruments.live import LiveFigure

    budget = budget_mib * MiB
    now: dict[str, LimitedRun] = {}

    def draw(ax) -> None:
        ax.clear()
        r = now.get("run")
        if r is not None:
            t = r.series("t")
            ax.plot(t, [v / MiB for v in r.series("rss_file")], label="mapped file (RssFile)")
            if "usage" in r.samples:
                ax.plot(t, [v / MiB for v in r.series("usage")], label="cgroup charge", color="C3")
        ax.axhline(budget_mib, color="k", linestyle="--", linewidth=1.5, label="budget", zorder=5)
        ax.set(xlabel="seconds", ylabel="MiB", title=f"{size_mib} MiB read {PASSES} times")
        ax.legend(fontsize=8, loc="lower right")

    with LiveFigure(draw, every=0.1, figsize=(6, 3.2), widget=widget) as live:

        def sample(r: LimitedRun) -> None:
            now["run"] = r
            live.update()

        r = limited(
            passes, path, size_mib * MiB, PASSES, budget=budget, evict=path, on_sample=sample
        )
    print(_tried(r, size_mib * MiB))


def _tried(r: LimitedRun, size: int) -> str:
    if not r.completed:
        return f"the child ended: {r.outcome}"
    lines = [
        f"pass {i + 1} ({'cold' if i == 0 else 'warm'}): {seconds * 1e3:7.1f} ms, "
        f"{read / MiB:,.1f} MiB read from storage"
        for i, (seconds, read) in enumerate(r.value)
    ]
    last = sum(read for _, read in r.value[-SETTLED:]) / SETTLED
    if not r.mechanism.limits_page_cache:
        lines.append(
            f"{r.mechanism.name} does not limit the page cache: expect no change across the "
            "budget (a cgroup machine would show one)"
        )
    elif last >= THRASHING * size:
        falling = [read for _, read in r.value[-SETTLED:]]
        still = all(b < a for a, b in itertools.pairwise(falling))
        lines.append(
            f"not settled within {PASSES} passes, but its re-reads were still falling"
            if still and falling[-1] <= 0.75 * falling[0]
            else "thrashing: the last passes still re-read the set from storage"
        )
    else:
        lines.append(f"fast: settled within {PASSES} passes, the last ones found the set in memory")
    return "\n".join(lines)
