"""What notebook 05 prints and records from its measurements of the blog's QM9 example.

Bytes written by a flushed mapping are counted when pages are made dirty (``write_bytes`` of
``/proc/self/io``), a page at a time, or a whole *folio* (a block of pages the page cache
manages as one) where the file system caches the file in large folios: ``storage_lines`` prints
them per flush, in pages, so the reader sees which case happened. The device writes at least
that much (plus the file system's journal). ``estimate_lines`` prints the extrapolation with
its spread. The ``record_*`` and ``claim_*`` functions keep the course's bookkeeping
(``mmlab.results``) out of the notebook's cells; each sentence is built from this run's numbers.
The ``why_*`` and ``*_outcome`` functions explain the notebook's predictions when they are
revealed: what was measured, and the machine fact that decided it.
"""

from __future__ import annotations

import mmap
from typing import Any

from mmlab.course import results
from mmlab.data.blog import Layout, Run
from mmlab.data.blogsize import Estimate

__all__ = [
    "claim_example",
    "claim_flush",
    "estimate_lines",
    "flush_cost_line",
    "folio_line",
    "item_outcome",
    "load_lines",
    "record_load",
    "record_run",
    "storage_lines",
    "why_biggest",
    "why_in_memory",
    "why_minutes",
    "why_store_pages",
    "written_outcome",
]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def storage_lines(result: Any, flushes: dict[str, int]) -> list[str]:
    """Per row of a ``bench.compare`` result: medians of bytes read from and written to
    storage, and for rows that flush, the bytes written per flush in pages."""
    lines = [f"{'':34} {'read MiB':>9} {'written MiB':>12} {'flushes':>8} {'pages/flush':>12}"]
    for name in result.names:
        ms = result[name].measurements
        read = [m.read_bytes for m in ms if m.read_bytes is not None]
        written = [m.write_bytes for m in ms if m.write_bytes is not None]
        r = f"{_median(read) / 2**20:9.2f}" if read else f"{'n/a':>9}"
        w = _median(written) if written else None
        n = flushes.get(name, 0)
        per = f"{w / n / mmap.PAGESIZE:12.1f}" if w is not None and n else f"{'':>12}"
        wtext = f"{w / 2**20:12.2f}" if w is not None else f"{'n/a':>12}"
        lines.append(f"{name:34} {r} {wtext} {n:8,} {per}")
    return lines


def folio_line(result: Any, name: str, flushes: int, large_folios: Any) -> str:
    """Which case the bytes written per flush of row ``name`` show: about one page, or a
    large folio; ``large_folios`` is the machine report's fact, named as the deciding one."""
    written = [m.write_bytes for m in result[name].measurements if m.write_bytes is not None]
    if not written:
        return "no bytes-written counter here (/proc/self/io): cannot tell pages per flush"
    pages = _median(written) / flushes / mmap.PAGESIZE
    fact = getattr(large_folios, "value", None)
    said = {True: "says yes", False: "says no"}.get(fact, "could not tell")
    if pages < 1.5:
        case = f"about one {mmap.PAGESIZE:,}-byte page per flush ({pages:.1f})"
        if fact:  # possible is not used: the folio size depends on how the pages were cached
            case += (
                ": this file's pages sat in one-page folios (each small write dirtied one page,"
                " and the flush wrote only that)"
            )
    else:
        case = (
            f"{pages:.1f} pages per flush: a write to one byte re-dirtied a large folio, "
            "and the flush wrote all of it"
        )
    return f"{name}: {case} (large folios, the machine report {said})"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:,.0f}" if seconds >= 1200 else f"{seconds / 60:,.1f}"


