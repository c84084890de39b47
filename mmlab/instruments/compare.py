"""Compare callables fairly on a noisy machine: interleaved rounds, medians and their spread.

On a shared machine the same code can run twice as fast one second as the next. Timing one
method's repeats and then the next method's lets such a swing land on one method only and
decide the race. ``compare({"a": f, "b": g}, repeats=7)`` instead runs every callable once
per *round*, rotating which goes first, so a slow spell slows all of them alike; each call is
measured with ``measure()`` (time, page faults, bytes from storage, page-cache change).

The result is a table (``BenchResult``): per callable the median of the rounds with the
interquartile range (IQR, the middle half) and the min-max range. A ``reference`` measured
in the same rounds (``read_vs_mmap`` uses a memory copy) turns every other row into a
per-round ratio, which cancels what the rounds share; ``result.relative(a, b)`` does the same
for any two rows. ``Spread.verdict`` says whether a ratio is clearly above or below 1 (the
whole IQR on one side) or not clear at all.

This module is ``mmlab.bench.compare``; ``mmlab.bench`` builds the read-vs-mmap race on it.
"""

from __future__ import annotations

import inspect
import math
import os
import statistics
from collections.abc import Callable, Mapping

from mmlab.instruments.measure import Measurement, measure
from mmlab.instruments.stats import COUNTERS, BenchResult, Row, Spread, _rounds, _speed_ratio

__all__ = [
    "DEFAULT_REPEATS",
    "MIN_STABLE_REPEATS",
    "QUICK_REPEATS",
    "BenchResult",
    "Row",
    "Spread",
    "compare",
    "default_repeats",
]

MIN_STABLE_REPEATS = 5  # fewer rounds than this give a rough median; the result says so
DEFAULT_REPEATS = 7
QUICK_REPEATS = 3  # in quick mode (MMLAB_QUICK=1): the tests and a first look


def quick_mode() -> bool:
    """Whether ``MMLAB_QUICK=1`` asks for small, fast runs (the tests set it)."""
    return os.environ.get("MMLAB_QUICK") == "1"


def default_repeats() -> int:
    """Rounds when none are asked for: 7, or 3 in quick mode."""
    return QUICK_REPEATS if quick_mode() else DEFAULT_REPEATS


# Why a counter can be None, for the row's ``unavailable``.
_REASONS = {
    "minor_faults": "no getrusage on this OS: page faults are not counted",
    "major_faults": "no getrusage on this OS: page faults are not counted",
    "storage_bytes": "no /proc/self/io on this OS: bytes from storage are not counted",
    "cached_pages_delta": "no file was given to measure its page cache",
}


def _rotation(names: list[str], round_: int) -> list[str]:
    k = round_ % len(names)
    return names[k:] + names[:k]


def _setup_caller(setup: Callable | None) -> Callable[[str], object]:
    if setup is None:
        return lambda name: None
    try:
        takes_name = bool(inspect.signature(setup).parameters)
    except (TypeError, ValueError):  # some builtins have no signature
        takes_name = True
    return setup if takes_name else (lambda name: setup())


def _counter(measurements: list[Measurement], key: str) -> int | None:
    attribute = "read_bytes" if key == "storage_bytes" else key
    values = [getattr(m, attribute, None) for m in measurements]
    if any(v is None for v in values):
        return None
    return int(statistics.median_low(values))


def _cpu_times() -> list[float]:
    """This process's user and system CPU seconds so far (getrusage), or NaNs without it."""
    try:
        import resource
    except ImportError:  # Windows
        return [math.nan, math.nan]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return [usage.ru_utime, usage.ru_stime]


def _cpu_spread(samples: list[list[float]], which: int) -> Spread | None:
    values = [s[which] for s in samples]
    return None if not values or any(math.isnan(v) for v in values) else Spread.of(values)


