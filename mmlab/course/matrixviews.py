"""The DataLoader memory matrix shown: a live heat map, a table, and verdicts from the run.

``run_live`` runs ``loadermatrix.run_matrix`` under a ``LiveFigure`` that fills the heat map
cell by cell: each cell shows a worker's USS after its epoch (MiB, mean of the workers) and,
as its colour, what it held beyond the RecordStore's worker under the same start method,
the one holder that carries no data into its workers. ``table_lines`` prints every number
behind the map (pickle sizes, USS, private dirty, file-backed PSS, the workers' start time);
``matrix_lines`` says from this run's numbers which holders were copied where. A holder
counts as *copied* under a start method when its worker held at least half its pickle's
bytes more than the store's worker did; the list under ``fork`` counts as copied on read
when it held over half its refcounted objects more than the NumPy worker (lab 06's test).
The reveals (``memmap_gap``, ``arrow_outcome`` and their ``why_`` sentences) and
``summary`` (values and claims to record) use the same rules.
"""

from __future__ import annotations

from mmlab.course.loadermatrix import Matrix, run_matrix

__all__ = [
    "arrow_outcome",
    "copied",
    "draw",
    "matrix_lines",
    "memmap_gap",
    "run_live",
    "show",
    "summary",
    "table_lines",
    "why_arrow",
    "why_memmap_gap",
]

MiB = 2**20
_SPAWNED = ("forkserver", "spawn")
_KINDS = {
    "uss": "USS",
    "private_dirty": "private dirty",
    "pss_file": "file-backed PSS",
}


