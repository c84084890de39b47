"""Notebook 07's hands-on checks: find the largest fast working set; stream a statistic.

``largest_fast`` hands the student's ``find_largest(thrashes, low, high)`` a function that
measures one working set in a child under the exercise's budget (``workingset.WorkingSet``:
whether its last warm passes still re-read half the set from storage, the lesson's criterion;
a borderline measurement is repeated inside one call) and compares the answer with the check's
own bisection of the same range, made in the same call. The edge moves between runs (a set
near it settles in one run and not in the next), so the tolerance is measured: twice the
search's resolution plus how far the two searches' measurements disagreed (the largest size
measured fast minus the smallest measured thrashing, when positive). A correct bisection
always lands within it; the answer may also reach up to the room (the budget minus the
child's own charge). Where the limit does not count the page cache (RLIMIT_DATA) nothing
thrashes, and the answer is the top.

``stream_means`` runs the student's ``target_means(path)`` in a child under the lesson's
budget, after the package's own column stream, with a timeout of ``SLOWER`` times the
reference's time (so a slower machine gets as long as it needs): it must complete within the
budget and give every field's mean, equal to the reference's within what summing in another
order may change (the count of records times the float64 epsilon, relative). The hint says
which of the failures happened: out of memory, too slow, or a wrong value.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Real
from pathlib import Path

import numpy as np

from mmlab.course import bigger, workingset
from mmlab.course.handson.verdict import Verdict, attempt
from mmlab.instruments.memlimitrun import OOM_KILLED

__all__ = ["SLOWER", "largest_fast", "stream_means"]

MiB = 2**20
SLOWER = 20  # the student's stream may take this many times the reference's time
_HINT_FAST = (
    "bisect: keep a size known fast (low) and one known to thrash (high, if it does); "
    "measure the middle, keep the half where the change happens, stop when they are a MiB "
    "apart, and return the fast one"
)
_HINT_MEMORY = (
    "never hold all records at once: open the store and reduce each field's column view "
    "(store.column(name) for name in store.fields), which the mapping pages in and the "
    "kernel may drop again"
)


def _store(data: Path) -> Path:
    data.mkdir(exist_ok=True)
    return bigger.build_store(data / "bigger.mms", bigger.sizes().copies)


def _mib(n: float | None) -> str:
    return "unknown" if n is None else f"{n / MiB:,.1f} MiB"


_REFERENCES: list[tuple[int, int | None]] = []  # each call's (fast, slow): the edge moves


def _reference(ws: workingset.WorkingSet, low: int, high: int) -> tuple[int, int | None]:
    """The check's own search: (largest fast, smallest thrashing or None)."""
    if not ws.thrashes(high):
        return high, None
    return workingset.bisect(ws.thrashes, low, high)


def largest_fast(find_largest: Callable, data: str | Path = "data") -> Verdict:
    """Judge ``find_largest(thrashes, low, high) -> bytes``: the largest working set between
    ``low`` and ``high`` whose warm passes stay fast under the exercise's budget."""
    name = "largest_fast"
    budget = bigger.sizes().exercise_budget
    ws = workingset.WorkingSet(_store(Path(data)), budget)
    low, high = budget // 4, 2 * budget
    fast, slow = _reference(ws, low, high)
    room = None if ws.own is None else budget - ws.own  # None: the child's own charge unknown
    measured = {
        "fast": fast, "slow": slow, "budget": budget, "room": room,
        "mechanism": ws.mechanism.name, "reference": [(p.size, p.thrashing) for p in ws.calls],
        "earlier": list(_REFERENCES),
    }  # fmt: skip
    _REFERENCES.append((fast, slow))
    ws.calls.clear()
    got = attempt(find_largest, ws.thrashes, low, high)
    measured["calls"] = [(p.size, p.thrashing) for p in ws.calls]
    if not got.ok:
        return Verdict(name, off=[f"find_largest raised:\n{got.error}"], hint=_HINT_FAST)
    answer = got.result
    if not isinstance(answer, Real) or isinstance(answer, bool):
        return Verdict(
            name, off=[f"find_largest returned {answer!r}, not a size in bytes"], hint=_HINT_FAST
        )
    measured["answer"] = answer
    edge = high if slow is None else slow
    both = measured["reference"] + measured["calls"]
    fasts = [size for size, thrashed in both if not thrashed]
    thrashing = [size for size, thrashed in both if thrashed]
    disagree = max(0, max(fasts, default=0) - min(thrashing, default=high))
    tolerance = 2 * workingset.RESOLUTION + disagree
    whose = {False: "the reference", True: "your search"}
    mine = {size for size, _ in measured["calls"]}
    split = (
        f", plus {_mib(disagree)} by which the measurements disagreed: {_mib(max(fasts))} was "
        f"fast ({whose[max(fasts) in mine]}), the smaller {_mib(min(thrashing))} thrashed "
        f"({whose[min(thrashing) in mine]})"
        if disagree
        else "; the two searches' measurements agreed"
    )
    ended = "nothing thrashed up to high" if slow is None else f"thrashing at {_mib(slow)}"
    where = (
        f"the check's bisection under {ws.mechanism.name} (budget {_mib(budget)}, room "
        f"{_mib(room)}): fast at {_mib(fast)}, {ended}; tolerance {_mib(tolerance)} (twice "
        f"the resolution{split})"
    )
    said = f"your search answered {_mib(answer)} after {len(ws.calls)} measurements"
    if answer < low and low <= answer * MiB <= high:
        return Verdict(
            name,
            off=[f"{said}, below low ({_mib(low)}): {where}"],
            hint="sizes are in bytes, not MiB: return the size as thrashes() takes it",
            measured=measured,
        )
    top = edge if room is None else max(edge, room)
    inside = fast - tolerance <= answer <= top + tolerance and answer <= high
    if inside and (len(ws.calls) >= 2 or slow is None):
        return Verdict(name, right=[f"{said}; {where}"], measured=measured)
    if inside:
        return Verdict(
            name, off=[f"{said}: a guess, not a search; {where}"], hint=_HINT_FAST,
            measured=measured,
        )  # fmt: skip
    side = "below the reference's fast" if answer < fast else "above the reference's thrashing"
    return Verdict(
        name,
        off=[f"{said}, more than the tolerance {side} size: {where}"],
        hint=_HINT_FAST,
        measured=measured,
    )


