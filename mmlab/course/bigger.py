"""Notebook 07: data bigger than memory, made real in one child process under a memory limit.

The blog's premise: once a dataset nears or exceeds memory, loading it whole degrades into
swapping, and mapping the file is the way out. Filling a student's whole machine to show it
would endanger their work, so each workload here runs in a forked child under a memory budget
(``mmlab.memlimitrun.run``, with the strongest mechanism ``mmlab.memlimit`` finds) on a QM9
store repeated until it is several times that budget:

* ``read_whole`` (``f.read()``) and ``list_records`` (every record as a Python object in a
  list) need the data's size or more in private memory, more than the budget: the child
  fails with ``MemoryError`` (RLIMIT_DATA) or is killed by the OOM killer (a cgroup);
* ``column_means`` streams every field's column through the mapping: its private memory stays
  flat, and under a cgroup the page cache it reads is reclaimed behind it.

``mmlab.course.workingset`` sweeps a mapped working set across the budget;
``mmlab.course.biggerplots`` draws and explains what both measured.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmlab.instruments import memlimit, pagecache, sysinfo
from mmlab.instruments.memgroup import storage_read_bytes
from mmlab.instruments.memlimitrun import LimitedRun, run

__all__ = [
    "TAKE_CHUNK",
    "Sizes",
    "build_store",
    "column_means",
    "limited",
    "list_records",
    "mechanisms_here",
    "own_memory",
    "passes",
    "read_whole",
    "record_claims",
    "sizes",
    "storage_read",
    "summary",
    "swap_total",
    "workloads",
]

MiB = 2**20
PASSES = 7  # one cold pass, then warm ones: the kernel may need two or three to settle
TAKE_CHUNK = 1 << 16  # records per ``store.take``


@dataclass(frozen=True)
class Sizes:
    """The budget, how many copies of QM9 the store holds, and the exercise's budget."""

    budget: int
    copies: int
    exercise_budget: int
    timeout: float  # seconds before a thrashing child is killed


def sizes(quick: bool | None = None) -> Sizes:
    """Quick: 48 MiB and a 120 MiB store; full: 96 MiB and a 480 MiB store (5x)."""
    if quick is None:
        quick = os.environ.get("MMLAB_QUICK") == "1"
    if quick:
        return Sizes(48 * MiB, 5, 32 * MiB, 4.0)
    return Sizes(96 * MiB, 20, 64 * MiB, 10.0)


def build_store(path: str | os.PathLike[str], copies: int) -> Path:
    """A RecordStore of all of QM9, ``copies`` times over (kept if it already holds that)."""
    from mmlab.data import qm9
    from mmlab.store import RecordStore

    path = Path(path)
    try:
        with RecordStore.open(path) as store:
            if len(store) == copies * qm9.QM9_MOLECULES:
                return path
    except (OSError, ValueError):
        pass
    smiles, rows = zip(*qm9.records("qm9pack"), strict=True)
    values = np.asarray(rows, dtype=np.float64)
    with RecordStore.create(path, qm9.FIELDS, capacity=len(smiles) * copies, overwrite=True) as s:
        for _ in range(copies):
            s.extend_columns(smiles, values)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # written pages must be clean before eviction can drop them
    finally:
        os.close(fd)
    return path


# -- the workloads, each run in the limited child ------------------------------------------


def read_whole(path: str | os.PathLike[str]) -> int:
    """The naive load: the whole file into one bytes object."""
    with open(path, "rb") as f:
        return len(f.read())


def list_records(path: str | os.PathLike[str]) -> int:
    """The other naive load: every record as a Python object (its string and its row of
    values) in a list, built with ``store.take`` in chunks. Readahead is advised off: a
    record's values lie in 21 places of the file, and with a large ``read_ahead_kb``
    the pages read ahead at each would be dropped before use and read again (thrashing)
    before the list's own memory ran out (``biggerplots.readahead_aside``)."""
    from mmlab.store import RecordStore

    records: list[tuple[str, np.ndarray]] = []
    with RecordStore.open(path) as store:
        store.advise("random")
        for start in range(0, len(store), TAKE_CHUNK):
            strings, values = store.take(range(start, min(start + TAKE_CHUNK, len(store))))
            records.extend(zip(strings, values, strict=True))
    return len(records)


