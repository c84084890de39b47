"""Questions for the class, computed from its table: the spread it measured, and the facts.

A class that sees its numbers differ learns most by finding the reason itself. ``discussion``
turns a ``classroom.ClassTable`` into prompts for the instructor: for each headline, the range
the class measured (which machine at each end), how many machines the labs' model explains
(one cold fault caches one readahead window), the machine facts of those it does not, and a
question. Every number in a prompt comes from the table; a prompt whose data is missing is not
asked, and a table of SYNTHETIC examples says so first.
"""

from __future__ import annotations

from typing import Any

from mmlab.course.classroom import (
    ClassTable,
    crossover,
    read_vs_mmap_curves,
    readahead_points,
    worker_points,
)

__all__ = ["discussion"]


def discussion(table: ClassTable) -> list[str]:
    """Prompts for the class, each with this table's numbers and the machine facts to compare."""
    prompts = ["SYNTHETIC EXAMPLE: the numbers below were invented, to show the prompts' shape."]
    prompts = prompts if table.synthetic else []
    pages: dict[Any, list[str]] = {}
    for m in table.machines:
        pages.setdefault(m.fingerprint.get("page_size"), []).append(m.id)
    if len(pages) > 1:
        sizes = "; ".join(f"{p} bytes: {', '.join(ids)}" for p, ids in pages.items())
        prompts.append(f"Page sizes differ ({sizes}). Which results of 02 and 03 change with it?")
    points, _ = readahead_points(table)
    if len(points) == 1:
        (p,) = points
        prompts.append(f"One cold fault cached {p.y:,.0f} KiB on {p.label}, {p.y / p.x:.2g}x "
                       "its read_ahead_kb. What would the same touch read on a laptop with "
                       "128?")  # fmt: skip
    elif points:
        low, high = min(points, key=lambda p: p.y), max(points, key=lambda p: p.y)
        off = [f"{p.label}: {p.y / p.x:.2g}x" for p in points if not 2 / 3 <= p.y / p.x <= 3 / 2]
        prompts.append(
            f"One cold fault cached {low.y:,.0f} KiB on {low.label} and {high.y:,.0f} KiB on "
            f"{high.label}; on {len(points) - len(off)} of {len(points)} machines it was within "
            "1.5x of read_ahead_kb (the dashed line). Why does one touched page bring in so much "
            "more on some machines? "
            + (f"Off the line: {'; '.join(off)} of a window: what else differs there?" if off
               else "No machine lies off the line: which fact alone predicts the points?")
        )  # fmt: skip
    curves, _ = read_vs_mmap_curves(table)
    raced = [m for m in table.machines if m.label in curves]
    if raced:
        groups: dict[str, list[str]] = {}
        for m in raced:
            groups.setdefault(str(crossover(m)), []).append(m.id)
        order = "; ".join(f"{phrase} on {', '.join(ids)}" for phrase, ids in groups.items())
        lost = [f"{m.id} ({m.where()})" for m in raced if "read" in str(crossover(m))]
        prompts.append(
            f"Warm, in order, who won by block size: {order}. "
            + (f"read() won somewhere on {'; '.join(lost)}: what does a system call cost there "
               "against a copy, and does a VM change it?" if lost else
               "read() won at no block size on any machine: what would it take?")
        )  # fmt: skip
    workers, _ = worker_points(table)
    if workers:
        grew = _span([p.x for p in workers])
        below = sum(p.y < p.x for p in workers)
        prompts.append(
            f"A worker over a Python list gained {grew} MiB, over the mapped store at most "
            f"{max(p.y for p in workers):.1f} MiB; the store's was smaller on {below} of "
            f"{len(workers)} machines. What is copied on read, and why not the store's pages?"
        )
    for (notebook, key), rows in _predicted(table).items():
        judged = [r for r in rows if r.get("right") is not None]
        said = f"{len(rows)} predictions of {notebook}'s {key}: " + ", ".join(
            f"{r.get('value')} {r.get('unit', '')}".strip() for r in rows
        )
        prompts.append(
            f"{said}; {sum(bool(r['right']) for r in judged)} of {len(judged)} right (within 10% "
            "of their own measurement, or the right choice). What did the others' model of the "
            "machine miss?"
            if judged
            else f"{said}. Which machine fact would have told each student the answer?"
        )
    return prompts


def _span(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.1f}" if low == high else f"{low:.1f} to {high:.1f}"


def _predicted(table: ClassTable) -> dict[tuple[str, str], list[dict]]:
    found: dict[tuple[str, str], list[dict]] = {}
    for m in table.machines:
        for notebook, keyed in m.predictions.items():
            for key, row in keyed.items():
                if row.get("value") is not None:
                    found.setdefault((notebook, key), []).append(row)
    return found