def estimate_lines(estimate: Estimate, slower: float, flush_fact: Any) -> list[str]:
    """The extrapolation, phase by phase, with the chunks' quartiles as the spread;
    ``slower``: how much slower a flush was in the 100 MB mapping (1.0 if not clearly)."""
    lines = []
    for phase, count in estimate.counts.items():
        q1, median, q3 = (x * 1e3 for x in estimate.per_flush[phase])
        chunks = estimate.chunks[phase]
        spread = f"IQR of {chunks} chunks {q1:.3f}-{q3:.3f}" if chunks > 3 else "too short to chunk"
        gib = estimate.write_bytes[phase]
        lines.append(
            f"{phase:>8}: {count:>9,} flushes x {median:.3f} ms [{spread}]"
            f" = {estimate.seconds[phase]:7,.0f} s; {estimate.cpu_seconds[phase]:5,.0f} s CPU, "
            + ("n/a written" if gib is None else f"{gib / 2**30:5.2f} GiB written")
        )
    low, high = estimate.spread_seconds
    total = sum(w or 0 for w in estimate.write_bytes.values()) / 2**30
    lines.append(
        f"in all about {estimate.total_seconds / 60:,.0f} min for {estimate.flushes:,} flushes "
        f"({_minutes(low)} to {_minutes(high)} min if every flush cost the chunks' lower or "
        f"upper quartile); at least {total:,.1f} GiB written (pages dirtied; the device also "
        "writes the journal)"
    )
    if slower > 1:
        lines.append(
            f"flushes in the 100 MB mapping were {slower:.2f}x slower: about "
            f"{estimate.total_seconds * slower / 60:,.0f} min at that cost"
        )
    probe = getattr(flush_fact, "value", None)
    if isinstance(probe, dict) and "median" in probe:
        lines.append(
            "what decides it: the cost of one flush on this disk; the machine report's probe "
            f"took {probe['median'] * 1e3:.3f} ms (median of {probe['rounds']}, "
            f"{probe['min'] * 1e3:.3f} to {probe['max'] * 1e3:.3f} ms)"
        )
    return lines


def flush_cost_line(flush_fact: Any) -> str:
    """What one write plus ``flush()`` of a mapping costs on the file system under data/, from
    the machine report's probe, or why it is unknown."""
    probe = getattr(flush_fact, "value", None)
    if not (isinstance(probe, dict) and "median" in probe):
        reason = getattr(flush_fact, "reason", "the machine report has no flush probe")
        return f"the cost of one flush here is unknown: {reason}"
    return (
        f"one byte written to a mapping, then flush(), costs about {probe['median'] * 1e3:.3f} ms"
        f" on the file system under data/ (the machine report's probe: median of "
        f"{probe['rounds']} rounds, {probe['min'] * 1e3:.3f} to {probe['max'] * 1e3:.3f} ms)"
    )


def load_lines(loaded: dict, all_qm9: float, per_molecule: float, counts: Any) -> list[str]:
    """§1's result: what loading PyG's QM9 cost in a fresh process, and all of QM9 scaled by
    its atoms and bonds (and, for comparison, by molecules alone)."""
    reused = (
        " (less: part reused memory freed earlier)"
        if loaded["anon_growth"] < loaded["held"]
        else ""
    )
    return [
        f"{loaded['molecules']:,} molecules in a fresh process: anonymous RSS "
        f"{loaded['anon_growth'] / 2**20:+.2f} MiB; its tensors and strings hold "
        f"{loaded['held'] / 2**20:.2f} MiB{reused}",
        f"all {len(counts):,} molecules ({int(counts.atoms.sum()):,} atoms, "
        f"{int(counts.bonds.sum()):,} bonds): about {all_qm9 / 2**20:,.0f} MiB held in RAM before "
        f"any byte is mapped (scaled by molecules alone: {per_molecule / 2**20:,.0f} MiB)",
    ]


def record_run(
    full: Layout, scaled: Layout, run: Run, estimate: Estimate, flush_size_ratio: float
) -> None:
    """Record §2's numbers: the full file's layout, the scaled run and the extrapolation."""
    results.record(
        "05",
        full_records=full.records,
        full_data_bytes=full.data_bytes,
        full_tail=full.tail,
        full_phantoms=full.phantoms,
        full_remainder=full.remainder,
        full_ending=full.ending,
        scaled_remainder=scaled.remainder,
        scaled_filesize=scaled.filesize,
        scaled_error=run.error,
        scaled_ending=scaled.ending,
        allocated=list(run.allocated),
        estimate_seconds=estimate.total_seconds,
        estimate_spread_seconds=list(estimate.spread_seconds),
        flush_size_ratio=flush_size_ratio,
        estimate_write_bytes=sum(w or 0 for w in estimate.write_bytes.values()),
    )


