"""Figures that redraw while a loop runs in JupyterLab and leave one static PNG behind.

The pattern: ``display(fig, display_id=True)`` shows the figure once and returns a handle;
each ``handle.update(fig)`` replaces that output in place; closing the figure at the end
stops the inline backend from drawing it a second time. The saved notebook then holds the
final frame as one PNG, also when it was executed headless (nbclient applies the updates).

Inside an ``ipywidgets.Output`` (what ``interact`` and ``interact_manual`` draw into),
JupyterLab ignores updates by display id, so only the first frame would ever show. There the
figure goes into an ``ipywidgets.Image`` instead, whose PNG bytes each frame replaces: say
so with ``widget=True`` (a guess from ipywidgets' private registry is the fallback).
Outside a notebook the figure is simply drawn once at the end.

A redraw costs the process that draws: matplotlib allocates memory and so takes page faults
of its own. Code that measures page faults calls ``update()`` *between* its measured
intervals, never inside one (``mmlab.course.lazy.Watch`` does so).
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable

__all__ = ["LiveFigure", "draw_marks", "in_output_widget"]


def in_output_widget() -> bool:
    """Whether displays now go into an ``ipywidgets.Output`` (inside ``with out:``).

    A best guess: it looks through ipywidgets' registry of live widgets, which is private,
    so where that changes it answers False. Pass ``widget=True`` to ``LiveFigure`` to be sure.
    """
    if "ipywidgets" not in sys.modules:  # nothing could have captured the output
        return False
    try:
        from ipywidgets import Output
        from ipywidgets.widgets.widget import _instances

        return any(isinstance(w, Output) and w.msg_id for w in list(_instances.values()))
    except (ImportError, AttributeError):
        return False


class LiveFigure:
    """A figure redrawn by ``draw(ax)`` at most every ``every`` seconds; a context manager.

    ``with LiveFigure(draw) as live:`` then call ``live.update()`` in your loop; the final
    frame is drawn on exit. ``ncols``/``nrows`` give ``draw`` an array of axes instead.
    ``widget``: True draws into an ``ipywidgets.Image`` (what a function run by ``interact``
    needs), False into a display, None (the default) guesses with ``in_output_widget``.
    The layout is matplotlib's constrained layout, which also makes room for a title.
    """

    def __init__(
        self,
        draw: Callable,
        every: float = 0.25,
        *,
        nrows: int = 1,
        ncols: int = 1,
        figsize: tuple[float, float] | None = None,
        title: str = "",
        widget: bool | None = None,
    ) -> None:
        import matplotlib.pyplot as plt

        self.draw = draw
        self.every = every
        self.figure, self.axes = plt.subplots(
            nrows,
            ncols,
            figsize=figsize or (4.5 * ncols + 2, 3.2 * nrows),
            squeeze=True,
            layout="constrained",
        )
        if title:
            self.figure.suptitle(title)
        self._handle = None
        self._image = None  # the ipywidgets.Image, inside an Output widget
        self.widget = widget
        self._last = -float("inf")
        self.frames = 0
        self.draw_seconds = 0.0  # time spent drawing, so callers can report it
        self.closed = False

    def update(self, force: bool = False) -> bool:
        """Redraw if ``every`` seconds have passed (or ``force``); returns whether it did."""
        if self.closed:
            raise RuntimeError("this LiveFigure is closed")
        now = time.perf_counter()
        if not force and now - self._last < self.every:
            return False
        self.draw(self.axes)
        self.frames += 1
        self._show()
        self._last = time.perf_counter()  # the next frame waits ``every`` after this one
        self.draw_seconds += self._last - now
        return True

    def _show(self) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None:
            return
        widget = in_output_widget() if self.widget is None else self.widget
        if self._image is None and self._handle is None and widget:
            from ipywidgets import Image

            self._image = Image(format="png")
            display(self._image)
        if self._image is not None:
            buffer = io.BytesIO()
            self.figure.savefig(buffer, format="png")
            self._image.value = buffer.getvalue()
        elif self._handle is None:
            self._handle = display(self.figure, display_id=True)
        else:
            self._handle.update(self.figure)

    def close(self) -> None:
        """Draw the final frame and close the figure, leaving that frame as a static image."""
        if self.closed:
            return
        import matplotlib.pyplot as plt

        self.update(force=True)
        self.closed = True
        plt.close(self.figure)

    def __enter__(self) -> LiveFigure:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def draw_marks(ax, marks: list[tuple[float, str]]) -> None:
    """A dotted line and a label at each ``(time, label)`` mark a sampler recorded."""
    for at, label in marks:
        ax.axvline(at, color="0.6", linestyle=":", linewidth=1)
        ax.annotate(
            label,
            (at, 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
            color="0.35",
        )
