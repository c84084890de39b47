"""The DataLoader memory matrix shown: a live heat map and verdicts from the run.

``run_live`` runs ``loadermatrix.run_matrix`` under a ``LiveFigure`` that fills the heat map
cell by cell. Each cell's text is a worker's USS after its epoch (MiB, mean of the workers)
and what it held beyond the RecordStore's worker under the same start method (the one
holder that carries no data into its workers: the column's baseline, the interpreter, torch
and the loader that every worker in that column carries). Its colour is that difference as a
fraction of the holder's data (``Matrix.size``: the pickle, or for the list its refcounted
objects): 0 is nothing copied, 1 a full copy per worker, clipped at 2.

A holder counts as *copied* under a start method when its worker held more than the store's
worker by at least ``threshold``: half its data's size, and at least three times the spread
between the store's two workers and ``FLOOR``; a holder whose whole data is below that is
*too small to tell*. The verdicts read the workers after the epoch: their snapshots at start
(taken while the loader's threads still start) spread more between two workers of one cell.
The list under ``fork`` counts as copied on read when it held over half its refcounted
objects more than the store's worker (lab 06's test). ``matrix_lines`` says which happened
here; the reveals (``memmap_gap``, ``arrow_outcome`` and their ``why_`` sentences) and
``summary`` (values and claims to record) use the same rules.
"""

from __future__ import annotations

from mmlab.course.loadermatrix import Matrix, run_matrix

__all__ = [
    "FLOOR",
    "arrow_outcome",
    "copied",
    "draw",
    "matrix_lines",
    "memmap_gap",
    "run_live",
    "show",
    "summary",
    "threshold",
    "verdict",
    "why_arrow",
    "why_memmap_gap",
]

MiB = 2**20
FLOOR = 1 * MiB  # below a MiB per worker, allocator slack and batches hide any copy
_SPAWNED = ("forkserver", "spawn")
_KINDS = {"uss": "USS", "private_dirty": "private dirty", "pss_file": "file-backed PSS"}
_TOP = 2.0  # the colour scale's end: twice the data per worker
# Only the Arrow worker imports pyarrow: at small sizes that import outweighs the table
_ROWS = {"Arrow table": "Arrow table\n(+ pyarrow import)"}


def _signed(mib: float) -> str:
    """``+1.2``, ``-0.4``; ``0.0`` for what rounds to zero (never ``-0.0``)."""
    text = f"{mib:+.1f}"
    return "0.0" if text in ("+0.0", "-0.0") else text


def draw(matrix: Matrix, kind: str = "uss"):
    """A ``draw(ax)`` for ``LiveFigure``: the heat map of ``matrix`` as far as it has run,
    of ``kind`` per worker (``"uss"``, ``"private_dirty"`` or ``"pss_file"``), with a
    colour bar (drawn once per figure) of the fraction of the data copied into each worker."""
    import matplotlib as mpl
    import numpy as np

    def paint(ax) -> None:
        ax.clear()
        shown = matrix.grid(kind) / MiB
        extra = shown - shown[matrix.names.index("RecordStore")][None, :]
        sizes = np.array([[matrix.size(n) / MiB or np.nan] for n in matrix.names])
        fraction = np.clip(extra / sizes, 0, _TOP)
        norm, cmap = mpl.colors.Normalize(0, _TOP), mpl.colormaps["Oranges"]
        ax.imshow(np.ma.masked_invalid(fraction), cmap=cmap, norm=norm, aspect="auto")
        for r, c in np.ndindex(shown.shape):
            text = "…" if np.isnan(shown[r, c]) else f"{shown[r, c]:.0f} MiB"
            if matrix.names[r] == "RecordStore" and np.isfinite(shown[r, c]):
                text += "\nbaseline"
            elif np.isfinite(extra[r, c]):
                text += f"\n{_signed(extra[r, c])}"
            dark = np.isfinite(fraction[r, c]) and fraction[r, c] > 0.6 * _TOP
            ax.text(c, r, text, ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")  # fmt: skip
        ax.grid(False)
        ax.set_xticks(range(len(matrix.methods)), matrix.methods)
        ax.set_yticks(range(len(matrix.names)), [_ROWS.get(n, n) for n in matrix.names])
        ax.set_title(
            f"{_KINDS[kind]} per worker after one epoch ({matrix.done} of {shown.size} cells);\n"
            "second line: MiB over the RecordStore worker (baseline), same start method",
            fontsize=9,
        )
        if not getattr(ax.figure, "_matrix_colorbar", False):
            bar = ax.figure.colorbar(mpl.cm.ScalarMappable(norm, cmap), ax=ax, shrink=0.9)
            ticks = np.linspace(0, _TOP, 5)
            bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks[:-1]] + [f"≥{_TOP:g} (clipped)"])
            bar.set_label(
                "fraction of the data copied into each worker\n"
                "(MiB over baseline / pickle, list: / its objects; 1 = a full copy)",
                fontsize=8,
            )
            ax.figure._matrix_colorbar = True

    return paint