def claim_flush(writing: Any, small: Layout, estimate: Estimate, filesystem: str) -> None:
    """Record §3's numbers and the claims-table row on flushing after every write."""
    every = writing["flush every record"].measurements
    written = int(_median([m.write_bytes or 0 for m in every]))
    cpu, wall = _median([m.cpu_s for m in every]), _median([m.wall_s for m in every])
    ratio = writing.relative("flush once", "flush every record")
    results.record(
        "05",
        write_data_bytes=small.data_bytes,
        write_bytes_flush_every=written,
        write_cpu_s=cpu,
        write_wall_s=wall,
        flush_once_speedup=ratio.median,
        flush_once_side=ratio.side(1.0),
    )
    low, high = estimate.spread_seconds
    results.claim(
        "05",
        "flush_every_write",
        claim="Flush after every write to update a mapped file",
        shown_in="05 §2, §3",
        measured=f"the blog's writing loop, {small.records:,} records, medians of "
        f"{writing.rounds} interleaved rounds: flushing once is {ratio.text('.3g', 'x', than=1.0)} "
        f"faster ({ratio.verdict(above='faster', below='slower')}); flushing every record "
        f"charged {written / 2**20:.2f} MiB to storage for {small.data_bytes / 2**20:.3f} MiB "
        f"of data, CPU {cpu * 1e3:,.0f} ms of {wall * 1e3:,.0f} ms wall ({filesystem}); "
        f"extrapolated to the blog's whole program: about {estimate.total_seconds / 60:,.0f} "
        f"min ({low / 60:,.0f} to {high / 60:,.0f}), at least "
        f"{sum(w or 0 for w in estimate.write_bytes.values()) / 2**30:,.1f} GiB written",
        verdict="misleading: each flush waits for storage and rewrites at least a whole page; "
        "the data is in the page cache at once, so flush once, when done"
        if ratio.side(1.0) > 0
        else "not shown here: flushing every record was not clearly slower",
    )


def claim_example(**v: Any) -> None:
    """Record §6's numbers and the claims-table row on the QM9 example itself. ``v`` holds:
    loaded, all_qm9, y_shape, scaled, run, full, estimate, compared, steps (name -> ratio),
    touched."""
    steps = v["steps"]
    results.record(
        "05",
        **{f"speedup_{k}": r.median for k, r in steps.items()},
        **{f"speedup_{k}_side": r.side(1.0) for k, r in steps.items()},
    )
    full, run, scaled, loaded = v["full"], v["run"], v["scaled"], v["loaded"]
    speedups = ", ".join(f"{k} {r.median:,.3g}x" for k, r in steps.items())
    results.claim(
        "05",
        "qm9_example",
        claim="The QM9 example itself",
        shown_in="05 §1, §2, §4, §6",
        measured=f"`data.y.item()` fails on y of shape {v['y_shape']}; `__file__` is undefined "
        f"here; PyG's QM9 is an {loaded['in_memory']} (anonymous RSS "
        f"{loaded['anon_growth'] / 2**20:+.2f} MiB for {loaded['molecules']:,} molecules; "
        f"scaled by atoms and bonds, about {v['all_qm9'] / 2**20:,.0f} MiB held for all of QM9); "
        f"run on a {scaled.filesize:,}-byte file with the 100 MB file's proportions, the scan "
        f"doubled {scaled.records:,} records, then {scaled.phantoms:,} phantom ones, allocated "
        f"{run.allocated[2]:,} bytes of blocks (from {run.allocated[0]:,}) and ended with "
        f"`{run.error}`; on the 100 MB file with PyG's SMILES (as prepare_pyg_root makes them): "
        f"{full.phantoms:,} phantom records, tail {full.tail:,} bytes = {full.remainder} mod 12, "
        f"about {v['estimate'].total_seconds / 60:,.0f} min; doubling U0 of "
        f"{v['compared']:,} records, speed-up per step: {speedups}; the store touched only "
        f"{', '.join(v['touched']) or 'no section'}",
        verdict="the idea holds; the code has six defects (`__file__`, `y.item()`, all of QM9 in "
        "RAM, no count or index, a scan past the data ending in struct.error, a flush per "
        "record), fixed in `mmlab.seedformat` and done right with `RecordStore`",
    )


