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

from mmlab.course import practice
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
    "page_coverage",
    "plot_ratios",
    "table",
    "why_arrow_double",
    "why_cold_read",
    "why_fastest_get",
    "why_lmdb_double",
    "winner",
]

MiB = 2**20
# names in sentences; the long titles (peers.PEERS) are for the table and the legend
SHORT = {"store": "store", "memmap": "numpy.memmap", "arrow": "Arrow", "sqlite": "SQLite",
         "lmdb": "LMDB"}  # fmt: skip
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
    header = ("format", "build", "on disk (built)", "double U0 + durable", "on disk after double",
              "dirtied to double (≈ data written; file-system metadata not counted)",
              "open cold (read, major faults)",
              "1,024 gets cold, files dropped again after the open (read, major faults)",
              "get warm", "take 1,024 warm", "epoch, 2 workers",
              "private dirty growth MiB, worker 1 / worker 2",
              "Pss_File growth MiB, worker 1 / worker 2")  # fmt: skip
    rows = []
    for run in race.runs.values():
        rewrite = " (new file)" if run.rewritten else ""
        rows.append((
            run.title, _timed(run.builds, run.build), _mib(run.disk_bytes),
            _timed(run.doubles, run.double), _mib(run.disk_after),
            _mib(run.double.write_bytes) + rewrite,
            _cold(run.cold.open), _cold(run.cold.gets),
            f"{_t(run.warm_get.median)} [{_t(run.warm_get.q1)}–{_t(run.warm_get.q3)}]",
            _timed(run.take, None), _t(run.epoch.seconds) if run.epoch else "n/a",
            _per_worker(run.worker_growth("private_dirty")),
            _per_worker(run.worker_growth("pss_file")),
        ))  # fmt: skip
    caption = (
        f"{race.records:,} QM9 records; build and double: median [IQR] of fresh interleaved "
        "rounds where shown, else one run; warm times: median [IQR] of "
        f"{race.rounds} interleaved rounds; cold: after the files were dropped from the page "
        "cache, before the open and again before the gets; epoch: one run"
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
    name = SHORT.get(kind, kind)
    said = ratio.verdict(1.0, above="the store faster", below=f"{name} faster")
    return f"{name} {ratio.text('.2f', 'x', than=1.0)} the store's time: {said}"


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
    title = SHORT.get(kind, kind)
    if ratio is None:
        r = race.ratio(kind, what)
        return (1 if r > 1 else -1), f"{title} {r:,.1f}x the store's time (one run each)"
    said = ratio.verdict(1.0, above="the store faster", below=f"{title} faster")
    return ratio.side(1.0), f"{title} {ratio.text('.2f', 'x', than=1.0)} the store's time: {said}"


def _samples(race: Race, kind: str, what: str) -> tuple[float, ...] | None:
    attr = {"build": "builds", "double": "doubles", "get": "warm_get", "take": "take"}[what]
    spread = getattr(race[kind], attr)
    return None if spread is None else spread.samples


def winner(race: Race, what: str, label: str) -> str:
    """``label``: which format was fastest at ``what``, named from the paired round ratios of
    the two fastest (their rounds were interleaved), not from separate medians: when those
    do not clearly agree, the two are "too close to call". Then every other format's median."""
    value = practice._value
    ranked = sorted(race.runs, key=lambda k: value(race[k], what))
    best, rest = ranked[0], ranked[1:]
    head = f"{label}: fastest here {SHORT.get(best, best)} ({_t(value(race[best], what))})"
    if rest:
        second = rest[0]
        a, b = _samples(race, best, what), _samples(race, second, what)
        if a is not None and b is not None and len(a) == len(b):
            ratio = Spread.of([y / x for x, y in zip(a, b, strict=True)])
            n, k = len(a), ratio.count_above(1.0)
            names = SHORT.get(best, best), SHORT.get(second, second)
            if ratio.side(1.0) > 0:
                head += f", faster than {names[1]} in {k} of {n} paired rounds"
            else:
                who, m = (names[0], k) if k >= n - k else (names[1], n - k)
                head = (
                    f"{label}: {names[0]} and {names[1]} too close to call (medians "
                    f"{_t(value(race[best], what))} and {_t(value(race[second], what))}; round "
                    f"by round {who} was faster in {m} of {n})"
                )
                rest = rest[1:]
    if rest:
        head += "; then " + ", ".join(f"{SHORT.get(k, k)} {_t(value(race[k], what))}" for k in rest)
    return head


def batch_outcome(race: Race) -> str:
    """Which format's batch (take) won here, from the paired rounds, with every median."""
    return (winner(race, "take", f"Batch of {race.reads:,} (take)")
            + "; each format against the store, round by round:")  # fmt: skip


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
        + ", ".join(f"{SHORT[k]} {_t(race.ratio(k, 'double') * base)}" for k in quick)
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
    each = ", ".join(f"{SHORT.get(k, k)} {r:.2f}x" for k, r in ratios.items())
    return (
        f"DataLoader epoch: every format's at most {worst:.2f}x the store's {_t(store.seconds)} "
        f"({each}): with {len(store.start)} workers, {_t(store.first_batch_s)} of the store's "
        f"epoch went to starting them before the first batch, the rest to {store.items:,} gets, "
        f"collating {store.batches:,} batches and passing them to this process: the warm-get "
        "ratios above shrink to these."
    )


def lines(race: Race) -> list[str]:
    """What the run showed, step by step, in sentences built from its numbers."""
    store = race["store"]
    others = [k for k in race.runs if k != "store"]
    out = [winner(race, "build", "Build") + "; against the store:"]
    out += [f"  {_against(race, k, 'build')[1]}" for k in others]
    out.append(
        winner(race, "double", "Double U0 + durable")
        + f"; the store dirtied {_mib(store.double.write_bytes)}: {_column_pages(race)}; "
        "against it:"
    )
    out += [f"  {_against(race, k, 'double')[1]}" for k in others]
    for run in race.runs.values():
        if run.rewritten:
            out.append(
                f"  {SHORT.get(run.kind, run.kind)} cannot update in place: it wrote "
                f"{_mib(run.double.write_bytes)} "
                f"for a {_mib(run.disk_bytes)} file and the data file is a new inode (a new "
                "file renamed over the old one)."
            )
    for run in race.runs.values():
        if run.kind == "lmdb" and run.disk_after > 1.1 * run.disk_bytes:
            out.append(
                f"  {SHORT.get(run.kind, run.kind)}'s files grew from {_mib(run.disk_bytes)} to "
                f"{_mib(run.disk_after)} with the double: copy-on-write writes every changed page "
                "anew; the freed pages are reused by later writes, but the file never shrinks "
                "(its cold reads below run on the grown file)."
            )
    out += durable_lines(race)
    out.append(winner(race, "get", "Warm random get") + "; against the store, round by round:")
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
    order = ", ".join(f"{SHORT.get(r.kind, r.kind)} {_t(r.warm_get.median)}" for r in ranked)
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


def page_coverage(records: int, reads: int, item_bytes: int = 8) -> tuple[int, float]:
    """(pages, expected share of them touched) for one column of ``records`` items of
    ``item_bytes`` when ``reads`` distinct random rows are read: 1 - (1 - 1/pages)^reads."""
    import os

    page = os.sysconf("SC_PAGE_SIZE")
    pages = max(-(-records * item_bytes // page), 1)
    return pages, 1.0 - (1.0 - 1.0 / pages) ** reads


def why_cold_read(race: Race, read_ahead_kb: int | None = None) -> str:
    """Why the store's 1,024 cold gets read what they read from storage: a columnar file, so
    each get touches a page of every column, and random rows cover most pages already."""
    import os

    from mmlab.data.peers import FIELDS

    cold = race["store"].cold
    read = cold.gets.read_bytes
    if read is None:
        return "This machine does not count the bytes a process reads from storage."
    page = os.sysconf("SC_PAGE_SIZE")
    pages, share = page_coverage(race.records, race.reads)
    places = len(FIELDS) + 2  # every float64 column, the SMILES offsets and the SMILES heap
    ahead = "up to read_ahead_kb, unknown here"
    if read_ahead_kb:
        ahead = (f"up to read_ahead_kb: {read_ahead_kb:,} KiB here; 128 KiB is the usual "
                 "default on a laptop's disk")  # fmt: skip
    return (
        f"The store is columnar: a full-record get touches about {places} places (the "
        f"{len(FIELDS)} float64 columns, the SMILES offsets and the heap). One float64 column of "
        f"{race.records:,} records is {_mib(race.records * 8)}: {pages:,} pages of "
        f"{page // 8:,} rows, so {race.reads:,} random rows touch about "
        f"1 - (1 - 1/{pages:,})^{race.reads:,} = {share:.0%} of each column's pages. At page "
        f"granularity these gets already touch ~{share:.0%} of the pages of every column they "
        "read; read-around "
        f"({ahead}) only decides how many faults bring them in, not how many bytes. Here "
        f"storage delivered {_mib(read)} ({read / max(cold.file_bytes, 1):.0%} of the "
        f"{_mib(cold.file_bytes)} file as read cold, after the double) in "
        f"{cold.gets.major_faults} major fault(s), after the open had read "
        f"{_mib(cold.open.read_bytes)}. In a row layout (LMDB's pickle per record) a record "
        "lies in one place, and there the read-around decides how many bytes are read."
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