def column_means(path: str | os.PathLike[str]) -> list[float]:
    """The mean of every field, each streamed through the mapping's column view."""
    from mmlab.store import RecordStore

    with RecordStore.open(path) as store:
        return [float(store.column(name).mean()) for name in store.fields]


def storage_read() -> int | None:
    """This process's bytes read from storage so far (None where /proc/self/io is unreadable)."""
    return storage_read_bytes("self")


def passes(
    path: str | os.PathLike[str], size: int, count: int = PASSES
) -> list[tuple[float, int | None]]:
    """(seconds, bytes read from storage) of each pass reading the first ``size`` bytes of
    the mapped file; the bytes are None where /proc/self/io cannot be read."""
    import mmap

    done = []
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        words = np.frombuffer(mm, dtype=np.uint64, count=size // 8)
        for _ in range(count):
            read, start = storage_read(), time.perf_counter()
            words.sum()  # reads every byte; the sum itself is not needed
            after = storage_read()
            read = None if read is None or after is None else after - read
            done.append((time.perf_counter() - start, read))
        del words  # the mapping cannot close while a view holds it
    return done


def mechanisms_here() -> list[memlimit.Mechanism]:
    """The usable mechanisms: the strongest first, and RLIMIT_DATA beside a cgroup to compare."""
    usable = [m for m in memlimit.mechanisms() if m.usable]
    if not usable:
        raise OSError("no memory limit is usable here: " + str(memlimit.best().reason))
    first = memlimit.best()
    rest = [m for m in usable if m.name == memlimit.RLIMIT and first.name != memlimit.RLIMIT]
    return [first, *rest]


def _evict(path: str | os.PathLike[str]) -> None:
    """Evict, retrying briefly: pages that reclaim or readahead for a child that has just exited
    still hold cannot be dropped at once. If some still stay, ``evict`` warns why."""
    for _ in range(20):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pagecache.EvictionWarning)
            report = pagecache.evict(path)
        if not report.resident_after:
            return
        time.sleep(0.02)
    pagecache.evict(path)


def limited(
    function: Callable,
    *args,
    budget: int,
    evict: str | os.PathLike[str] | None = None,
    mechanism: memlimit.Mechanism | None = None,
    timeout: float = 60.0,
    on_sample: Callable[[LimitedRun], None] | None = None,
) -> LimitedRun:
    """``function(*args)`` in a child under ``budget``, with ``evict``'s pages dropped first:
    a cgroup is charged only for pages its child brings in, not those already cached."""
    if evict is not None:
        _evict(evict)
    return run(
        function, *args, budget=budget, mechanism=mechanism, timeout=timeout, on_sample=on_sample
    )


def workloads(
    path: Path, budget: int, timeout: float, mechanism: memlimit.Mechanism | None = None
) -> dict[str, LimitedRun]:
    """The two naive loads and the mapped stream, each in a fresh child under ``budget``,
    with the store evicted first."""
    arms = {"read()": read_whole, "list(store)": list_records, "mapped columns": column_means}
    return {
        name: limited(f, path, budget=budget, evict=path, mechanism=mechanism, timeout=timeout)
        for name, f in arms.items()
    }


def own_memory(budget: int, mechanism: memlimit.Mechanism | None = None) -> int | None:
    """What the limit counts for a child that does nothing: the pages it writes on its own
    (None where the peak is unknown: ``LimitedRun.peak_source`` says why)."""
    done = run(len, (), budget=budget, mechanism=mechanism)
    return done.peak


def swap_total() -> int | None:
    """SwapTotal of /proc/meminfo in bytes (``sysinfo``'s reader), or None where unreadable."""
    found = sysinfo._swap_total()
    return found.value if found.known else None


def _mib(n: float | None) -> str:
    return "unknown" if n is None else f"{n / MiB:,.1f} MiB"


def _slowdown(sweep) -> float | None:
    """How much slower per byte the first set of ``sweep`` that kept re-reading was, or None."""
    p = sweep.steady()
    return None if p is None else round(sweep.slowdown(sweep.strongest, p), 1)


