"""Lab 09's race in words, a table and a figure, every verdict from the run's own numbers.

``table`` renders a ``practice.Race`` as one table (HTML in a notebook, text elsewhere: no
pandas); ``plot_ratios`` draws each format's cost over the store's, step by step, on a log
scale; ``lines`` says what the run showed. The ``why_*`` functions explain one prediction each;
``claims`` and ``recorded`` give what the notebook records (``mmlab.course.results``).
A ratio above 1 means the store was faster (or smaller); a warm comparison is called only
when the interleaved rounds agree (``Spread.verdict``), otherwise it is "no clear difference".
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from mmlab.course.practice import HFGets, Race
from mmlab.instruments.spread import Spread

__all__ = [
    "PROPERTIES",
    "Table",
    "choose",
    "claims",
    "dask_claims",
    "fastest",
    "hf_lines",
    "lines",
    "plot_ratios",
    "recorded",
    "table",
    "why_arrow_double",
    "why_cold_read",
    "why_dask",
    "why_fastest_get",
    "why_lmdb_double",
]

MiB = 2**20
STEPS = {  # what plot_ratios draws: the Race.ratio name and its label
    "build": "build",
    "double": "double U0\n+ durable",
    "cold": "open + 1,024\ngets cold",
    "get": "one get\nwarm",
    "take": "take 1,024\nwarm",
    "epoch": "DataLoader\nepoch",
}


def _mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / MiB:,.2f} MiB"


def _t(seconds: float) -> str:
    if seconds != seconds:  # NaN: not measured
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:,.3g} {unit}"
    return f"{seconds * 1e9:,.3g} ns"


@dataclass(frozen=True)
class Table:
    """Rows of text cells with a header; shows as HTML in a notebook and as text in print."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{escape(h)}</th>" for h in self.header)
        body = "".join(
            "<tr>" + "".join(f"<td style='text-align:left'>{escape(c)}</td>" for c in row) + "</tr>"
            for row in self.rows
        )
        caption = f"<caption>{escape(self.caption)}</caption>" if self.caption else ""
        return f"<table>{caption}<tr>{head}</tr>{body}</table>"

    def __str__(self) -> str:
        cells = [self.header, *self.rows]
        widths = [max(len(row[k]) for row in cells) for k in range(len(self.header))]
        text = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
        return "\n".join(([self.caption] if self.caption else []) + text)


def _per_worker(values: list[int]) -> str:
    return " / ".join(f"{v / MiB:,.1f}" for v in values) or "n/a"


def table(race: Race) -> Table:
    """One row per format: build, double, cold and warm reads, the epoch and its workers."""
    header = ("format", "build", "on disk", "double U0 + durable", "written to double",
              "open + 1,024 gets cold (read, major faults)", "get warm", "take 1,024 warm",
              "epoch, 2 workers", "workers' private dirty MiB",
              "workers' Pss_File MiB")  # fmt: skip
    rows = []
    for run in race.runs.values():
        cold = run.cold.both()
        rewrite = " (new file)" if run.rewritten else ""
        rows.append((
            run.title, _t(run.build.seconds), _mib(run.disk_bytes), _t(run.double.seconds),
            _mib(run.double.write_bytes) + rewrite,
            f"{_t(cold.seconds)} ({_mib(cold.read_bytes)}, {cold.major_faults})",
            f"{_t(run.warm_get.median)} [{_t(run.warm_get.q1)}–{_t(run.warm_get.q3)}]",
            _t(run.take.median), _t(run.epoch.seconds) if run.epoch else "n/a",
            _per_worker(run.worker_memory("private_dirty")),
            _per_worker(run.worker_memory("pss_file")),
        ))  # fmt: skip
    caption = (
        f"{race.records:,} QM9 records; warm times: median [IQR] of {race.rounds} interleaved "
        "rounds; cold: after the files were dropped from the page cache"
    )
    return Table(header, tuple(rows), caption)


