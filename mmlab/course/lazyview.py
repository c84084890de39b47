"""The lazy-loading lab's figures: strides, hints, one touch, and a live view that stays honest.

``plot_strides`` draws, against the stride of a touch pattern, the share of the file read
from storage and the share mapped, with the machine's sizes (fault-around, the readahead
window) as vertical lines named in the legend. ``plot_hints`` shows a comparison of
``madvise`` hints: time (median and interquartile range of interleaved rounds) beside the
bytes read. ``plot_touch`` shows the
page cache around one touched page.

``Watch`` is the live view of a touch loop. Drawing a figure allocates memory, which costs
page faults in the very process being measured, and drawing a map of every page of a
1 GiB file takes longer than the work. So ``Watch`` reads only cheap counters around each
measured step (``getrusage``, ``/proc/self/io``, ``statm``), sums those intervals alone, and
redraws between steps, showing the page cache as the share cached per stretch of the file.
``watch_file`` is notebook 03's touch loop under such a view: evict, map with a hint, touch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from mmlab.course.lazy import HINTS, PAGE, Sizes, StrideRow, Touch, read_counted, read_text
from mmlab.instruments import pagecache
from mmlab.instruments.facts import format_size
from mmlab.instruments.proc import Counters, counters

__all__ = ["Watch", "plot_hints", "plot_page_paths", "plot_strides", "plot_touch", "watch_file"]


def _size_lines(sizes: Sizes) -> list[tuple[int, str, str]]:
    lines = [(sizes.fault_around, "fault-around", "C2")]
    if sizes.window:
        lines.append((sizes.window, "readahead window", "C1"))
    return lines


def plot_strides(rows: Sequence[StrideRow], sizes: Sizes, ax=None, title: str = ""):
    """Shares of the file touched, read from storage and mapped, against the stride."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.8), layout="constrained")
    strides = [r.stride for r in rows]
    names = {"read": "read from storage", "mapped": "mapped (in the page table)"}
    for what, style in (("read", "o-C1"), ("mapped", "s-C0"), ("touched", "^:k")):
        shares = [100 * r.fraction(what) for r in rows]
        ax.plot(strides, shares, style, label=names.get(what, what))
    for pages, label, color in _size_lines(sizes):  # named in the legend, off the data
        ax.axvline(pages, color=color, linestyle="--", linewidth=1, alpha=0.7,
                   label=f"{label}: {format_size(pages * PAGE)}")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xticks(strides, [f"{s:,}\n{format_size(s * PAGE)}" for s in strides], fontsize=8)
    ax.minorticks_off()
    ax.set(xlabel="stride: every n-th page touched", ylabel="% of the file", ylim=(-3, 105))
    ax.set_title(title or "cold file, every n-th page touched once", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return ax


def plot_hints(result, none: str = "none"):
    """Time (median, IQR) and bytes read from storage of each hint, side by side."""
    import matplotlib.pyplot as plt

    rows = [result[name] for name in result.names]
    fig, (t_ax, io_ax) = plt.subplots(1, 2, figsize=(10, 3), sharey=True, layout="constrained")
    names = [r.name for r in rows]
    medians = np.array([r.seconds.median for r in rows]) * 1e3
    low = medians - np.array([r.seconds.q1 for r in rows]) * 1e3
    high = np.array([r.seconds.q3 for r in rows]) * 1e3 - medians
    t_ax.barh(names, medians, xerr=[low, high], capsize=3, color="C0")
    t_ax.invert_yaxis()
    t_ax.set(xlabel="ms (median, bars: IQR)", title=result.title or "time")
    io_ax.barh(names, [(r.storage_bytes or 0) / 2**20 for r in rows], color="C1")
    io_ax.set(xlabel="MiB", title="read from storage (median)")
    return fig


def plot_touch(touch: Touch, sizes: Sizes, ax=None):
    """The page cache around one touched page once its reads finished, as a strip."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 1.8), layout="constrained")
    span = max(2 * (sizes.readahead or 0), 512)
    lo, hi = max(0, touch.page - span), min(len(touch.resident), touch.page + span)
    pages = np.arange(lo, hi)
    ax.fill_between(pages, touch.resident[lo:hi], step="post", color="C0", label="cached")
    ax.axvline(touch.page, color="C3", linewidth=2, label=f"touched page {touch.page:,}")
    first, end = touch.window()
    ax.set(xlim=(lo, hi), ylim=(0, 1.05), yticks=[], xlabel="page of the file")
    ax.set_title(
        f"after one {'cold' if touch.cold else 'warm'} touch: {touch.cached:,} pages cached, "
        f"pages {first:,} to {end - 1:,} ({format_size((end - first) * PAGE)})",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return ax


def plot_page_paths(touches: Sequence[Touch], window: int = 48):
    """Each touch's page path (``mmlab.course.diagram``): touched -> mapped -> cached -> file."""
    import matplotlib.pyplot as plt

    from mmlab.course.diagram import draw_page_path

    shown = [t for t in touches if t.present is not None]
    if not shown:
        print("/proc/self/pagemap is unreadable here: which pages are mapped cannot be drawn")
        return None
    fig, axes = plt.subplots(len(shown), 1, figsize=(11, 3.6 * len(shown)), squeeze=False)
    for ax, t in zip(axes[:, 0], shown, strict=True):
        draw_page_path(
            [t.page], t.present, t.resident, window=window, ax=ax,
            title=f"{'cold' if t.cold else 'warm'} touch of page {t.page:,}: "
            f"{_count(int(t.present.sum()))} mapped, {t.cached:,} cached",
        )  # fmt: skip
    fig.tight_layout()
    return fig


class Watch:
    """Counters of a touch loop, step by step: read around each step, drawn between steps.

    ``with Watch(path, title) as w: ... with w.step(n): touch ...; w.update()``. Each
    ``step`` reads ``counters()`` before and after, and only those intervals are summed, so
    the page faults and time of the drawing ``update`` does between steps are left out.
    ``live=False`` draws only the final frame; ``widget=True`` draws into an image widget
    (inside ``interact``, see ``LiveFigure``). Many small steps let the figure redraw every
    ``every`` seconds of work; where the work was too short for ``replay`` frames, the
    recorded steps are replayed once it is done (what was counted does not change). The
    page cache is sampled after each step, outside the counted interval. ``totals`` is the
    sum of the steps.
    """

    replay = 5  # frames a live view should show at least

    def __init__(
        self,
        path: Path,
        title: str,
        *,
        live: bool = True,
        every: float = 0.25,
        widget: bool | None = None,
    ):
        self.path, self.title, self.live, self.every = Path(path), title, live, every
        self.widget = widget  # draw into an ipywidgets.Image (None: LiveFigure detects it)
        self.touched: list[int] = [0]
        self.steps: list[Counters] = []  # cumulative sums at the end of each step
        self.caches: list[tuple[np.ndarray, int, int]] = []  # cache strip after each step
        self.shown: int | None = None  # steps drawn (None: all)
        self.replayed = 0
        self.figure = None

    def __enter__(self) -> Watch:
        from mmlab.instruments.live import LiveFigure

        self.figure = LiveFigure(
            self._draw, self.every, nrows=2, ncols=2, figsize=(10, 5.5), widget=self.widget
        )
        self.figure.figure.suptitle(self.title)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.live and self.figure.frames < min(len(self.steps), self.replay):
            for k in np.unique(np.linspace(1, len(self.steps), self.replay).astype(int)):
                self.shown = int(k)
                self.figure.update(force=True)
                self.replayed += 1
            self.shown = None
        self.figure.close()

    @contextmanager
    def step(self, pages: int) -> Iterator[None]:
        """Count what the block does (``pages`` touched in it)."""
        start = counters()
        yield
        done = counters() - start
        self.steps.append(done if not self.steps else _add(self.steps[-1], done))
        self.touched.append(self.touched[-1] + pages)
        self.caches.append(_cache_strip(pagecache.residency(self.path)))

    def update(self) -> None:
        """Redraw (if ``every`` seconds passed): call it between steps, never inside one.

        On a slow machine a frame can take longer than ``every``: the wait between frames
        then grows to one frame's drawing time, so drawing takes at most about half the run.
        """
        if self.live and self.figure.update() and self.every > 0:
            drawn = self.figure.draw_seconds / self.figure.frames
            self.figure.every = max(self.every, drawn)

    @property
    def totals(self) -> Counters:
        if not self.steps:
            raise ValueError("no step was measured")
        return self.steps[-1]

    def __repr__(self) -> str:
        return self.summary() if self.steps else f"<Watch {self.title}: no step yet>"

    def summary(self) -> str:
        t, pages = self.totals, self.touched[-1]
        return (
            f"{self.title}: touched {pages:,} pages ({format_size(pages * PAGE)}) in "
            f"{t.wall_s * 1e3:,.0f} ms of work; {t.minor_faults:,} minor + {t.major_faults:,} "
            f"major faults; {read_text(read_counted(t))} from storage; RSS grew "
            f"{format_size(t.rss)}. Drawing ({self.figure.frames} frame"
            f"{'' if self.figure.frames == 1 else 's'}, "
            f"{self.figure.draw_seconds * 1e3:,.0f} ms) happened between the steps, uncounted"
            + (f"; {self.replayed} of them replayed the steps afterwards" if self.replayed else "")
        )

    def _draw(self, axes) -> None:
        (rss_ax, fault_ax), (io_ax, cache_ax) = axes
        for ax in axes.flat:
            ax.clear()
        k = len(self.steps) if self.shown is None else self.shown
        x, steps = self.touched[: k + 1], [None, *self.steps[:k]]

        def series(get):
            return [0 if c is None else get(c) for c in steps]

        rss_ax.plot(x, series(lambda c: c.rss / 2**20), label="RSS growth")
        rss_ax.plot(x, np.array(x) * PAGE / 2**20, ":k", label="pages touched")
        rss_ax.set(title="mapped (MiB)", xlabel="pages touched")
        rss_ax.legend(fontsize=8)
        fault_ax.plot(x, series(lambda c: c.minor_faults), label="minor")
        fault_ax.plot(x, series(lambda c: c.major_faults), label="major")
        fault_ax.set(title="page faults", xlabel="pages touched")
        fault_ax.legend(fontsize=8)
        io_ax.plot(x, series(lambda c: (c.read_bytes or 0) / 2**20), color="C1")
        io_ax.set(title="read from storage (MiB)", xlabel="pages touched")
        for ax in (rss_ax, fault_ax, io_ax):
            ax.set_xlim(0, self.touched[-1])
        if self.shown is not None:
            rss_ax.set_title(f"mapped (MiB); replay: step {k} of {len(self.steps)}")
        _draw_cache(cache_ax, *self.caches[k - 1])


def _cache_strip(resident: np.ndarray, bins: int = 256) -> tuple[np.ndarray, int, int]:
    """The share cached of each of ``bins`` stretches of the file, pages cached, pages."""
    edges = np.linspace(0, len(resident), bins + 1).astype(int)
    shares = np.add.reduceat(resident, edges[:-1]) / np.maximum(np.diff(edges), 1)
    return shares, int(resident.sum()), len(resident)


def _draw_cache(ax, shares: np.ndarray, cached: int, pages: int) -> None:
    """The page cache as the share cached per stretch of the file: a strip, not a page map."""
    mib = pages * PAGE / 2**20
    ax.fill_between(np.linspace(0, mib, len(shares) + 1)[:-1], 100 * shares, step="post")
    ax.set(xlim=(0, mib), ylim=(0, 105), xlabel="offset in the file (MiB)", ylabel="% cached")
    ax.set_title(f"page cache: {cached:,} of {pages:,} pages", fontsize=10)


def _add(a: Counters, b: Counters) -> Counters:
    def plus(x, y):
        return None if x is None or y is None else x + y

    return Counters(*(plus(getattr(a, f), getattr(b, f)) for f in Counters.__dataclass_fields__))


def _count(pages: int) -> str:
    return f"{pages:,} page{'' if pages == 1 else 's'}"


def watch_file(path: Path, pattern: str, madvise: str, cold: bool, *, touches: int, steps: int,
               live: bool = True, widget: bool | None = None) -> Watch:  # fmt: skip
    """Evict ``path`` (if ``cold``), map it with the hint ``madvise`` (a key of ``HINTS``) and
    touch ``touches`` of its pages in ``pattern`` order ("sequential", "random", "strided")
    in ``steps`` counted steps, drawn between them. Returns the ``Watch`` (its summary)."""
    from mmlab.instruments.access import access_order, mapped, touch_pages

    pages = -(-Path(path).stat().st_size // PAGE)
    order = access_order(pages, pattern, count=touches)
    if cold:
        pagecache.evict(path)
    title = f"{pattern}, madvise={madvise}, {'cold' if cold else 'warm'} cache"
    view = Watch(path, title, live=live, widget=widget)
    with view, mapped(path, HINTS[madvise]) as mm:
        for chunk in np.array_split(order, steps):
            with view.step(len(chunk)):  # counted: the touches only
                touch_pages(mm, chunk)
            view.update()  # drawn here, between the counted steps
    return view
