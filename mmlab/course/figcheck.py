"""Does anything in a figure cover something else? Checked in pixels, after drawing.

A legend drawn over a bar, a label drawn over another label, a title cut off by the edge of
the figure: each is a matter of where matplotlib put the artists once the figure is laid out,
so ``overlaps(fig)`` draws the figure with the Agg renderer (running its layout engine, as
showing or saving it would) and compares the window extents (pixel boxes,
``get_window_extent``) of what was drawn:

- every legend (of an axes, or of the figure) against the data of the axes it can cover (its
  own axes, or every axes for a figure legend): bars and other patches, the pixel positions
  of the data points of lines, and every text of the figure (titles, axis and tick labels,
  ``ax.text`` and ``annotate`` labels). A legend placed outside an axes counts only where it
  really meets something;
- every pair of labels placed with ``ax.text`` or ``annotate`` (not ticks or titles);
- every text and legend whose box is not inside the figure (cut off when the figure is shown
  without ``bbox_inches="tight"``).

Each problem is one human-readable line; ``[]`` means the figure is clean.
``check_open_figures()`` runs it over every open pyplot figure, for a test harness.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.patches import Rectangle
from matplotlib.text import Annotation, Text
from matplotlib.transforms import Bbox

__all__ = ["check_open_figures", "overlaps"]

_PAD = 1.0  # pixels: boxes that only touch (anti-aliased edges, font padding) do not count


def _meet(a: Bbox, b: Bbox) -> bool:
    return a.padded(-_PAD).overlaps(b.padded(-_PAD))


def _inside(box: Bbox, frame: Bbox) -> bool:
    return bool(np.all(box.min >= frame.min - _PAD) and np.all(box.max <= frame.max + _PAD))


def _name(artist: Artist) -> str:
    if isinstance(artist, Legend):
        return f"legend {[t.get_text() for t in artist.get_texts()]}"
    if isinstance(artist, Text):
        return f"text {artist.get_text()!r}"
    label = artist.get_label()
    return type(artist).__name__ + ("" if label.startswith("_") else f" {label!r}")


def _where(ax: Axes | None) -> str:
    if ax is None:
        return "the figure"
    return f"axes {ax.get_title() or ax.get_label() or '(untitled)'!r}"


def _text_box(text: Text, renderer: Any) -> Bbox | None:
    """The box of the text alone (not an annotation's arrow); None if it is not drawn."""
    if not text.get_visible() or not text.get_text().strip():
        return None
    if isinstance(text, Annotation) and not text._check_xy(renderer):
        return None  # an annotation whose point is outside the axes is not drawn
    return Text.get_window_extent(text, renderer)


def _ticklabels(ax: Axes) -> list[Text]:
    """The tick labels that are drawn: those of ticks inside the view limits."""
    labels = []
    for axis in (ax.xaxis, ax.yaxis):
        low, high = sorted(axis.get_view_interval())
        slack = 1e-9 * (high - low)
        for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
            if low - slack <= tick.get_loc() <= high + slack:
                labels += [t for t in (tick.label1, tick.label2) if t.get_visible()]
    return labels


def _texts(fig: Figure) -> list[tuple[Text, Axes | None]]:
    found: list[tuple[Text, Axes | None]] = [(t, None) for t in fig.texts]
    for ax in fig.axes:
        own = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        found += [(t, ax) for t in [*own, *ax.texts, *_ticklabels(ax)]]
    return found


def _patches(ax: Axes, renderer: Any) -> list[tuple[Artist, Bbox]]:
    """Boxes of the patches (bars, spans) drawn in ``ax``, clipped to the axes."""
    found = []
    for patch in ax.patches:
        if not patch.get_visible():
            continue
        if isinstance(patch, Rectangle) and not (patch.get_width() and patch.get_height()):
            continue
        points = np.nan_to_num(patch.get_window_extent(renderer).get_points(), nan=-1e9)
        box = Bbox(points)
        if patch.get_clip_on():
            box = Bbox.intersection(box, ax.bbox)
        if box is not None and box.width > 0 and box.height > 0:
            found.append((patch, box))
    return found


def _points(ax: Axes) -> list[tuple[Artist, np.ndarray]]:
    """Pixel positions of the data points of the lines drawn in ``ax`` (inside the axes)."""
    found = []
    for line in ax.lines:
        xy = line.get_transform().transform(line.get_xydata()) if line.get_visible() else []
        xy = np.asarray(xy, float).reshape(-1, 2)
        xy = xy[np.isfinite(xy).all(axis=1)]
        if line.get_clip_on():
            xy = xy[((xy >= ax.bbox.min) & (xy <= ax.bbox.max)).all(axis=1)]
        found.append((line, xy))
    return found


def overlaps(fig: Figure) -> list[str]:
    """Draw ``fig`` (Agg) and describe each legend covering data or text, each pair of
    overlapping data labels, and each text or legend cut off by the figure's edge."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    problems: list[str] = []
    texts = [(t, ax, b) for t, ax in _texts(fig) if (b := _text_box(t, renderer)) is not None]
    legends = [(leg, None) for leg in fig.legends]
    legends += [(ax.get_legend(), ax) for ax in fig.axes if ax.get_legend() is not None]
    for legend, owner in legends:
        if not legend.get_visible():
            continue
        box = legend.get_window_extent(renderer)
        said = f"{_name(legend)} of {_where(owner)}"
        for ax in [owner] if owner is not None else fig.axes:
            for k, (patch, patch_box) in enumerate(_patches(ax, renderer), 1):
                if _meet(box, patch_box):
                    problems.append(f"{said} covers patch {k} ({_name(patch)}) in {_where(ax)}")
            for line, xy in _points(ax):
                inner = box.padded(-_PAD)
                n = int(((xy > inner.min) & (xy < inner.max)).all(axis=1).sum())
                if n:
                    problems.append(
                        f"{said} covers {n} data point(s) of {_name(line)} in {_where(ax)}"
                    )
        for text, ax, text_box in texts:
            if _meet(box, text_box):
                problems.append(f"{said} covers {_name(text)} of {_where(ax)}")
        if not _inside(box, fig.bbox):
            problems.append(f"{said} is cut off by the figure's edge")
    placed = [(t, ax, b) for t, ax, b in texts if ax is not None and t in ax.texts]
    for (a, ax, a_box), (b, _, b_box) in combinations(placed, 2):
        if _meet(a_box, b_box):
            problems.append(f"{_name(a)} and {_name(b)} overlap in {_where(ax)}")
    for text, ax, text_box in texts:
        if not _inside(text_box, fig.bbox):
            problems.append(f"{_name(text)} of {_where(ax)} is cut off by the figure's edge")
    return problems


def check_open_figures() -> list[str]:
    """``overlaps`` of every open pyplot figure, each line prefixed with its number."""
    import matplotlib.pyplot as plt

    return [f"figure {n}: {p}" for n in plt.get_fignums() for p in overlaps(plt.figure(n))]