def show(matrix: Matrix, kind: str = "uss", widget: bool | None = None) -> None:
    """Draw the finished heat map of ``kind`` (for a widget: each choice redraws it).
    ``widget=True`` inside ``interact``: the figure goes into an image widget (``LiveFigure``),
    as a figure shown into an ``Output`` widget can leave a headless client waiting."""
    from mmlab.instruments.live import LiveFigure

    with LiveFigure(draw(matrix, kind), every=0, figsize=(8.5, 4.2), widget=widget):
        pass  # the one frame is drawn on exit


def run_live(datasets: dict, **kwargs) -> Matrix:
    """``run_matrix(datasets, **kwargs)``, redrawing the heat map after every cell."""
    from mmlab.instruments.live import LiveFigure

    holder: dict[str, Matrix] = {}

    def paint(ax) -> None:
        if "m" in holder:
            draw(holder["m"])(ax)

    with LiveFigure(paint, every=0, figsize=(8.5, 4.2)) as live:

        def on_cell(matrix: Matrix) -> None:
            holder["m"] = matrix
            live.update(force=True)

        return run_matrix(datasets, on_cell=on_cell, **kwargs)


def threshold(matrix: Matrix, method: str, name: str) -> float:
    """Bytes over the store's worker that count as a copy of ``name`` under ``method``."""
    return max(0.5 * matrix.size(name), 3 * matrix.spread(method, at="end"), FLOOR)


def verdict(matrix: Matrix, method: str, name: str) -> str:
    """ "copied", "not copied", or "too small to tell" (its whole data under ``threshold``)."""
    limit = threshold(matrix, method, name)
    if matrix.size(name) < limit:
        return "too small to tell"
    return "copied" if matrix.extra(method, name) >= limit else "not copied"


def copied(matrix: Matrix, method: str, name: str) -> bool:
    """Whether ``name``'s worker held a copy of its data over the store's (``verdict``)."""
    return name != "RecordStore" and verdict(matrix, method, name) == "copied"


def _mib(size: float) -> str:
    return f"{size / MiB:.1f} MiB"


def _fork_line(matrix: Matrix) -> str:
    extra, objects = matrix.extra("fork", "Python list"), matrix.objects
    numpy = matrix.extra("fork", "NumPy in RAM")
    others = [n for n in matrix.names if n not in ("Python list", "RecordStore")]
    far = [n for n in others if abs(matrix.extra("fork", n)) >= threshold(matrix, "fork", n)]
    near = max((abs(matrix.extra("fork", n)) for n in others), default=0.0)
    rest = (
        f"every other holder stayed within {_mib(near)} of the store"
        if not far
        else f"also over the store by half its data or more: {', '.join(far)}"
    )
    head = (
        f"-> fork: a list worker held {_mib(extra)} more than the RecordStore worker (the NumPy "
        f"worker: {numpy / MiB:+.1f} MiB)"
    )
    if objects and extra > 0.5 * objects:
        return (
            f"{head}, {extra / objects:.0%} of the list's {_mib(objects)} of objects: copied on "
            f"read (refcount writes), as in lab 06; {rest}"
        )
    return (
        f"{head}: this run cannot show copy-on-read (the epoch read too few records, or the "
        f"list is small); {rest}"
    )


def _list_line(matrix: Matrix, method: str = "spawn") -> str:
    at_start = matrix.extra(method, "Python list", at="start")
    at_end = matrix.extra(method, "Python list")
    pickle = matrix.pickled["Python list"]
    pickle = pickle if isinstance(pickle, int) else 0
    rest = at_start - matrix.objects - matrix.array_data
    return (
        f"-> {method}: a list worker held {_mib(at_start)} over the store's already at its "
        f"start (unpickled, before reading a record), {_mib(at_end)} after the epoch"
        + (": the unpickling's, not the epoch's" if at_end - at_start < FLOOR else "")
        + f". From a {_mib(pickle)} pickle it rebuilt "
        f"{_mib(matrix.objects)} of objects and {_mib(matrix.array_data)} of their arrays' "
        + (
            f"data; the other {_mib(rest)} is not live objects: memory the allocators kept "
            "after unpickling (not itemized here)"
            if rest >= FLOOR
            else "data, and little more"
        )
    )