def record_load(loaded: dict, all_qm9: float, per_molecule: float, agree: bool) -> None:
    """Record §1's numbers: PyG's base class, what loading it cost in a fresh process, the
    estimates for all of QM9 (by atoms and bonds, by molecules alone), and whether the
    loaded SMILES have the lengths ``blogsize.pyg_counts`` computed."""
    results.record(
        "05",
        pyg_base=loaded["in_memory"],
        pyg_anon_growth=loaded["anon_growth"],
        pyg_held=loaded["held"],
        pyg_all_estimate=all_qm9,
        pyg_all_per_molecule=per_molecule,
        smiles_lengths_agree=agree,
    )


# -- why each prediction came out as it did, from this run's numbers -------------------------


def why_in_memory(loaded: dict, all_qm9: float, per_molecule: float, counts: Any) -> str:
    """Why all of QM9 in PyG's ``InMemoryDataset`` takes ``all_qm9`` bytes: what the loaded
    molecules held, and how the atoms and bonds of all of QM9 scale it."""
    n = loaded["molecules"]
    small = counts.head(n)
    atoms_here, atoms_all = small.atoms.mean(), counts.atoms.mean()
    return (
        f"PyG's QM9 is an {loaded['in_memory']}: loading it keeps every tensor in the "
        f"process's anonymous memory. The {n:,} molecules loaded here hold "
        f"{loaded['held'] / 2**20:.2f} MiB; all {len(counts):,} have "
        f"{int(counts.atoms.sum()):,} atoms and {int(counts.bonds.sum()):,} bonds, and the "
        f"per-atom and per-bond tensors grow with those: about {all_qm9 / 2**20:,.0f} MiB, "
        f"{all_qm9 / per_molecule:.2f}x what scaling by molecules alone gives, since the first "
        f"molecules average {atoms_here:.1f} atoms against {atoms_all:.1f} over all of QM9."
    )


def item_outcome(y: Any) -> tuple[str, str]:
    """What ``y.item()`` gives on a molecule's targets ("error" or "number"), and why."""
    try:
        value = y.item()
    except (RuntimeError, ValueError) as error:
        return "error", (
            f"item() converts a tensor of exactly one element to a Python number; data.y has "
            f"shape {tuple(y.shape)}: {y.numel()} elements, the molecule's {y.numel()} targets, "
            f"so it raises {type(error).__name__}: {str(error).strip()}"
        )
    return "number", f"data.y has a single element here, so item() returns it: {value}"


def why_minutes(estimate: Estimate, flush_fact: Any, filesystem: str) -> str:
    """Why the blog's program would take ``estimate.total_seconds`` on its 100 MB file: the
    count of flushes times what one cost in the scaled run, and the fact that decides it."""
    c, full = estimate.counts, estimate.full
    per = {p: estimate.per_flush[p][1] * 1e3 for p in c}
    cpu = sum(estimate.cpu_seconds.values()) / max(estimate.total_seconds, 1e-12)
    probe = getattr(flush_fact, "value", None)
    probed = (
        f"; the machine report's probe: {probe['median'] * 1e3:.3f} ms per flush"
        if isinstance(probe, dict) and "median" in probe
        else ""
    )
    return (
        f"The program flushes {estimate.flushes:,} times on the 100 MB file: once per record "
        f"written ({full.records:,}), per record doubled ({full.records:,}) and per phantom "
        f"record of the zero tail ({full.phantoms:,}). Each flush is an msync(MS_SYNC) that "
        "returns when the storage reports the page written; in the scaled run one cost "
        "(median of its chunks) "
        f"{per['writing']:.3f} ms writing, {per['doubling']:.3f} ms doubling, "
        f"{per['phantom']:.3f} ms in the tail, so about {estimate.total_seconds / 60:,.1f} min, "
        f"{min(cpu, 1):.0%} of it CPU time. What decides it is what one flush costs on the "
        f"storage under data/ ({filesystem}{probed}): next to nothing where there is no "
        "storage to wait for (tmpfs), milliseconds on a disk that waits for its write cache."
    )


