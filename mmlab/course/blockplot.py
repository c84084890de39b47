"""The figure of ``mmlab.course.blocks``: what malloc did, step by step, for several runs.

Each run (``blocks.run``) recorded, after every malloc, free and the final ``malloc_trim``,
glibc's count of mapped blocks, the lines of ``/proc/self/maps``, the size of the anonymous
mappings and RSS. ``plot(runs)`` draws the four side by side, phases on the x axis (each one
unit wide whatever the block count), sizes as percentages of the round's blocks. Runs often
give identical lines (two sizes both mapped, or neither), so each run has its own line style,
width and marker shape: a line hidden under another still shows its markers.
"""

from __future__ import annotations

import numpy as np

from mmlab.course.blocks import BlockRun, _size

__all__ = ["plot"]


def _phase_x(steps: list[str]) -> tuple[np.ndarray, list[str]]:
    """x of each step: phase k spans [k, k + 1), so runs of any block count line up; a value
    holds from its step to the next (drawn as steps)."""
    phases = list(dict.fromkeys(steps))
    x = np.zeros(len(steps))
    for k, name in enumerate(phases):
        where = [i for i, s in enumerate(steps) if s == name]
        x[where] = k + np.arange(len(where)) / len(where)
    return x, phases


def _marks(steps: list[str], n: int, runs: int) -> list[int]:
    """One marker per phase for run ``n`` of ``runs``, each run at its own place in the phase,
    so that runs drawing the same line still show one marker each."""
    phases = list(dict.fromkeys(steps))
    marks = []
    for name in phases:
        where = [i for i, s in enumerate(steps) if s == name]
        marks.append(where[len(where) * (n + 1) // (runs + 1)])
    return marks


def plot(runs: list[BlockRun], axes=None):
    """glibc's mapped blocks, /proc/self/maps lines, anonymous mapped size and RSS after each
    step, one line per run.

    The x axis is the phases (malloc, free, malloc again, free again, trim), each one unit
    wide whatever the block count; sizes are percentages of the round's blocks' total size.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if axes is None:
        _, axes = plt.subplots(1, 4, figsize=(15, 3.4), layout="constrained")
    # Runs often coincide (two sizes both mapped, or neither): thick lines under thin ones.
    styles = [("-", 4.5, "o", 9), ("--", 2.5, "s", 7), (":", 1.8, "^", 6), ("-.", 1.2, "D", 4)]
    for n, r in enumerate(runs):
        x, phases = _phase_x(r.steps)
        x = np.append(x, len(phases))  # the last value holds to the right edge
        style, width, marker, size = styles[n % len(styles)]
        kw = {"drawstyle": "steps-post", "linestyle": style, "linewidth": width, "zorder": 2 + n}
        kw |= {"marker": marker, "markersize": size, "markerfacecolor": "none"}
        kw["markevery"] = _marks(r.steps, n, len(runs))
        kw["label"] = f"{r.count} x {_size(r.block_bytes)}"
        if r.mapped_blocks is not None:
            axes[0].plot(
                x, np.append(r.mapped_blocks, r.mapped_blocks[-1]) - r.mapped_blocks[0], **kw
            )
        axes[1].plot(x, np.append(r.maps, r.maps[-1]) - r.maps[0], **kw)
        for ax, y in ((axes[2], r.anon), (axes[3], r.rss)):
            if y is not None:
                ax.plot(x, 100 * (np.append(y, y[-1]) - y[0]) / (r.count * r.block_bytes), **kw)
    counter = next((r.counter for r in runs if r.counter), None)
    titles = (
        f"blocks glibc mapped ({counter})",
        "/proc/self/maps lines added",
        "anonymous mappings added (size)",
        "RSS added",
    )
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xticks(np.arange(len(phases)) + 0.5, phases, fontsize=8, rotation=30, ha="right")
        ax.set_xlim(0, len(phases))
        for k in range(1, len(phases)):
            ax.axvline(k, color="#ccc", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.grid(False, axis="x")  # the phase boundaries are the vertical lines
    for ax in axes[:2]:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("count")
    axes[1].set_ylabel("lines")
    axes[2].set_ylabel("% of the round's blocks")
    axes[3].set_ylabel("% of the round's blocks")
    legend = {"fontsize": 8, "frameon": False, "ncol": len(runs)}
    if axes[0].figure.get_layout_engine() is not None:  # below the panels, clear of the lines
        handles, labels = axes[-1].get_legend_handles_labels()  # every run, once
        axes[0].figure.legend(handles, labels, loc="outside lower center", **legend)
    else:
        axes[0].legend(**legend)
    if counter is None:
        axes[0].text(
            0.5,
            0.5,
            "glibc's count unavailable\n(not glibc?)",
            ha="center",
            transform=axes[0].transAxes,
        )
    return axes
