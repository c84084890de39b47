"""Notebook 07's sweep, in words: per working set what each pass re-read, and where the cliff is.

Built from ``mmlab.course.workingset``'s sweep under each limit this machine offers: a
working set that keeps re-reading itself from storage is thrashing (a cgroup limits the page
cache), one that settles is fast, and under RLIMIT_DATA (no page-cache limit) nothing
thrashes and the cliff predictions cannot be measured here. ``mmlab.course.biggerplots``
gathers these with the naive loads' explanations for the notebook.
"""

from __future__ import annotations

from mmlab.course.bigger import PASSES
from mmlab.course.workingset import SETTLED, THRASHING, WHOLE, Sweep
from mmlab.instruments import memlimit

__all__ = [
    "exercise_reveal",
    "largest_fast",
    "read_above",
    "slowdown_above",
    "sweep_lines",
    "what_happened",
    "why_cliff",
    "why_read",
    "why_slowdown",
]

MiB = 2**20


def _mib(n: float | None) -> str:
    return "unknown" if n is None else f"{n / MiB:,.1f} MiB"


def _kind(sweep: Sweep, name: str, p) -> str:
    if p.settling:
        return f"NOT SETTLED within {PASSES} passes (re-reads still falling)"
    if p.thrashing:
        return "THRASHING"
    if p.settled_after is not None:
        return f"fast (settled after pass {p.settled_after})"
    slow = sweep.slowdown(name, p) > 2
    return "fast (slower per byte, but nothing re-read: not thrashing)" if slow else "fast"


def sweep_lines(sweep: Sweep) -> list[str]:
    """Per working set: each pass's MiB read from storage, the warm speed, the verdict."""
    lines = [
        f"fast: settled within {PASSES} passes, i.e. the last {SETTLED} re-read less than "
        f"{THRASHING:.0%} of the set from storage on average (settled after pass k: re-read "
        "until pass k, then not); THRASHING: they re-read more; NOT SETTLED: more, but "
        f"falling pass by pass. Warm speed: the median of the last {SETTLED} passes; x per "
        "byte: their seconds per byte over the median of the sets of at most half the budget ("
        + ", ".join(_mib(p.size) for p in sweep.small(sweep.strongest))
        + ")"
    ]
    for name in sweep.points:
        lines.append(
            f"{name} (the child's own charge: {_mib(sweep.own[name])}); MiB read from storage "
            "by pass 1 (cold), 2, 3, ...:"
        )
        for p in sweep.ordered(name):
            reads = " ".join(f"{r / MiB:4.0f}" for r in p.reads)
            again = " (measured twice)" if p.repeated else ""
            lines.append(
                f"  {_mib(p.size):>10}: {reads} | warm {p.throughput / MiB:7,.0f} MiB/s "
                f"({sweep.slowdown(name, p):4.1f}x per byte) {_kind(sweep, name, p)}{again}"
            )
    return lines


def largest_fast(sweep: Sweep) -> float | None:
    """MiB: the largest fast working set under a cgroup; None where the page cache is free."""
    fast, slow = sweep.cliff()
    return None if slow is None else round(fast / MiB, 1)


def what_happened(sweep: Sweep) -> str:
    """Which of the two outcomes this run shows, cliff or flat, and why."""
    name = sweep.strongest
    fast, slow = sweep.cliff()
    if slow is None:
        return (
            f"Here: no cliff. Under {name} no working set up to {_mib(fast)} kept re-reading "
            "from storage: the page cache is not limited, so every set stays cached. A "
            "cgroup machine (see the class results) shows the cliff."
        )
    settled = [p for p in sweep.ordered(name) if p.settled_after is not None]
    settle = (
        " Sets just under the room re-read at first and then settled ("
        + ", ".join(f"{_mib(p.size)} after pass {p.settled_after}" for p in settled)
        + "): the kernel noticed the refaults and kept those pages active."
        if settled
        else " No set re-read on a warm pass and then settled: the cliff was sharp here."
    )
    return (
        f"Here: a cliff under {name}. {_mib(fast)} settled within {PASSES} passes and "
        f"{_mib(slow)} still re-read "
        f"{sweep.point(slow).reread:.0%} of the set per pass over its last {SETTLED} passes; "
        f"the room is the budget minus the child's own charge, {_mib(sweep.room())}.{settle}"
    )