def stream_means(target_means: Callable, data: str | Path = "data") -> Verdict:
    """Judge ``target_means(path) -> one mean per field``, run in a child under the budget."""
    name = "stream_means"
    sizes = bigger.sizes()
    path = _store(Path(data))
    reference = bigger.limited(
        bigger.column_means, path, budget=sizes.budget, evict=path, timeout=sizes.timeout
    )
    if not reference.completed:
        return Verdict(name, off=[f"the reference stream itself ended '{reference.outcome}'"])
    timeout = max(sizes.timeout, SLOWER * reference.seconds)
    done = bigger.limited(target_means, str(path), budget=sizes.budget, evict=path, timeout=timeout)
    measured = {"outcome": done.outcome, "peak": done.peak, "budget": sizes.budget}
    budget = f"the {_mib(sizes.budget)} budget ({done.mechanism.name})"
    if not done.completed:
        return _not_completed(name, done, budget, timeout, reference.seconds, path, measured)
    try:
        got = np.asarray(done.value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return Verdict(name, off=[f"target_means returned {done.value!r}, not numbers"])
    want = np.asarray(reference.value)
    if got.shape != want.shape:
        return Verdict(
            name,
            off=[f"target_means gave {got.size} means; the store has {want.size} fields"],
            hint="one mean per field, in the order of store.fields",
        )
    from mmlab.store import RecordStore

    with RecordStore.open(path) as store:
        count = len(store)
    rtol = count * np.finfo(np.float64).eps  # the bound on reordering a sum of `count` terms
    wrong = np.flatnonzero(~np.isclose(got, want, rtol=rtol, atol=0))
    if wrong.size:
        i = int(wrong[0])
        return Verdict(
            name,
            off=[f"mean {i} is {got[i]!r}; the reference's is {want[i]!r} (of {count:,} records)"],
            hint="a mean is the sum of a field's values over all records divided by their "
            "count, one per field in the order of store.fields",
            measured=measured,
        )
    peak = "unknown" if done.peak is None else _mib(done.peak)
    right = [
        f"completed in {done.seconds:.2f} s under {budget}, the limit counting at most "
        f"{peak}, private memory +{_mib(done.private_peak)}",
        f"all {want.size} means equal the reference's over {count:,} records",
    ]
    if done.within_budget is False:
        return Verdict(name, right=right[1:], off=[f"it used {peak}, over {budget}"])
    return Verdict(name, right=right, measured=measured)


def _not_completed(name, done, budget, timeout, ref_seconds, path, measured) -> Verdict:
    """Say which failure it was: memory (MemoryError, OOM), time, or an error."""
    size = Path(path).stat().st_size
    said = f"target_means {done.outcome} under {budget} after {done.seconds:.1f} s"
    if done.outcome.startswith("killed at the timeout"):
        read = done.read_bytes
        why = (
            f"its storage reads are {done.read_bytes_source}"
            if read is None
            else f"it read {_mib(read)}, {read / size:.1f}x the file: pages were dropped and read "
            "again; going record by record jumps between 21 places of the file, and the "
            "kernel reads ahead at each"
            if read > size
            else f"it read {_mib(read)}, {read / size:.1f}x the file: it was simply slow"
        )
        return Verdict(
            name,
            off=[
                f"{said} (the timeout, {timeout:.1f} s: {SLOWER}x the reference's "
                f"{ref_seconds:.2f} s, and at least {bigger.sizes().timeout:g} s); your "
                f"code did not run out of memory (private memory +{_mib(done.private_peak)}); "
                + why
            ],
            hint="read one field at a time, as a whole column: store.column(name).mean() "
            "for name in store.fields (NumPy sums the mapped column in place)",
            measured=measured,
        )
    if done.outcome in ("MemoryError", OOM_KILLED):
        return Verdict(
            name,
            off=[f"{said}: it ran out of memory (private memory +{_mib(done.private_peak)})"],
            hint=_HINT_MEMORY,
            measured=measured,
        )
    error = f":\n{done.error}" if done.error else ""
    return Verdict(name, off=[said + error], measured=measured)