def plot_ratios(race: Race, ax=None):
    """Each format's cost over the store's for every step (log scale; above 1: the store
    was faster). Returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 4))
    others = [k for k in race.runs if k != "store"]
    width = 0.8 / max(len(others), 1)
    x = np.arange(len(STEPS))
    for n, kind in enumerate(others):
        ratios = [race.ratio(kind, step) for step in STEPS]
        ax.bar(x + (n - (len(others) - 1) / 2) * width, ratios, width, label=race[kind].title)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_yscale("log")
    ax.set_xticks(x, list(STEPS.values()))
    ax.set_ylabel("time over the store's time")
    ax.set_title(f"The same task, {race.records:,} records: above 1, the store was faster")
    ax.legend(fontsize="small", ncol=2)
    ax.figure.tight_layout()
    return ax.figure


def fastest(race: Race, what: str) -> str:
    """The kind with the lowest ``what`` (``build``, ``double``, ``get``, ``take`` ...)."""
    return min(race.runs, key=lambda kind: race.ratio(kind, what))


def _round_ratio(race: Race, kind: str, what: str) -> Spread:
    """``kind``'s warm time over the store's, round by round (the rounds were interleaved)."""
    attr = {"get": "warm_get", "take": "take"}[what]
    theirs, ours = getattr(race[kind], attr).samples, getattr(race["store"], attr).samples
    return Spread.of([a / b for a, b in zip(theirs, ours, strict=True)])


def _versus(race: Race, kind: str, what: str) -> str:
    ratio = _round_ratio(race, kind, what)
    said = ratio.verdict(1.0, above="the store faster", below=f"{race[kind].title} faster")
    return f"{race[kind].title} {ratio.text('.2f', 'x', than=1.0)} the store's time: {said}"


def lines(race: Race) -> list[str]:
    """What the run showed, step by step, in sentences built from its numbers."""
    store = race["store"]
    out = [
        f"Build: fastest here {race[fastest(race, 'build')].title}; the store took "
        f"{_t(store.build.seconds)}, Arrow {_t(race['arrow'].build.seconds)} "
        f"({race.ratio('arrow', 'build'):.2f}x the store's)."
        if "arrow" in race.runs
        else f"Build: fastest here {race[fastest(race, 'build')].title}.",
        f"Double U0 + durable: fastest here {race[fastest(race, 'double')].title}; the store "
        f"dirtied {_mib(store.double.write_bytes)} (one column: {race.records:,} x 8 bytes = "
        f"{_mib(race.records * 8)}).",
    ]
    for run in race.runs.values():
        if run.rewritten:
            out.append(
                f"  {run.title} cannot update in place: it wrote {_mib(run.double.write_bytes)} "
                f"for a {_mib(run.disk_bytes)} file and the data file is a new inode (a new "
                "file renamed over the old one)."
            )
    out.append(f"Warm random get: fastest here {race[fastest(race, 'get')].title}.")
    out += [f"  {_versus(race, kind, 'get')}" for kind in race.runs if kind != "store"]
    out.append(f"Batch of {race.reads:,} (take): fastest here {race[fastest(race, 'take')].title}.")
    out += [f"  {_versus(race, kind, 'take')}" for kind in race.runs if kind != "store"]
    return out


def why_arrow_double(race: Race) -> str:
    """Why Arrow wrote what it wrote to double one column, against the store."""
    arrow, store = race["arrow"], race["store"]
    written = arrow.double.write_bytes or 0
    return (
        f"An Arrow IPC file has no in-place update: pc.multiply made a new U0 column in memory "
        f"and the whole table was written to a new file ({_mib(written)}, "
        f"{written / max(arrow.disk_bytes, 1):.0%} of its {_mib(arrow.disk_bytes)}), fsynced and "
        f"renamed over the old one{' (a new inode here)' if arrow.rewritten else ''}. The store "
        f"multiplied its U0 column where it lies and dirtied {_mib(store.double.write_bytes)}, "
        f"the column's pages ({race.records:,} x 8 bytes): {written / max(store.double.write_bytes or 1, 1):,.0f}x less."  # noqa: E501
    )


def why_fastest_get(race: Race) -> str:
    """Why the fastest warm get was the fastest, from the medians of every format."""
    ranked = sorted(race.runs.values(), key=lambda r: r.warm_get.median)
    order = ", ".join(f"{r.title} {_t(r.warm_get.median)}" for r in ranked)
    return (
        f"Medians of {race.rounds} interleaved rounds of {race.reads:,} gets each: {order}. "
        "A warm get costs Python calls, not I/O (every page is in the cache): the store does "
        "two offset reads, one string decode and one slice of a row of its columns in C; "
        "numpy.memmap and Arrow index one array per field (19 here) from Python; LMDB unpickles "
        "a record; SQLite runs a query through its B-tree."
    )


def why_lmdb_double(race: Race) -> str:
    """Why LMDB's doubling cost what it did against the store's."""
    lmdb, store = race["lmdb"], race["store"]
    return (
        f"LMDB holds a pickle per record: doubling U0 unpickled, changed and re-pickled all "
        f"{race.records:,} records and wrote them back in one transaction "
        f"({_mib(lmdb.double.write_bytes)} dirtied, {_t(lmdb.double.seconds)}); the store "
        f"multiplied one column in place ({_mib(store.double.write_bytes)}, "
        f"{_t(store.double.seconds)}): {race.ratio('lmdb', 'double'):,.0f}x faster."
    )


def why_cold_read(race: Race, read_ahead_kb: int | None = None) -> str:
    """Why the store's 1,024 cold gets read what they read from storage."""
    cold = race["store"].cold
    read = cold.gets.read_bytes
    if read is None:
        return "This machine does not count the bytes a process reads from storage."
    per_record = cold.file_bytes / max(race.records, 1)
    asked = race.reads * per_record
    ahead = f" (read_ahead_kb is {read_ahead_kb:,} here)" if read_ahead_kb else ""
    return (
        f"1,024 random records are about {_mib(asked)} of data ({per_record:,.0f} bytes each) "
        f"spread over the whole {_mib(cold.file_bytes)} file; storage delivered {_mib(read)} "
        f"({read / max(cold.file_bytes, 1):.0%} of the file) in {cold.gets.major_faults} major "
        f"fault(s): each fault maps a whole large folio and the kernel reads ahead around it"
        f"{ahead}, so random reads of a small file bring in most of it."
        + (f" {cold.left_pages} pages had stayed in the cache: {cold.note}" if cold.note else "")
    )


