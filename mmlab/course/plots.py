"""Figures the course draws that are not an instrument's own plot, and what they count.

Notebook 05 compares the blog's loop with its fixes one cause at a time (``plot_causes``:
medians with their spread on a log scale, each speed-up annotated with the one thing that
changed) and shows which sections of a store a job brought into the page cache
(``cached_by_section``, ``plot_sections``). matplotlib is imported only when drawing.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["cached_by_section", "plot_causes", "plot_sections"]


def _number(x: float) -> str:
    """Three significant digits without an exponent: 0.0123, 1.21, 18.5, 3,165."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def plot_causes(result: Any, causes: Sequence[str], title: str = "", ax: Any = None) -> Any:
    """Median time per row of ``result`` (a ``bench.compare`` result) on a log scale, IQR as
    error bars, and between neighbours the speed-up (median of the per-round ratios) with its
    one cause: ``causes[i]`` is what changes from row i to row i + 1."""
    import matplotlib.pyplot as plt

    names = result.names
    if len(causes) != len(names) - 1:
        raise ValueError(f"{len(names)} rows need {len(names) - 1} causes, got {len(causes)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(3 + 2.2 * len(names), 4.5), layout="constrained")
    spreads = [result[n].seconds.scaled(1e3) for n in names]
    medians = [s.median for s in spreads]
    errors = [
        [m - s.q1 for m, s in zip(medians, spreads, strict=True)],
        [s.q3 - m for m, s in zip(medians, spreads, strict=True)],
    ]
    ax.bar(
        range(len(names)),
        medians,
        yerr=errors,
        capsize=4,
        color=["C3", "C1", "C2", "C0"][: len(names)],
    )
    ax.set_yscale("log")
    for i, median in enumerate(medians):
        ax.text(
            i + 0.06, median * 1.15, f"{_number(median)} ms", ha="left", va="bottom", fontsize=8
        )
    top = max(s.max for s in spreads)
    ax.set_ylim(min(s.min for s in spreads) / 3, top * 30)
    for i, cause in enumerate(causes):
        ratio = result.relative(names[i + 1], names[i])
        ax.annotate(
            f"{_number(ratio.median)}x faster\n({cause})",
            xy=(i + 1, medians[i + 1]),
            xytext=(i + 0.5, top * 6),
            ha="center",
            fontsize=8,
            arrowprops={"arrowstyle": "->", "color": "0.4"},
        )
    ax.set_xticks(range(len(names)), [n.replace(", ", ",\n") for n in names], fontsize=8)
    ax.set_ylabel("ms, log scale (median; error bars: IQR)")
    ax.set_title(title, fontsize=9)
    return ax


def cached_by_section(path: str | os.PathLike[str], sections: dict[str, tuple[int, int]]) -> dict:
    """Pages of each section ``{name: (offset, size)}`` of ``path`` now in the page cache."""
    from mmlab.instruments import pagecache

    resident = pagecache.residency(path)
    page = mmap.PAGESIZE
    return {
        name: int(resident[off // page : -(-(off + size) // page)].sum())
        for name, (off, size) in sections.items()
    }


def plot_sections(
    cached: dict[str, int],
    title: str = "",
    ax: Any = None,
    sections: dict[str, tuple[int, int]] | None = None,
) -> Any:
    """Bars of cached pages per section, U0 highlighted; with ``sections`` ({name: (offset,
    size)}), each section's whole size in pages as a grey outline behind its bar, so that an
    empty section shows as an empty outline, not as a missing bar."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 3), layout="constrained")
    names = list(cached)
    if sections is not None:
        page = mmap.PAGESIZE
        pages = [
            -(-(sections[n][0] + sections[n][1]) // page) - sections[n][0] // page for n in names
        ]
        ax.bar(names, pages, fill=False, edgecolor="0.6", label="pages of the section")
    colors = ["C1" if name == "U0" else "C0" for name in names]
    ax.bar(names, list(cached.values()), color=colors, label="of those, in the page cache")
    if sections is not None:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)  # beside, not over
    ax.set(ylabel="pages", title=title)
    ax.tick_params(axis="x", rotation=60)
    return ax