def written_outcome(
    writing: Any, records: int, data_bytes: int, filesystem: str
) -> tuple[float | None, str]:
    """MiB charged as written by the writing loop that flushes every record (None: unknown),
    and why: pages per flush, against the loop that flushes once."""
    every = [m.write_bytes for m in writing["flush every record"].measurements]
    once = [m.write_bytes for m in writing["flush once"].measurements]
    if any(w is None for w in every + once):
        return None, (
            "this system has no /proc/self/io, so the bytes a process makes dirty are not "
            "counted: the time of the two loops above still shows the cost of the flushes"
        )
    written, written_once = _median(every), _median(once)
    if filesystem in ("tmpfs", "ramfs") or written < data_bytes:
        return written / 2**20, (
            f"the file lives on {filesystem}: a flush has no storage to write to, so dirtying "
            f"its pages charges (almost) nothing: {written:,.0f} bytes for {data_bytes:,} of data"
        )
    pages = written / records / mmap.PAGESIZE
    folio = (
        ": more than a page per flush, so the page sat in a large folio, written back whole"
        if pages >= 1.5
        else ""
    )
    return written / 2**20, (
        f"{records:,} flushes wrote {pages:.1f} pages of {mmap.PAGESIZE:,} bytes each on "
        f"average{folio}, for records of {data_bytes / records:.0f} bytes: each flush cleans "
        "the page, the next record dirties it again, and the next flush writes the whole page "
        f"again: {written / data_bytes:,.0f}x the {data_bytes / 2**20:.3f} MiB of data. Flushing "
        f"once wrote {written_once / 2**20:.3f} MiB, {written_once / mmap.PAGESIZE:.0f} pages: "
        f"about once each of the {-(-data_bytes // mmap.PAGESIZE)} pages the data spans."
    )


def why_store_pages(cached: dict, sections: dict, dirty: Any, eviction_works: Any) -> str:
    """Why doubling U0 of a store (evicted, readahead off) left ``sum(cached)`` pages cached."""
    u0_pages = -(-sections["U0"][1] // mmap.PAGESIZE)
    listed = ", ".join(f"{name} {n:,}" for name, n in cached.items() if n) or "none"
    if not getattr(eviction_works, "value", False):
        return (
            "eviction does not work here (the machine report says why), so the store was "
            f"cached before the job began and every section may show as cached: {listed}"
        )
    return (
        f"Doubling U0 reads and writes only U0's column, {u0_pages:,} pages of "
        f"{mmap.PAGESIZE:,} bytes; with readahead off (advise('random')) each fault read only "
        f"its own page, and nothing else of the store was needed. Pages cached by section: "
        f"{listed}. Just before the flush, {dirty} pages were dirty (written, not yet on disk)."
    )


def why_biggest(causes: Any, steps: list[str], ratios: dict, records: int, filesystem: str) -> str:
    """Which step of §6 gained most, from the time each step saved per record."""
    every, once, loop, vectorized = (causes[name].seconds.median for name in steps)
    flush_us = (every - once) / records * 1e6
    python_us = (loop - vectorized) / records * 1e6
    gains = ", ".join(f"{key} {ratio.median:,.3g}x" for key, ratio in ratios.items())
    return (
        f"Per record, a flush cost {flush_us:,.1f} µs here (step 1 against step 2), and each "
        f"step of the Python loop cost {python_us:,.3f} µs more than the vectorized operation "
        f"(step 3 against 4); the speed-ups: {gains}. Which step gains most depends on what a "
        f"flush costs on the storage under data/ ({filesystem}) against what an interpreter step "
        "costs: where a flush waits for storage it dwarfs the rest; where there is nothing to "
        "wait for (tmpfs), the loop's Python work can weigh more."
    )
