"""Lab 09's race in words, a table and a figure, every verdict from the run's own numbers.

``table`` renders a ``practice.Race`` as one table (HTML in a notebook, text elsewhere: no
pandas); ``plot_ratios`` draws each format's cost over the store's, step by step, on a log
scale; ``lines`` says what the run showed. The ``why_*`` functions explain one prediction each
(the claims, the Dask comparison and the table for picking a format: ``practicejudge``).
A ratio above 1 means the store was faster (or smaller); a warm comparison is called only
when the interleaved rounds agree (``Spread.verdict``), otherwise it is "no clear difference".
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from mmlab.course.practice import HFGets, Race
from mmlab.instruments.spread import Spread

__all__ = [
    "Table",
    "batch_outcome",
    "durable_lines",
    "epoch_line",
    "fastest",
    "hf_lines",
    "lines",
    "mib",
    "plot_ratios",
    "table",
    "why_arrow_double",
    "why_cold_read",
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
    return " / ".join(f"{v / MiB:+,.1f}" for v in values) or "n/a"


def _timed(spread, step) -> str:
    """A repeated step as median [IQR]; a step measured once as its one time."""
    if spread is None:
        return _t(step.seconds)
    return f"{_t(spread.median)} [{_t(spread.q1)}–{_t(spread.q3)}]"


def _cold(step) -> str:
    return f"{_t(step.seconds)} ({_mib(step.read_bytes)}, {step.major_faults})"


def table(race: Race) -> Table:
    """One row per format: build, double, cold and warm reads, the epoch and its workers."""
    header = ("format", "build", "on disk (built)", "double U0 + durable",
              "dirtied to double (≈ data written; file-system metadata not counted)",
              "open cold (read, major faults)", "1,024 gets cold (read, major faults)",
              "get warm", "take 1,024 warm", "epoch, 2 workers",
              "private dirty growth MiB, worker 1 / worker 2",
              "Pss_File growth MiB, worker 1 / worker 2")  # fmt: skip
    rows = []
    for run in race.runs.values():
        rewrite = " (new file)" if run.rewritten else ""
        rows.append((
            run.title, _timed(run.builds, run.build), _mib(run.disk_bytes),
            _timed(run.doubles, run.double), _mib(run.double.write_bytes) + rewrite,
            _cold(run.cold.open), _cold(run.cold.gets),
            f"{_t(run.warm_get.median)} [{_t(run.warm_get.q1)}–{_t(run.warm_get.q3)}]",
            _t(run.take.median), _t(run.epoch.seconds) if run.epoch else "n/a",
            _per_worker(run.worker_growth("private_dirty")),
            _per_worker(run.worker_growth("pss_file")),
        ))  # fmt: skip
    caption = (
        f"{race.records:,} QM9 records; build and double: median [IQR] of fresh interleaved "
        "rounds where shown, else one run; warm times: median [IQR] of "
        f"{race.rounds} interleaved rounds; cold: after the files were dropped from the page cache"
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


def mib(n: float | None) -> float | None:
    """``n`` bytes in MiB to 2 decimals, for a prediction's measured value (None: unknown)."""
    return None if n is None else round(n / MiB, 2)


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


