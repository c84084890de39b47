"""Lab 09's judgements: the claims its race and its Dask run support, and the table that picks a
format.

``claims`` and ``recorded`` give what the notebook records (``mmlab.course.results``) from a
``practice.Race``; ``why_dask``, ``baseline_line`` and ``dask_claims`` set the distributed
doubling against the in-place one and against pyarrow alone; ``choose`` puts each format's
properties (``PROPERTIES``: what it is, on any machine) beside this run's costs. A claim holds
only where every comparison favoured the side it names (interleaved rounds: when the middle
half of the paired ratios lies on one side of 1).
"""

from __future__ import annotations

from mmlab.course.practice import Race
from mmlab.course.practiceviews import (
    SHORT,
    Table,
    _against,
    _double_s,
    _mib,
    _round_ratio,
    _t,
)
from mmlab.instruments.spread import Spread

__all__ = [
    "PROPERTIES",
    "baseline_line",
    "choose",
    "claims",
    "dask_claims",
    "recorded",
    "why_dask",
]


def _holds(ok: bool, detail: str) -> str:
    return ("holds here: " if ok else "does not hold here: ") + detail


def _verdict(sides: list[int], detail: str) -> str:
    """Holds when every comparison favoured the store; does not hold when one favoured the
    other format; no clear difference when the rounds of one disagreed."""
    if all(side > 0 for side in sides):
        return _holds(True, detail)
    if any(side < 0 for side in sides):
        return _holds(False, detail)
    return "no clear difference: " + detail


def _pair(race: Race, fast: str, slow: str, what: str) -> tuple[int, str]:
    """(side, words): ``slow``'s build or double over ``fast``'s, by paired fresh rounds where
    both were repeated, else by one run each; side 1 when ``fast`` was clearly faster."""
    attr = {"build": "builds", "double": "doubles"}[what]
    a, b = getattr(race[fast], attr), getattr(race[slow], attr)
    names = SHORT.get(fast, fast), SHORT.get(slow, slow)
    if a is None or b is None:
        r = race.ratio(slow, what) / race.ratio(fast, what)
        return (1 if r > 1 else -1), f"{names[1]} {r:,.1f}x {names[0]}'s time (one run each)"
    ratio = Spread.of([y / x for x, y in zip(a.samples, b.samples, strict=True)])
    said = ratio.verdict(1.0, above=f"{names[0]} faster", below=f"{names[1]} faster")
    return ratio.side(
        1.0
    ), f"{names[1]} {ratio.text('.2f', 'x', than=1.0)} {names[0]}'s time: {said}"


def claims(race: Race) -> list[dict]:
    """The issue's claims, each with what this run measured and the verdict it supports:
    keyword arguments for ``results.claim``."""
    arrow = race["arrow"]
    get_ratio = {k: _round_ratio(race, k, "get") for k in race.runs if k != "store"}
    take = _round_ratio(race, "arrow", "take")
    in_place = [k for k in ("store", "memmap") if k in race.runs]
    atomic = [k for k in ("arrow", "sqlite", "lmdb") if k in race.runs]
    pairs = [_pair(race, fast, slow, "double") for fast in in_place for slow in atomic]
    tie = _pair(race, "store", "memmap", "double") if "memmap" in race.runs else None
    build_side, build_words = _against(race, "arrow", "build")
    written = arrow.double.write_bytes or 0
    rows = [
        dict(key="task_store_double", claim="The two in-place formats (store, numpy.memmap) "
             "beat every atomic update (Arrow, SQLite, LMDB) at doubling U0 durably",
             measured="; ".join(words for _, words in pairs)
             + ("" if tie is None else f"; reported, not judged: {tie[1]}"),
             verdict=_verdict([side for side, _ in pairs], "; ".join(
                 ([words for side, words in pairs if side <= 0]
                  or ["each in-place format faster than each atomic one"])
                 + ["Arrow in fresh interleaved rounds, SQLite and LMDB timed once each "
                    "(orders of magnitude apart)"]))),
        dict(key="task_store_get", claim="store[i] is the fastest random single-record get",
             measured="; ".join(f"{race[k].title} {s.text('.2f', 'x', than=1.0)}"
                                for k, s in get_ratio.items()),
             verdict=_holds(all(s.side(1.0) > 0 for s in get_ratio.values()),
                            "every other format's get slower in most rounds"
                            if all(s.side(1.0) > 0 for s in get_ratio.values())
                            else "some format was not clearly slower")),
        dict(key="task_arrow_rewrites", claim="Arrow cannot double a column in place: it "
             "rewrites the whole file", measured=f"wrote {_mib(written)} of a "
             f"{_mib(arrow.disk_bytes)} file; new inode: {arrow.rewritten}",
             verdict=_holds(arrow.rewritten and written >= 0.9 * arrow.disk_bytes,
                            f"{written / max(arrow.disk_bytes, 1):.0%} of the file written")),
        dict(key="task_build_target", claim="Building QM9 as a store is at least as fast as "
             "writing it as an Arrow IPC file", measured=build_words,
             verdict=_verdict([build_side], "fresh builds in interleaved rounds")),
        dict(key="task_take_target", claim="store.take of 1,024 random records is at least as "
             "fast as pyarrow Table.take", measured=f"Arrow/store {take.text('.2f', 'x', 1.0)}",
             verdict=_holds(take.side(1.0) >= 0, take.verdict(
                 1.0, above="the store faster", below="Arrow faster"))),
    ]  # fmt: skip
    return [{**row, "shown_in": "09, section 1 (the same task in five formats)"} for row in rows]