# -- what this run shows of the blog's claims ---------------------------------------------


def summary(runs: dict[str, LimitedRun], sweep, file_bytes: int) -> tuple[dict, str, str, str, str]:
    """Values to record, and the measured text and verdict of the two claims."""
    naive, listed, stream = runs["read()"], runs["list(store)"], runs["mapped columns"]
    fast, slow = sweep.cliff()
    big = max(sweep.points[sweep.strongest], key=lambda p: p.size)
    values = {
        "mechanism": naive.mechanism.name,
        "limits_page_cache": naive.mechanism.limits_page_cache,
        "budget": naive.budget,
        "file_bytes": file_bytes,
        "swap_total": swap_total(),
        "naive_outcome": naive.outcome,
        "list_outcome": listed.outcome,
        "list_private_peak": listed.private_peak,
        "naive_read_bytes": naive.read_bytes,
        "stream_outcome": stream.outcome,
        "stream_peak": stream.peak,
        "stream_private_peak": stream.private_peak,
        "stream_read_bytes": stream.read_bytes,  # None: unknown, and the next line says why
        "stream_read_bytes_source": stream.read_bytes_source,
        "stream_peak_source": stream.peak_source,
        "largest_fast": fast,
        "first_slow": slow,
        "own_memory": sweep.own[sweep.strongest],
        "slowdown_above": _slowdown(sweep),
        "settled_reads_above": big.settled_reads,
        "size_above": big.size,
    }
    loads = (
        f"{_mib(file_bytes)} store, {sweep.strongest} budget {_mib(naive.budget)}: read() "
        f"{naive.outcome}, list of records {listed.outcome}"
    )
    swap = swap_total()
    unswapped = "nothing swapped (the children get no swap" + (
        "; this machine has none)" if swap == 0 else ")"
    )
    if slow is None:
        premise = f"{loads}; working sets up to {_mib(fast)} stayed fast (no page-cache limit)"
        verdict_1 = (
            f"partly shown: past the limit private memory is refused at once (MemoryError); "
            f"{unswapped}, and no page-cache limit, so no degradation is shown here"
        )
    else:
        steady = sweep.steady()
        slower = (
            "no set kept re-reading: all were still settling"
            if steady is None
            else f"the first that kept re-reading, {_mib(steady.size)}, was "
            f"{_slowdown(sweep):g}x slower per byte than the sets of at most half the budget"
        )
        premise = (
            f"{loads}; mapped working sets settled within {PASSES} passes up to {_mib(fast)}, "
            f"not from {_mib(slow)}; {slower}"
        )
        verdict_1 = (
            f"partly shown: past the limit, loading whole was refused or killed at once, not "
            f"degraded ({unswapped}; with swap it would first slow down, explained only); file "
            "pages that do not fit do degrade: they are read again on every pass"
        )
    read = _mib(stream.read_bytes)
    if stream.read_bytes is None:
        read += f" ({stream.read_bytes_source})"
    way_out = (
        f"the mapped column stream {stream.outcome} in {stream.seconds:.2f} s, reading "
        f"{read} with private memory +{_mib(stream.private_peak)}"
    )
    verdict_2 = (
        "true: mapping streams data bigger than the budget with flat private memory; it does "
        "not make a working set bigger than memory fast"
        if stream.completed
        else f"not shown here: the stream ended '{stream.outcome}'"
    )
    values["premise_verdict"] = verdict_1
    return values, premise, verdict_1, way_out, verdict_2


def record_claims(runs: dict[str, LimitedRun], sweep, file_bytes: int) -> None:
    """Record this run's values and the blog's two claims for the course's tables."""
    from mmlab.course import results

    values, premise, verdict_1, way_out, verdict_2 = summary(runs, sweep, file_bytes)
    results.record("07", **values)
    results.claim(
        "07",
        "premise",
        claim="Loading a dataset that nears or exceeds memory degrades (swapping)",
        shown_in="07 §2, §3",
        measured=premise,
        verdict=verdict_1,
    )
    results.claim(
        "07",
        "way_out",
        claim="Memory-mapping handles data bigger than memory",
        shown_in="07 §2",
        measured=way_out,
        verdict=verdict_2,
    )