def _freeze_line(matrix: Matrix) -> str:
    frozen = matrix.frozen("forkserver")
    head = (
        f"-> fork server frozen: {frozen:,} objects in each forkserver worker at its start "
        "(gc.get_freeze_count(); the server's last preload calls gc.freeze())"
    )
    if frozen:
        return head + (
            ": the collector never writes the server's inherited objects there, so a forkserver "
            "cell holds over the store what its pickle carried (reference-count writes can "
            "still copy pages of inherited objects a worker touches)"
        )
    return head + (
        ": not frozen here, so a worker that collects could copy pages of the server's heap "
        "(not measured here) and its cells may hold more than their pickle"
    )


def _started(matrix: Matrix, method: str) -> str:
    name, run = min(matrix.runs[method].items(), key=lambda item: item[1].first_batch_s)
    return f"{method} {run.first_batch_s:.2f} s ({name})"


def matrix_lines(matrix: Matrix) -> list[str]:
    """What this run shows, each verdict from its numbers."""
    base = ", ".join(f"{m} {_mib(matrix.value(m, 'RecordStore'))}" for m in matrix.methods)
    clean = max(matrix.value(m, n, "private_clean") for m in matrix.methods for n in matrix.names)
    lines = [
        f"-> baseline, a RecordStore worker's USS: {base}. The interpreter, torch, the loader "
        "and its batches: every worker of that column carries the same, so each cell is "
        "judged over its column's baseline",
        (
            f"-> private clean was at most {_mib(clean)} per worker (no worker maps a file "
            "only it maps), so USS is private dirty here: the pages only that worker maps and "
            "that were written, anonymous memory here, as no worker writes a mapped file"
            if clean < FLOOR
            else f"-> private clean reached {_mib(clean)} per worker: file pages only that "
            "worker maps, counted in USS besides private dirty"
        ),
    ]
    if "fork" in matrix.runs:
        lines.append(_fork_line(matrix))
    if matrix.server:
        lines.append(f"-> {matrix.server}")
    if "forkserver" in matrix.runs:
        lines.append(_freeze_line(matrix))
    for method in (m for m in matrix.methods if m in _SPAWNED):
        said = {n: verdict(matrix, method, n) for n in matrix.names if n != "RecordStore"}
        hit = [n for n, v in said.items() if v == "copied"]
        kept = [n for n, v in said.items() if v == "not copied"] + ["RecordStore"]
        small = [n for n, v in said.items() if v == "too small to tell"]
        why = "its pickle, unpickled there"
        if method == "forkserver":
            why += (
                "; the server's heap is frozen: see 'fork server frozen' above"
                if matrix.frozen(method)
                else "; not frozen here: see 'fork server frozen' above"
            )
        lines.append(
            f"-> {method}: copied into each worker (over the store's worker by half its data or "
            f"more; {why}): {', '.join(hit) or 'none'}; not: {', '.join(kept)}"
            + (f"; too small to tell at this size: {', '.join(small)}" if small else "")
        )
    if "spawn" in matrix.runs and matrix.objects:
        lines.append(_list_line(matrix))
    lines.append(
        "-> the workers' start (until the first batch), fastest holder per method: "
        + ", ".join(_started(matrix, m) for m in matrix.methods)
        + ". A spawned worker imports Python, torch and the dataset's modules itself; a "
        "forkserver worker is forked from a server that preloaded torch (the first forkserver "
        "cell also paid the server's start: the RecordStore runs first in each column, so its "
        "start time is not the store's cost); a forked one inherits everything from this process"
    )
    return lines


def memmap_gap(matrix: Matrix, method: str = "spawn") -> float:
    """MiB more USS per ``numpy.memmap`` worker than per store worker under ``method``."""
    return round(matrix.extra(method, "numpy.memmap") / MiB, 1)


def why_memmap_gap(matrix: Matrix, file_bytes: int, method: str = "spawn") -> str:
    """Why a spawned ``numpy.memmap`` worker held what it did (``file_bytes``: the .npy files)."""
    gap, size = matrix.extra(method, "numpy.memmap"), matrix.pickled["numpy.memmap"]
    head = (
        f"under {method}, a numpy.memmap worker held {gap / MiB:.1f} MiB more USS than a "
        f"RecordStore worker; the holder pickles to {size / MiB:.1f} MiB, its .npy files take "
        f"{file_bytes / MiB:.1f} MiB. "
    )
    if copied(matrix, method, "numpy.memmap"):
        return head + (
            "numpy.memmap inherits ndarray's pickle, which writes the data, not the file name: "
            "each spawned worker unpickles a private copy of the whole file in anonymous memory, "
            "and the map in this process is never used there."
        )
    if verdict(matrix, method, "numpy.memmap") == "too small to tell":
        return head + "At this size a whole copy is within the noise: too small to tell."
    return head + "Here the worker held under half of that pickle more: noise hid the copy."