def why_cliff(sweep: Sweep) -> str:
    fast, slow = sweep.cliff()
    if slow is None:
        return (
            f"this machine cannot measure it: {sweep.strongest} does not limit the page cache, "
            f"so no working set up to {_mib(fast)} thrashed; a cgroup machine's result (class "
            "results) answers the question"
        )
    room = sweep.room()
    if room is None:
        return (
            f"bisected: {_mib(fast)} settled within {PASSES} passes, {_mib(slow)} did not; the "
            "room (the budget minus the child's own charge) is unknown here: the cgroup has no "
            "peak counter and none of its charge was sampled"
        )
    below = room - slow
    settled = [p for p in sweep.ordered(sweep.strongest) if p.settled_after is not None]
    later = ", ".join(f"{_mib(p.size)} after pass {p.settled_after}" for p in settled)
    if sweep.point(slow).settling:
        edge = (
            f"{_mib(slow)} lies {_mib(below)} below the room and its re-reads were still "
            f"falling: sets just under the room settle ever later ({later or 'none settled'}"
            f"), so the last ones below it had not settled within {PASSES} passes. The edge "
            f"measured is 'settled within {PASSES} passes': with more passes it would move "
            "towards the room"
        )
    elif below > 2 * MiB:
        edge = (
            f"the edge lies {_mib(below)} below the room: the charge also holds what the room "
            "misses, likely the passes' page tables, kernel memory and pages read ahead past "
            "the set; and the edge moves by a few MiB from run to run (how late a set near the "
            "room settles varies)"
        )
    else:
        edge = (
            "the edge is within a MiB or two of the room: what fits beside the child's own "
            "pages stays cached"
        )
    return (
        f"bisected: {_mib(fast)} settled within {PASSES} passes, {_mib(slow)} did not, and "
        f"the room (the "
        f"{_mib(sweep.budget)} budget minus the child's own {_mib(sweep.budget - room)}) is "
        f"{_mib(room)}; {edge}"
    )


def slowdown_above(sweep: Sweep) -> float | None:
    """How much slower per byte the last warm passes of the first set that kept re-reading
    (not still settling) were than the small sets', or None."""
    p = sweep.steady()
    return None if p is None else round(sweep.slowdown(sweep.strongest, p), 1)


def why_slowdown(sweep: Sweep) -> str:
    p = sweep.steady()
    if p is None:
        return f"this machine cannot measure it: no set kept re-reading under {sweep.strongest}"
    reads = ", ".join(f"{r / MiB:.0f}" for r in p.reads[1:])
    _, slow = sweep.cliff()
    before = (
        f" (not the smaller {_mib(slow)}, which did not settle within {PASSES} passes but "
        f"re-read {sweep.point(slow).reread:.0%} of itself: near the edge the kernel may "
        "protect part of a set)"
        if slow != p.size
        else ""
    )
    return (
        f"the first set whose last passes re-read {WHOLE:.0%} of it or more, "
        f"{_mib(p.size)}{before}: its warm passes read {reads} MiB from storage; reading in "
        "order drops the oldest pages first, so each pass finds the pages it needs next "
        "dropped; the slowdown, against the sets of at most half the budget, is memory speed "
        "over storage speed here"
    )


def read_above(sweep: Sweep) -> float | None:
    """MiB read from storage per warm pass at the largest set (twice the budget); None where
    the page cache is not limited (nothing to measure)."""
    if not _limits(sweep):
        return None
    p = max(sweep.points[sweep.strongest], key=lambda p: p.size)
    return round(sum(p.settled_reads) / len(p.settled_reads) / MiB, 1)


def _limits(sweep: Sweep) -> bool:
    """Whether the strongest mechanism of the sweep limits the page cache."""
    return sweep.strongest != memlimit.RLIMIT


def why_read(sweep: Sweep) -> str:
    p = max(sweep.points[sweep.strongest], key=lambda p: p.size)
    if not _limits(sweep):
        return (
            f"this machine cannot measure it: {sweep.strongest} leaves the page cache alone, "
            f"so a {_mib(p.size)} set was read from storage once (cold) and never again"
        )
    cold = p.reads[0]
    warm = sum(p.settled_reads) / len(p.settled_reads)
    dropped = (
        ", and under the limit some pages read ahead are dropped before the pass reaches "
        "them, and read again"
        if cold - warm > 2 * MiB
        else ""
    )
    return (
        f"a {_mib(p.size)} set under a {_mib(sweep.budget)} budget: the whole set is read "
        f"again on each pass, as on a machine whose memory is full; the cold pass read "
        f"{_mib(cold)}, {_mib(max(cold - p.size, 0))} more than the set: readahead reads "
        f"past its end{dropped}. The warm passes read "
        f"{warm / p.size:.2f}x the set ({_mib(warm - p.size)} more): each also reads about "
        "one readahead window past the set's end"
    )


def exercise_reveal(measured: dict) -> tuple[float | None, str]:
    """The check's reference answer (MiB) and why, from ``check.largest_fast``'s measurements."""
    fast = measured.get("fast")
    if fast is None:
        return None, "the check stopped before its reference search: nothing was measured"
    slow = measured.get("slow")
    if slow is None:
        return None, (
            f"this machine cannot measure it: under {measured['mechanism']} nothing up to "
            f"{_mib(fast)} thrashed (the page cache is not limited)"
        )
    answer = measured.get("answer")
    yours = "" if answer is None else f"; your search answered {_mib(answer)}"
    earlier = [f for f, s in measured.get("earlier", []) if s is not None and f != fast]
    moved = (
        "; an earlier call's reference found "
        + ", ".join(_mib(f) for f in earlier)
        + ": the edge moves by a few MiB from run to run, because sets just under the room "
        f"take ever more passes to settle and may or may not settle within {PASSES}"
        if earlier
        else "; the edge moves by a few MiB between runs (sets just under the room settle "
        f"late, within {PASSES} passes or not), so another call may find it elsewhere"
    )
    return round(fast / MiB, 1), (
        f"the last check's own bisection under a {_mib(measured['budget'])} budget: settled "
        f"within {PASSES} passes at {_mib(fast)}, not at {_mib(slow)}; the room there was "
        f"{_mib(measured['room'])}{yours}{moved}"
    )