def hf_lines(hf: HFGets, race: Race) -> list[str]:
    """Hugging Face ``datasets`` over the same table, against Arrow's own get and the store's."""
    if hf.seconds_per_get is None:
        return [f"Hugging Face datasets: unknown here ({hf.reason})."]
    ours, arrow = race["store"].warm_get.median, race["arrow"].warm_get.median
    got, batch = hf.seconds_per_get.median, hf.batch_per_record
    rounds = len(hf.seconds_per_get.samples)
    lines = [
        f"Hugging Face datasets {hf.version}: Dataset.from_file over an Arrow stream export of "
        f"the same table, ds[i] {_t(got)} per record (median of {rounds} rounds): "
        f"{got / arrow:,.1f}x the Arrow peer's get, {got / ours:,.1f}x the store's."
    ]
    if batch is not None:
        lines.append(
            f"The same {race.reads:,} records in one call, ds[list of indices]: "
            f"{_t(batch.median)} per record, {got / batch.median:,.1f}x faster than one by one: "
            "it maps the same file, and the time of ds[i] goes to formatting each row into a "
            "Python dict, which a batch does once per column; read it in batches."
        )
    return lines


def _holds(ok: bool, detail: str) -> str:
    return ("holds here: " if ok else "does not hold here: ") + detail


