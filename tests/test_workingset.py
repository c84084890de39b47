"""Notebook 07's working-set sweep: the thrashing criterion, the bisection, and what is said.

Points and sweeps are made up, one per outcome (fast, settled, thrashing, borderline; a cliff
under a cgroup, none under RLIMIT_DATA), so each rule and each sentence the notebook may print
is exercised without depending on this machine's timing. ``measure`` is run on a fake child
that is borderline first, to show it measures again.
"""

from __future__ import annotations

import pytest

from mmlab.course import biggerplots, workingset
from mmlab.course.workingset import Point, Sweep
from mmlab.instruments import memlimit
from mmlab.instruments.memlimitrun import LimitedRun

MiB = 2**20


def _point(size: int, warm: float, reads: list[int]) -> Point:
    return Point(size, [1.0] + [warm] * (len(reads) - 1), reads)


def test_a_set_thrashes_by_what_its_last_passes_reread():
    size = 64 * MiB
    assert not _point(size, 0.01, [size, 0, 0, 0, 0, 0]).thrashing
    settled = _point(size, 0.01, [size, size, size // 2, 0, 0, 0])
    assert not settled.thrashing and settled.settled_after == 3
    partial = _point(size, 0.1, [size, size, 20 * MiB, 48 * MiB, 21 * MiB, 40 * MiB])
    assert partial.thrashing and not partial.borderline  # a part, a different part each pass
    assert _point(size, 0.1, [size, size, size, 0, 0, 32 * MiB]).borderline


def _sweep(edge: int | None, name: str = "cgroup v1") -> Sweep:
    budget = 96 * MiB
    found = Sweep(budget, {name: MiB})
    sizes = [24, 48, 72, 90, 92, 96, 192]
    found.points = {
        name: [
            _point(
                s * MiB,
                s * (1e-3 if edge is None or s * MiB < edge else 1e-2),
                [s * MiB, 0, 0, 0, 0, 0] if edge is None or s * MiB < edge else [s * MiB] * 6,
            )
            for s in sizes
        ]
    }
    if edge is not None:  # a set just under the edge that settled
        found.points[name].append(_point(91 * MiB, 0.091, [91 * MiB, 91 * MiB, 0, 0, 0, 0]))
    return found


def test_the_cliff_and_its_explanations_come_from_the_points():
    found = _sweep(92 * MiB)
    assert found.cliff() == (91 * MiB, 92 * MiB)
    assert biggerplots.largest_fast(found) == 91.0
    assert biggerplots.slowdown_above(found) == pytest.approx(10.0)
    assert found.steady().size == 92 * MiB  # the first to re-read all of itself
    assert biggerplots.read_above(found) == 192.0
    assert "91.0 MiB settled within 7 passes, 92.0 MiB did not" in biggerplots.why_cliff(found)
    assert "below the room" in biggerplots.why_cliff(found)  # room 95 MiB, edge 92 MiB
    assert "91.0 MiB after pass 2" in biggerplots.what_happened(found)
    lines = biggerplots.sweep_lines(found)
    assert any("THRASHING" in line and "192.0 MiB" in line for line in lines)
    assert any("settled after pass 2" in line for line in lines)


def test_without_a_page_cache_limit_the_cliff_predictions_are_not_measured():
    found = _sweep(None, name=memlimit.RLIMIT)
    assert found.cliff()[1] is None
    assert biggerplots.largest_fast(found) is None
    assert biggerplots.slowdown_above(found) is None
    assert biggerplots.read_above(found) is None
    for text in (biggerplots.why_cliff(found), biggerplots.why_slowdown(found)):
        assert text.startswith("this machine cannot measure it")
    assert biggerplots.why_read(found).startswith("this machine cannot measure it")
    assert biggerplots.what_happened(found).startswith("Here: no cliff")


def test_the_bisection_finds_the_edge_to_its_resolution():
    edge = 61 * MiB + 12345
    asked = []

    def thrashes(size: int) -> bool:
        asked.append(size)
        return size >= edge

    fast, slow = workingset.bisect(thrashes, 16 * MiB, 128 * MiB)
    assert fast < edge <= slow and slow - fast <= workingset.RESOLUTION
    assert len(asked) <= 8


def _finished(reads: list[int]) -> LimitedRun:
    done = LimitedRun(memlimit.Mechanism("cgroup v1", True, "a test", "/nowhere"), 64 * MiB)
    done.outcome, done.value = "completed", [(0.01, r) for r in reads]
    return done


def test_a_borderline_measurement_is_measured_again(monkeypatch):
    size = 32 * MiB
    children = iter([[size, size, 0, 0, 32 * MiB, 0, 0], [size, 0, 0, 0, 0, 0, 0]])
    monkeypatch.setattr(workingset, "limited", lambda *a, **k: _finished(next(children)))
    point = workingset.measure("unused", size, 64 * MiB, memlimit.best())
    assert point.repeated and not point.thrashing


def test_trying_one_set_says_what_to_expect_under_each_mechanism():
    size = 32 * MiB
    thrashed = _finished([size] * 8)
    assert "thrashing" in workingset._tried(thrashed, size)
    thrashed.mechanism = memlimit.Mechanism(memlimit.RLIMIT, True, "a test")
    assert "expect no change across the budget" in workingset._tried(thrashed, size)


def test_a_set_still_settling_is_named_so_and_the_slowdown_skips_it():
    found = _sweep(92 * MiB)
    late = _point(93 * MiB, 0.05, [93 * MiB, 93 * MiB, 90 * MiB, 80 * MiB, 60 * MiB, 40 * MiB])
    found.points["cgroup v1"].append(late)
    assert late.thrashing and late.settling
    assert not found.point(96 * MiB).settling  # re-reads the whole set every pass
    assert found.cliff() == (91 * MiB, 92 * MiB)
    found.points["cgroup v1"] = [p for p in found.points["cgroup v1"] if p.size != 92 * MiB]
    assert found.cliff() == (91 * MiB, 93 * MiB) and found.steady().size == 96 * MiB
    assert biggerplots.slowdown_above(found) == pytest.approx(10.0)
    assert "96.0 MiB (not the smaller 93.0 MiB" in biggerplots.why_slowdown(found)
    partial = _point(94 * MiB, 0.05, [94 * MiB, 94 * MiB, 94 * MiB, 60 * MiB, 20 * MiB, 40 * MiB])
    found.points["cgroup v1"].append(partial)
    assert partial.thrashing and not partial.settling and found.steady().size == 96 * MiB
    assert "settle ever later (91.0 MiB after pass 2)" in biggerplots.why_cliff(found)
    lines = biggerplots.sweep_lines(found)
    assert any("93.0 MiB" in line and "NOT SETTLED" in line for line in lines)
    assert "24.0 MiB, 48.0 MiB)" in lines[0]  # the baseline's sets


def test_the_exercise_reveal_names_the_last_reference_and_an_earlier_one():
    measured = {"fast": 60 * MiB, "slow": 61 * MiB, "budget": 64 * MiB, "room": 63 * MiB}
    measured |= {"answer": 60 * MiB, "earlier": [(63 * MiB, 64 * MiB)]}
    value, why = biggerplots.exercise_reveal(measured)
    assert value == 60.0 and "your search answered 60.0 MiB" in why
    assert "an earlier call's reference found 63.0 MiB" in why
    _, why = biggerplots.exercise_reveal(measured | {"earlier": []})
    assert "another call may find it elsewhere" in why


def test_an_unknown_own_charge_leaves_the_room_unknown():
    found = _sweep(92 * MiB)
    found.own = {"cgroup v1": None}
    assert found.room() is None
    assert "unknown" in biggerplots.why_cliff(found)
    assert "the child's own charge: unknown" in biggerplots.sweep_lines(found)[1]


def test_a_set_whose_reads_are_unknown_is_not_judged(monkeypatch):
    done = LimitedRun(memlimit.Mechanism("cgroup v1", True, "a test"), MiB, outcome="completed")
    done.value = [(0.1, None)] * 7
    monkeypatch.setattr(workingset, "limited", lambda *a, **k: done)
    with pytest.raises(RuntimeError, match="storage reads are unknown"):
        workingset.measure("nowhere", MiB, MiB, done.mechanism)