def compare(
    funcs: Mapping[str, Callable[[], object]],
    repeats: int | None = None,
    *,
    setup: Callable | None = None,
    warmup: int = 1,
    reference: str | None = None,
    nbytes: int | Mapping[str, int] | None = None,
    file: str | os.PathLike[str] | None = None,
    title: str = "",
    timer: Callable[[], float] | None = None,
) -> BenchResult:
    """Time every callable once per round for ``repeats`` rounds, interleaved.

    Round ``r`` runs the callables in their given order rotated by ``r`` (so none always goes
    first), after ``warmup`` untimed rounds. ``setup`` runs untimed before every timed call:
    ``setup()`` or ``setup(name)``, e.g. ``lambda: pagecache.evict(path)`` for a cold cache
    (before every call, so each one starts cold, not only the first of a round). ``reference``
    names the callable the others are compared with, round by round. ``nbytes`` (one size, or
    one per name) is what a call processes, for rates; ``file`` is measured for its page cache.
    ``repeats`` defaults to 7 (3 in quick mode, and the result says so). ``timer`` replaces
    the wall clock (a fake clock, for tests).
    """
    names = list(funcs)
    if not names:
        raise ValueError("nothing to compare: funcs is empty")
    if reference is not None and reference not in funcs:
        raise ValueError(f"reference {reference!r} is not one of {names}")
    rounds = default_repeats() if repeats is None else repeats
    if rounds < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {rounds} and {warmup}")
    sizes = nbytes if isinstance(nbytes, Mapping) else dict.fromkeys(names, nbytes)
    before = _setup_caller(setup)
    reasons = dict(_REASONS)
    if file is not None:
        reasons["cached_pages_delta"] = "the page cache of the file could not be read here"

    for w in range(warmup):
        for name in _rotation(names, w):
            before(name)
            funcs[name]()

    order: list[tuple[int, str]] = []
    seconds: dict[str, list[float]] = {name: [] for name in names}
    measured: dict[str, list[Measurement]] = {name: [] for name in names}
    cpu_times: dict[str, list[list[float]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in _rotation(names, r):
            before(name)
            with measure(name, file=file) as m:
                cpu = _cpu_times()
                if timer is None:
                    funcs[name]()
                else:
                    start = timer()
                    funcs[name]()
                    elapsed = timer() - start
                cpu = [after - before_ for after, before_ in zip(_cpu_times(), cpu, strict=True)]
            order.append((r, name))
            cpu_times[name].append(cpu)
            seconds[name].append(m.wall_s if timer is None else elapsed)
            measured[name].append(m)

    def row(name: str) -> Row:
        size = sizes.get(name)
        of_reference = None
        if reference is not None and name != reference:
            ref_size = sizes.get(reference)
            of_reference = Spread.of(
                _speed_ratio(s, size, rs, ref_size)
                for s, rs in zip(seconds[name], seconds[reference], strict=True)
            )
        counters = {key: _counter(measured[name], key) for key in COUNTERS}
        unavailable = {key: reasons[key] for key, value in counters.items() if value is None}
        return Row(
            name,
            Spread.of(seconds[name]),
            rate=Spread.of(size / s if s > 0 else math.inf for s in seconds[name])
            if size
            else None,
            of_reference=of_reference,
            **counters,
            nbytes=size,
            is_reference=name == reference,
            user_s=_cpu_spread(cpu_times[name], 0),
            system_s=_cpu_spread(cpu_times[name], 1),
            unavailable=unavailable,
            measurements=tuple(measured[name]),
        )

    notes = []
    quick = quick_mode()
    if rounds < MIN_STABLE_REPEATS:
        mode = " (quick mode)" if quick else ""
        notes.append(
            f"only {_rounds(rounds)}{mode}: fewer than {MIN_STABLE_REPEATS}, "
            "so the medians and spreads are rough"
        )
    return BenchResult(
        rows=[row(name) for name in names if name != reference],
        reference=row(reference) if reference is not None else None,
        rounds=rounds,
        order=order,
        title=title,
        notes=notes,
        quick=quick,
    )