def arrow_outcome(matrix: Matrix, method: str = "spawn") -> str:
    """ "copied" if the Arrow holder was copied into each worker under ``method``, else
    "shared"."""
    return "copied" if copied(matrix, method, "Arrow table") else "shared"


def why_arrow(matrix: Matrix, file_bytes: int, method: str = "spawn") -> str:
    """Why the Arrow table holder was copied or shared under ``method``."""
    gap, size = matrix.extra(method, "Arrow table"), matrix.pickled["Arrow table"]
    fork = matrix.extra("fork", "Arrow table") if "fork" in matrix.runs else float("nan")
    head = (
        f"under {method}, an Arrow table worker held {gap / MiB:.1f} MiB more USS than a "
        f"RecordStore worker (under fork {fork / MiB:+.1f} MiB); the holder pickles to "
        f"{size / MiB:.1f} MiB, the IPC file takes {file_bytes / MiB:.1f} MiB. "
    )
    if arrow_outcome(matrix, method) == "copied":
        beyond = (
            "; it held over twice the pickle: at this size pyarrow's own import (only the Arrow "
            "worker imports it) weighs more than the table: compare again with more records"
            if gap - size > size
            else ""
        )
        return head + (
            "pyarrow pickles a Table by serializing its buffers, mapped or not, so each worker "
            f"rebuilds the table in its own memory{beyond}. Under fork the table's buffers stay "
            "the mapped file's page-cache pages."
        )
    return head + "The worker held under half the pickle's bytes more: the copy did not show."


def summary(matrix: Matrix) -> tuple[dict, list[dict]]:
    """Values to ``results.record`` and claims (dicts of ``key``, ``claim``, ``measured``,
    ``verdict``) for ``results.claim``."""
    values = {
        f"matrix_{m}_{n.split()[0].lower().replace('.', '_')}_uss": matrix.value(m, n)
        for m in matrix.methods
        for n in matrix.names
    }
    values |= {"matrix_data_bytes": matrix.data_bytes, "matrix_list_objects": matrix.objects}
    values |= {
        f"matrix_pickle_{n.split()[0].lower().replace('.', '_')}": s
        for n, s in matrix.pickled.items()
    }
    extra, objects = matrix.extra("fork", "Python list"), matrix.objects
    spawned = [m for m in matrix.methods if m in _SPAWNED]
    mapped = ("numpy.memmap", "Arrow table")
    hits = {n: [m for m in spawned if copied(matrix, m, n)] for n in mapped}
    # Under spawn and forkserver every holder but the store carries its data: the store is
    # the least unless one of them held less than its worker by a whole threshold.
    judged = [
        (m, n)
        for m in spawned
        for n in matrix.names
        if n != "RecordStore" and verdict(matrix, m, n) != "too small to tell"
    ]
    below = [f"{n} under {m}" for m, n in judged if matrix.extra(m, n) <= -threshold(matrix, m, n)]
    small = sorted(
        {n for m in spawned for n in matrix.names if n != "RecordStore"} - {n for _, n in judged}
    )
    if not judged:
        flat = "too small to tell at this size; "
    elif below:
        flat = f"not shown: a holder carrying data held less than the store ({', '.join(below)}); "
    else:
        flat = "only for a holder that pickles its path (RecordStore); "
    flat += "; ".join(
        f"{n} held as an attribute: copied under {', '.join(h) or 'none'}" for n, h in hits.items()
    )
    if small:
        flat += f"; too small to tell at this size: {', '.join(small)}"
    claims = [
        {
            "key": "matrix_fork_list",
            "claim": "A Python list shared with forked DataLoader workers is copied on read",
            "measured": f"forked list worker {extra / MiB:+.1f} MiB over the RecordStore worker; "
            f"list objects {objects / MiB:.1f} MiB",
            "verdict": "true" if objects and extra > 0.5 * objects else "not shown by this run",
        },
        {
            "key": "matrix_mapped_flat",
            "claim": "Memory-mapped holders stay flat under every start method",
            "measured": "; ".join(
                f"{n} over the store: "
                + ", ".join(f"{m} {matrix.extra(m, n) / MiB:+.1f} MiB" for m in matrix.methods)
                for n in mapped
            ),
            "verdict": flat,
        },
        {
            "key": "matrix_memmap_spawn",
            "claim": "numpy.memmap under spawn copies the whole data into each worker",
            "measured": f"{memmap_gap(matrix)} MiB per worker over the store; pickle "
            f"{matrix.pickled['numpy.memmap'] / MiB:.1f} MiB",
            "verdict": "true" if copied(matrix, "spawn", "numpy.memmap") else "not shown",
        },
    ]
    return values, claims