def _column_pages(race: Race) -> str:
    import os

    page = os.sysconf("SC_PAGE_SIZE")
    column = race.records * 8
    pages = -(-column // page)
    return (f"its one column, {race.records:,} x 8 bytes = {_mib(column)}, rounded up to "
            f"whole {page // 1024} KiB pages ({pages:,} pages = {_mib(pages * page)})")  # fmt: skip


def _rounds_ratio(race: Race, kind: str, what: str) -> Spread | None:
    """``kind``'s fresh build or double over the store's, round by round; None if not repeated."""
    attr = {"build": "builds", "double": "doubles"}[what]
    theirs, ours = getattr(race[kind], attr), getattr(race["store"], attr)
    if theirs is None or ours is None:
        return None
    return Spread.of([a / b for a, b in zip(theirs.samples, ours.samples, strict=True)])


def _against(race: Race, kind: str, what: str) -> tuple[int, str]:
    """(side, words): ``kind`` against the store at a build or double, by rounds where repeated,
    else by one run each (only for formats orders of magnitude apart)."""
    ratio = _rounds_ratio(race, kind, what)
    title = race[kind].title
    if ratio is None:
        r = race.ratio(kind, what)
        return (1 if r > 1 else -1), f"{title} {r:,.1f}x the store's time (one run each)"
    said = ratio.verdict(1.0, above="the store faster", below=f"{title} faster")
    return ratio.side(1.0), f"{title} {ratio.text('.2f', 'x', than=1.0)} the store's time: {said}"


def batch_outcome(race: Race) -> str:
    """Which format's batch (take) won here, with every median."""
    best = fastest(race, "take")
    ranked = sorted(race.runs.values(), key=lambda r: r.take.median)
    order = ", ".join(f"{r.title} {_t(r.take.median)}" for r in ranked)
    return (f"Batch of {race.reads:,} (take): fastest median here {race[best].title} ({order}); "
            "each format against the store, round by round:")  # fmt: skip


def _double_s(run) -> float:
    """The doubling's seconds: the median of the fresh rounds where repeated, else the one."""
    return run.doubles.median if run.doubles else run.double.seconds


def _store_double(race: Race) -> float:
    return _double_s(race["store"])


def durable_lines(race: Race) -> list[str]:
    """Which updates are only durable and which atomic, with their times here."""
    quick = [k for k in ("store", "memmap") if k in race.runs]
    atomic = [k for k in ("arrow", "sqlite", "lmdb") if k in race.runs]
    if not quick or not atomic:
        return []
    base = _store_double(race)
    times = [race.ratio(k, "double") * base for k in atomic]
    out = [
        "Durable is not atomic: SQLite (a rollback journal), LMDB (a copy-on-write commit) and "
        "Arrow (a new file renamed over the old) make the update atomic: a crash leaves the old "
        "U0 or the new. The store and numpy.memmap only make it durable: flush() (msync) writes "
        "the dirty pages with no journal, and a crash before it ends can leave U0 partly "
        "doubled. So this race compares durable-only updates ("
        + ", ".join(f"{race[k].title} {_t(race.ratio(k, 'double') * base)}" for k in quick)
        + f") with atomic ones ({_t(min(times))} to {_t(max(times))})."
    ]
    sq = race.runs.get("sqlite")
    if sq is not None and sq.double.write_bytes:
        out.append(
            f"  SQLite dirtied {_mib(sq.double.write_bytes)} for a {_mib(sq.disk_bytes)} "
            f"database ({sq.double.write_bytes / max(sq.disk_bytes, 1):.1f}x its size): in "
            "journal mode DELETE it copies every page it changes into a rollback journal, "
            "fsyncs it, rewrites the database pages, fsyncs them, then deletes the journal."
        )
    return out


def epoch_line(race: Race) -> str:
    """Every format's DataLoader epoch against the store's, and where the time went."""
    store = race["store"].epoch
    if store is None:
        return "DataLoader epoch: not run."
    ratios = {k: race.ratio(k, "epoch") for k in race.runs if k != "store"}
    worst = max(ratios.values(), default=1.0)
    each = ", ".join(f"{race[k].title} {r:.2f}x" for k, r in ratios.items())
    return (
        f"DataLoader epoch: every format's within {worst:.1f}x of the store's {_t(store.seconds)} "
        f"({each}): with {len(store.start)} workers, {_t(store.first_batch_s)} of the store's "
        f"epoch went to starting them before the first batch, the rest to {store.items:,} gets, "
        f"collating {store.batches:,} batches and passing them to this process: the warm-get "
        "ratios above shrink to these."
    )


def lines(race: Race) -> list[str]:
    """What the run showed, step by step, in sentences built from its numbers."""
    store = race["store"]
    others = [k for k in race.runs if k != "store"]
    out = [f"Build: fastest median here {race[fastest(race, 'build')].title}; against the store:"]
    out += [f"  {_against(race, k, 'build')[1]}" for k in others]
    out.append(
        f"Double U0 + durable: fastest median here {race[fastest(race, 'double')].title}; the "
        f"store dirtied {_mib(store.double.write_bytes)}: {_column_pages(race)}; against it:"
    )
    out += [f"  {_against(race, k, 'double')[1]}" for k in others]
    for run in race.runs.values():
        if run.rewritten:
            out.append(
                f"  {run.title} cannot update in place: it wrote {_mib(run.double.write_bytes)} "
                f"for a {_mib(run.disk_bytes)} file and the data file is a new inode (a new "
                "file renamed over the old one)."
            )
    out += durable_lines(race)
    out.append(f"Warm random get: fastest here {race[fastest(race, 'get')].title}.")
    out += [f"  {_versus(race, kind, 'get')}" for kind in others]
    out.append(batch_outcome(race))
    out += [f"  {_versus(race, kind, 'take')}" for kind in others]
    out.append(epoch_line(race))
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
        f"{_column_pages(race)}: "
        f"{written / max(store.double.write_bytes or 1, 1):,.0f}x less."
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
        f"{_t(_store_double(race))}, the median of its rounds): "
        f"{race.ratio('lmdb', 'double'):,.0f}x faster."
    )


def why_cold_read(race: Race, read_ahead_kb: int | None = None) -> str:
    """Why the store's 1,024 cold gets read what they read from storage."""
    cold = race["store"].cold
    read = cold.gets.read_bytes
    if read is None:
        return "This machine does not count the bytes a process reads from storage."
    per_record = cold.file_bytes / max(race.records, 1)
    asked = race.reads * per_record
    ahead = (f"read_ahead_kb ({read_ahead_kb:,} KiB here; 128 KiB is the usual default on a "
             "laptop's disk)" if read_ahead_kb else "read_ahead_kb (unknown here)")  # fmt: skip
    return (
        f"{race.reads:,} distinct random records are about {_mib(asked)} of the file "
        f"({per_record:,.0f} bytes of file per record), spread over all of its "
        f"{_mib(cold.file_bytes)}; storage delivered {_mib(read)} "
        f"({read / max(cold.file_bytes, 1):.0%} of the file) in {cold.gets.major_faults} major "
        f"fault(s), after the open had read {_mib(cold.open.read_bytes)}. A major fault on a "
        f"file mapping makes the kernel read around the faulting page, {ahead} at a time; "
        "later touches inside what it read are minor faults. With a read-around this large "
        "against the file, a few faults bring in most of it; with a small one, random gets "
        "read about a read-around per record instead."
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
        take = race["arrow"].take.median / race.reads
        lines.append(
            f"Even in a batch, ds[indices] costs {batch.median / take:,.1f}x pyarrow's own take "
            f"per record ({_t(take)}): it still builds Python lists of values. "
            'ds.with_format("numpy") returns NumPy arrays instead of Python objects, and '
            "ds.to_iterable_dataset() streams it without indexing row by row."
        )
    return lines