def claims(race: Race) -> list[dict]:
    """The issue's claims, each with what this run measured and the verdict it supports:
    keyword arguments for ``results.claim``."""
    store, arrow = race["store"], race["arrow"]
    get_ratio = {k: _round_ratio(race, k, "get") for k in race.runs if k != "store"}
    take = _round_ratio(race, "arrow", "take")
    double_best = fastest(race, "double")
    others = [k for k in race.runs if k != "store"]
    against = min(others, key=lambda k: race.ratio(k, "double"))  # the store's nearest rival
    written = arrow.double.write_bytes or 0
    rows = [
        dict(key="task_store_double", claim="The store wins the in-place update (double U0, "
             "durable) against numpy.memmap, Arrow, SQLite and LMDB",
             measured=f"fastest: {race[double_best].title}; store {_t(store.double.seconds)}",
             verdict=_holds(double_best == "store", f"{race[against].title} took "
                            f"{race.ratio(against, 'double'):.2f}x the store's time (one run "
                            "each; numpy.memmap also writes one column in place)")),
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
             "writing it as an Arrow IPC file", measured=f"store {_t(store.build.seconds)}, "
             f"Arrow {_t(arrow.build.seconds)}",
             verdict=_holds(store.build.seconds <= arrow.build.seconds,
                            f"Arrow/store {race.ratio('arrow', 'build'):.2f}x (one build each: "
                            "close calls can flip between runs)")),
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
        "task_double_written": each(lambda r: r.double.write_bytes),
        "task_rewritten": each(lambda r: r.rewritten),
        "task_cold_read": each(lambda r: r.cold.gets.read_bytes),
        "task_cold_file_bytes": each(lambda r: r.cold.file_bytes),
        "task_cold_left_pages": each(lambda r: r.cold.left_pages),
        "task_get_rounds": each(lambda r: list(r.warm_get.samples)),
        "task_take_rounds": each(lambda r: list(r.take.samples)),
        "task_epoch_items": each(lambda r: r.epoch.items if r.epoch else None),
        "task_private_dirty": each(lambda r: r.worker_memory("private_dirty")),
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


def dask_claims(run, in_place_seconds: float) -> list[dict]:
    """The issue's claims about the Dask run, with this run's verdicts."""
    ratio = run.total_seconds / in_place_seconds
    where = "09, section 5 (double U0 across Dask workers)"
    return [
        dict(key="dask_equal", claim="The distributed doubling on a LocalCluster with 2 workers "
             "gives values equal to the store's", shown_in=where,
             measured=str(run.verification), verdict=_holds(bool(run.ok), "every value checked")),
        dict(key="dask_orders", claim="At QM9's size one machine doubling in place wins by "
             "orders of magnitude", shown_in=where,
             measured=f"Dask {_t(run.total_seconds)}, in place {_t(in_place_seconds)}",
             verdict=_holds(ratio >= 100, f"{ratio:,.0f}x")),
    ]  # fmt: skip


# What each format is, whatever the machine: its properties, not measurements.
PROPERTIES = {
    "store": ("yes: a column in place", "yes: flush (msync); a crash leaves the last flushed "
              "state", "yes: offsets + heap", "one record; take for a batch",
              "numpy views; Arrow zero copy (to_arrow, Polars, DuckDB)"),
    "memmap": ("yes: a .npy in place", "no journal: flush() writes pages, a crash mid-write "
               "tears a column", "by hand (offsets + bytes)", "batch slices; a get costs a "
               "Python index per field", "numpy everywhere (torch.from_numpy, JAX)"),
    "arrow": ("no: rewrite the file", "new file + rename: all or nothing", "yes: native",
              "batch (take, slices, scans)", "HF datasets, Polars, DuckDB, Spark, Ray"),
    "sqlite": ("yes: UPDATE", "yes: journal + fsync per transaction", "yes: TEXT",
               "queries; a get is a B-tree lookup", "PyG OnDiskDataset, every language"),
    "lmdb": ("a record at a time: re-pickle it", "yes: copy-on-write B-tree, fsync per commit",
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
            *map(_t, (run.double.seconds, run.warm_get.median, run.take.median)),
        )
        for kind, run in race.runs.items()
        if kind in PROPERTIES
    )
    return Table(header, rows, f"{race.records:,} QM9 records, this run's numbers")