def draw(matrix: Matrix, kind: str = "uss"):
    """A ``draw(ax)`` for ``LiveFigure``: the heat map of ``matrix`` as far as it has run,
    of ``kind`` per worker (``"uss"``, ``"private_dirty"`` or ``"pss_file"``)."""
    import numpy as np

    def paint(ax) -> None:
        ax.clear()
        shown = matrix.grid(kind) / MiB
        extra = shown - shown[matrix.names.index("RecordStore")][None, :]
        top = max(1.0, float(np.nanmax(extra)) if np.isfinite(extra).any() else 1.0)
        ax.imshow(np.ma.masked_invalid(extra), cmap="Oranges", vmin=0, vmax=top, aspect="auto")
        for r, c in np.ndindex(shown.shape):
            text = "…" if np.isnan(shown[r, c]) else f"{shown[r, c]:.0f} MiB"
            text += "" if np.isnan(extra[r, c]) else f"\n{extra[r, c]:+.1f}"
            dark = np.isfinite(extra[r, c]) and extra[r, c] > 0.6 * top
            ax.text(c, r, text, ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")  # fmt: skip
        ax.grid(False)
        ax.set_xticks(range(len(matrix.methods)), matrix.methods)
        ax.set_yticks(range(len(matrix.names)), matrix.names)
        ax.set_title(
            f"{_KINDS[kind]} per worker after one epoch ({matrix.done} of {shown.size} cells);\n"
            "colour and second line: MiB over the RecordStore worker, same start method",
            fontsize=9,
        )

    return paint


def show(matrix: Matrix, kind: str = "uss") -> None:
    """Draw the finished heat map of ``kind`` (for a widget: each choice redraws it)."""
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    draw(matrix, kind)(ax)
    plt.show()


def run_live(datasets: dict, **kwargs) -> Matrix:
    """``run_matrix(datasets, **kwargs)``, redrawing the heat map after every cell."""
    from mmlab.instruments.live import LiveFigure

    holder: dict[str, Matrix] = {}

    def paint(ax) -> None:
        if "m" in holder:
            draw(holder["m"])(ax)

    with LiveFigure(paint, every=0, figsize=(7.5, 4.2)) as live:

        def on_cell(matrix: Matrix) -> None:
            holder["m"] = matrix
            live.update(force=True)

        return run_matrix(datasets, on_cell=on_cell, **kwargs)


def copied(matrix: Matrix, method: str, name: str) -> bool:
    """Whether ``name``'s worker held at least half its pickle more than the store's."""
    size = matrix.pickled[name]
    if name == "RecordStore" or not isinstance(size, int):
        return False
    return matrix.extra(method, name) >= 0.5 * size


def _list_copied_on_read(matrix: Matrix) -> float:
    """Bytes a forked list worker held beyond the forked NumPy worker."""
    return matrix.value("fork", "Python list") - matrix.value("fork", "NumPy in RAM")


def table_lines(matrix: Matrix) -> list[str]:
    """One line per holder: its pickle, then per start method USS / private dirty / file PSS
    per worker after the epoch (MiB) and how long the workers took to start."""
    lines = [
        f"records: {matrix.runs[matrix.methods[0]][matrix.names[0]].items:,}; their data as NumPy "
        f"arrays {matrix.data_bytes / MiB:.1f} MiB; the list's refcounted objects "
        f"{matrix.objects / MiB:.1f} MiB. Per worker, mean of the workers: USS / private dirty "
        "/ file-backed PSS (MiB), and the workers' start"
    ]
    for name in matrix.names:
        size = matrix.pickled[name]
        said = size if isinstance(size, str) else f"{size / MiB:.2f} MiB"
        said = f"{size:,} bytes" if isinstance(size, int) and size < 2**16 else said
        cells = []
        for method in matrix.methods:
            run = matrix.runs[method][name]
            cells.append(
                f"{method} {run.after('uss') / MiB:.1f} / {run.after('private_dirty') / MiB:.1f}"
                f" / {run.after('pss_file') / MiB:.1f}, {run.first_batch_s:.2f} s"
            )
        lines.append(f"{name:<13} pickle {said:>10}: " + "; ".join(cells))
    return lines


def matrix_lines(matrix: Matrix) -> list[str]:
    """What this run shows, each verdict from its numbers."""
    lines = []
    extra, objects = _list_copied_on_read(matrix), matrix.objects
    if objects and extra > 0.5 * objects:
        lines.append(
            f"-> fork: a list worker held {extra / MiB:.1f} MiB more than a NumPy worker, "
            f"{extra / objects:.0%} of the list's {objects / MiB:.1f} MiB of objects: copied on "
            "read (refcount writes), as in lab 06; every other holder stayed near the store"
        )
    else:
        lines.append(
            f"-> fork: a list worker held {extra / MiB:.1f} MiB more than a NumPy worker: this run "
            "cannot show copy-on-read (the epoch read too few records, or the list is small)"
        )
    for method in (m for m in matrix.methods if m in _SPAWNED):
        hit = [n for n in matrix.names if copied(matrix, method, n)]
        kept = [n for n in matrix.names if n not in hit]
        lines.append(
            f"-> {method}: copied into each worker (at least half its pickle over the store's "
            f"worker): {', '.join(hit) or 'none'}; not: {', '.join(kept)}"
        )
    starts = {m: min(r.first_batch_s for r in matrix.runs[m].values()) for m in matrix.methods}
    lines.append(
        "-> the workers' start, fastest holder: "
        + ", ".join(f"{m} {s:.2f} s" for m, s in starts.items())
        + " (a spawned or forkserver worker imports Python, torch and the dataset's modules "
        "itself; a forked one inherits them)"
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
            "; what it held beyond the pickle is mostly pyarrow itself, which only the Arrow "
            "worker imports"
            if gap > size
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
    extra, objects = _list_copied_on_read(matrix), matrix.objects
    spawned = [m for m in matrix.methods if m in _SPAWNED]
    mapped = ("numpy.memmap", "Arrow table")
    hits = {n: [m for m in spawned if copied(matrix, m, n)] for n in mapped}
    # the store stays flat if no holder that carries data beat its worker by half that data
    store_least = all(
        matrix.value(m, "RecordStore") - matrix.value(m, n) < 0.5 * size
        for m in matrix.methods
        for n, size in matrix.pickled.items()
        if n != "RecordStore" and isinstance(size, int)
    )
    claims = [
        {
            "key": "matrix_fork_list",
            "claim": "A Python list shared with forked DataLoader workers is copied on read",
            "measured": f"forked list worker {extra / MiB:+.1f} MiB over the NumPy worker; "
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
            "verdict": (
                "only for a holder that pickles its path (no holder carrying data held less "
                "than RecordStore by half its pickle, under any start method); "
                if store_least
                else "not even RecordStore here (a holder carrying data held less); "
            )
            + "; ".join(
                f"{n} held as an attribute: copied under {', '.join(h) or 'none'}"
                for n, h in hits.items()
            ),
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