def recorded(race: Race) -> dict:
    """The numbers the notebook records for its tests, per format (``results.record``)."""

    def each(value) -> dict:
        return {kind: value(run) for kind, run in race.runs.items()}

    return {
        "task_records": race.records,
        "task_reads": race.reads,
        "task_build_s": each(lambda r: r.build.seconds),
        "task_disk_bytes": each(lambda r: r.disk_bytes),
        "task_double_s": each(lambda r: r.double.seconds),
        "task_build_rounds": each(lambda r: list(r.builds.samples) if r.builds else None),
        "task_double_rounds": each(lambda r: list(r.doubles.samples) if r.doubles else None),
        "task_disk_after": each(lambda r: r.disk_after),
        "task_double_written": each(lambda r: r.double.write_bytes),
        "task_rewritten": each(lambda r: r.rewritten),
        "task_cold_read": each(lambda r: r.cold.gets.read_bytes),
        "task_cold_file_bytes": each(lambda r: r.cold.file_bytes),
        "task_cold_left_pages": each(lambda r: r.cold.left_pages),
        "task_get_rounds": each(lambda r: list(r.warm_get.samples)),
        "task_take_rounds": each(lambda r: list(r.take.samples)),
        "task_epoch_items": each(lambda r: r.epoch.items if r.epoch else None),
        "task_private_dirty": each(lambda r: r.worker_memory("private_dirty")),
        "task_private_dirty_growth": each(lambda r: r.worker_growth("private_dirty")),
        "task_pss_file": each(lambda r: r.worker_memory("pss_file")),
    }


def why_dask(run, in_place_seconds: float) -> str:
    """Why the distributed doubling was slower than the in-place one, from its phases."""
    ratio = run.total_seconds / in_place_seconds
    biggest = max(run.seconds, key=run.seconds.get)
    return (
        f"The Dask run took {_t(run.total_seconds)}, the store's in-place doubling "
        f"{_t(in_place_seconds)}: {ratio:,.0f}x. Its longest phase was {biggest} "
        f"({_t(run.seconds[biggest])}); in place has no export, no cluster to start, no plan, "
        "no decoding of every column: it multiplies one column where it lies in the page cache."
    )


def baseline_line(run, baseline_seconds: float, in_place_seconds: float) -> str:
    """The same shards read, multiplied and rewritten by this process alone, against the Dask
    run and the in-place doubling: the format's cost apart from the distribution's."""
    compute = run.seconds.get("compute + write", float("nan"))
    return (
        f"Without a cluster, this process alone read, multiplied and rewrote the same "
        f"{run.shards:,} Parquet shards with pyarrow in {_t(baseline_seconds)}: "
        f"{baseline_seconds / in_place_seconds:,.0f}x the in-place doubling, the format's cost. "
        f"The Dask run's compute + write took {_t(compute)} "
        f"({compute / baseline_seconds:,.1f}x that) and the whole run {_t(run.total_seconds)} "
        f"({run.total_seconds / baseline_seconds:,.1f}x): the distribution's cost on top."
    )


def dask_claims(run, in_place_seconds: float) -> list[dict]:
    """The issue's claims about the Dask run, with this run's verdicts."""
    ratio = run.total_seconds / in_place_seconds
    where = "09, section 5 (double U0 across Dask workers)"
    return [
        dict(key="dask_equal", claim="The distributed doubling on a LocalCluster with 2 workers "
             "gives values equal to the store's", shown_in=where,
             measured=str(run.verification), verdict=_holds(bool(run.ok), "every value checked")),
        dict(key="dask_orders", claim="Updating a column in place on one machine beats "
             "rewriting immutable Parquet shards (here with a cluster on the same machine) by "
             "orders of magnitude", shown_in=where,
             measured=f"Dask {_t(run.total_seconds)}, in place {_t(in_place_seconds)}",
             verdict=_holds(ratio >= 100, f"{ratio:,.0f}x")),
    ]  # fmt: skip


# What each format is, whatever the machine: its properties, not measurements.
PROPERTIES = {
    "store": ("yes: a column in place", "in-place column writes: no journal; flush() (msync) "
              "makes them durable, a crash before it ends can leave the column partly changed; "
              "appends are published atomically", "yes: offsets + heap",
              "one record; take for a batch",
              "numpy views; Arrow zero copy (to_arrow, Polars, DuckDB)"),
    "memmap": ("yes: a .npy in place", "no journal: flush() (msync) makes writes durable; a "
               "crash before it ends can leave a column partly changed",
               "by hand (offsets + bytes)", "batch slices; a get costs a "
               "Python index per field", "numpy everywhere (torch.from_numpy, JAX)"),
    "arrow": ("no: rewrite the file", "atomic: new file + rename, all or nothing", "yes: native",
              "batch (take, slices, scans)", "HF datasets, Polars, DuckDB, Spark, Ray"),
    "sqlite": ("yes: UPDATE", "atomic: rollback journal + fsync per transaction", "yes: TEXT",
               "queries; a get is a B-tree lookup", "PyG OnDiskDataset, every language"),
    "lmdb": ("a record at a time: re-pickle it", "atomic: copy-on-write B-tree, fsync per commit",
             "inside the pickle", "one key; no columns", "fairchem / OCP datasets"),
}  # fmt: skip


def choose(race: Race) -> Table:
    """When to pick which: each format's properties beside this run's measured costs."""
    header = ("format", "update in place", "crash safety", "strings", "access", "ecosystem",
              "double here", "get here", "take 1,024 here")  # fmt: skip
    rows = tuple(
        (
            run.title,
            *PROPERTIES[kind],
            *map(_t, (_double_s(run), run.warm_get.median, run.take.median)),
        )
        for kind, run in race.runs.items()
        if kind in PROPERTIES
    )
    return Table(header, rows, f"{race.records:,} QM9 records, this run's numbers")
