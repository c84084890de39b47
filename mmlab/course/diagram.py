"""The path of a page, drawn from this run: virtual page -> page table -> page cache -> file.

Reading ``mm[i]`` from a file mapping goes through four layers, and each can be measured:

1. **Virtual pages** (your process): ``mmap`` reserved a range of addresses, a *VMA*
   (virtual memory area), one line of ``/proc/self/maps``. Nothing is loaded yet.
2. **Page table entries** (PTEs): the CPU translates each virtual page through the page
   table. An empty PTE makes the first touch a *page fault*; the kernel then fills it so it
   points at a physical page. Which PTEs are filled is read from ``/proc/self/pagemap``
   (``mmlab.pagemap``). One fault usually fills more than the touched page: *fault-around*
   maps the neighbouring pages that are already cached (64 KiB by default), and a *large
   folio* (a block of several pages the page cache keeps and maps as one unit) is mapped
   whole.
3. **The page cache**: the kernel's copy of the file's pages in RAM, shared by every process
   that reads or maps the file, and kept after they exit. A page missing from the cache
   makes the fault *major*: it waits for storage, and readahead reads more pages than asked.
   Which pages are cached is read with ``mincore`` (``mmlab.pagecache.residency``). A page
   written through a shared mapping becomes *dirty*: newer in RAM than on storage, until
   writeback (or ``flush()``) writes it back.
4. **File blocks on storage**: where the file system keeps the bytes.

``draw_page_path(touched, mapped, cached)`` draws the four rows over a window of pages around
the touched ones, with arrows along the path each present page took, and says how many
pages outside the window are mapped and cached; in a figure of its own it adds a strip of the
whole file's cached pages (readahead's window in full). The file-blocks row is not measured:
every page of the file has blocks on storage. ``show_page_path(mm, path, touched)``
measures ``mapped`` and ``cached`` itself for a mapping of a file (once readahead's reads in
flight have finished) and draws them; ``explain`` names the facts that decided its counts.
``why_span`` says why a mapping spans more bytes than its file: whole pages. matplotlib is
imported only when drawing.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PagePath",
    "draw_page_path",
    "explain",
    "measure_page_path",
    "show_page_path",
    "why_span",
]

_ROWS = (
    "virtual pages\n(your process)",
    "page table entries\n(present: pagemap)",
    "page cache\n(resident: mincore)",
    "file blocks\non storage",
)
_COLOURS = {"touched": "#d62728", "virtual": "#f2f2f2", "mapped": "#1f77b4"}
_COLOURS |= {"cached": "#2ca02c", "block": "#7f7f7f", "empty": "white"}


@dataclass(frozen=True)
class PagePath:
    """Which pages of one mapping were touched, mapped (PTE present) and cached, measured."""

    touched: np.ndarray  # page indexes in the mapping
    mapped: np.ndarray  # one bool per page of the mapping
    cached: np.ndarray  # one bool per page of the file
    first_file_page: int = 0

    def __str__(self) -> str:
        return (
            f"touched {len(np.unique(self.touched)):,} pages; {int(self.mapped.sum()):,} of "
            f"{len(self.mapped):,} mapped in the page table; {int(self.cached.sum()):,} of "
            f"{len(self.cached):,} file pages in the page cache"
        )


def measure_page_path(
    mm: mmap.mmap,
    path: str | os.PathLike[str],
    touched: Iterable[int],
    first_file_page: int = 0,
    settle: float = 1.0,
) -> PagePath:
    """Measure the mapping ``mm`` of the file ``path``: PTEs present and pages cached.

    Readahead's reads may still be in flight after the touch, and ``mincore`` counts only
    pages whose read finished: so this waits until the cached count stops changing (two
    reads 20 ms apart agree), for at most ``settle`` seconds.
    """
    from mmlab.instruments import pagecache, pagemap

    cached = pagecache.settled_residency(path, timeout=settle)
    return PagePath(
        touched=np.asarray(list(touched), dtype=np.int64),
        mapped=pagemap.present(mm),
        cached=cached,
        first_file_page=first_file_page,
    )


def _window(touched: np.ndarray, pages: int, width: int) -> tuple[int, int]:
    """``[start, stop)``: ``width`` pages centred on the touched ones (or their start)."""
    width = min(width, pages)
    if len(touched) == 0:
        return 0, width
    low, high = int(touched.min()), int(touched.max())
    centre = (low + high) // 2 if high - low < width else low + width // 2
    start = int(np.clip(centre - width // 2, 0, pages - width))
    return start, start + width


def draw_page_path(
    touched: Iterable[int],
    mapped: np.ndarray,
    cached: np.ndarray,
    *,
    first_file_page: int = 0,
    window: int = 48,
    ax=None,
    title: str | None = None,
):
    """Draw the four layers over ``window`` pages around the touched pages; returns the axes.

    ``touched`` are page indexes in the mapping, ``mapped`` one bool per page of the mapping
    (``pagemap.present``), ``cached`` one bool per page of the file (``residency``); page
    ``i`` of the mapping is page ``first_file_page + i`` of the file.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    touched = np.unique(np.asarray(list(touched), dtype=np.int64))
    mapped, cached = np.asarray(mapped, bool), np.asarray(cached, bool)
    start, stop = _window(touched, len(mapped), window)
    strip_ax = None
    if ax is None:
        _, (ax, strip_ax) = plt.subplots(
            2, 1, figsize=(11, 5.6), height_ratios=[4.2, 0.6], layout="constrained"
        )
    y = {row: 3 - k for k, row in enumerate(_ROWS)}  # top row first
    in_file = np.arange(start, stop) + first_file_page < len(cached)

    def box(x: int, row: str, colour: str, dashed: bool = False) -> None:
        ax.add_patch(
            Rectangle(
                (x - 0.4, y[row] - 0.3),
                0.8,
                0.6,
                facecolor=colour,
                edgecolor="#444",
                linewidth=0.6,
                linestyle="--" if dashed else "-",
            )
        )

    def arrow(x: int, upper: str, lower: str) -> None:
        ax.annotate(
            "",
            xy=(x, y[lower] + 0.32),
            xytext=(x, y[upper] - 0.32),
            arrowprops={"arrowstyle": "->", "color": "#333", "linewidth": 0.8},
        )

    rows = list(y)
    for x in range(start, stop):
        file_page = x + first_file_page
        is_cached = file_page < len(cached) and cached[file_page]
        box(x, rows[0], _COLOURS["touched" if x in touched else "virtual"])
        box(x, rows[1], _COLOURS["mapped" if mapped[x] else "empty"], dashed=not mapped[x])
        if in_file[x - start]:
            box(x, rows[2], _COLOURS["cached" if is_cached else "empty"], dashed=not is_cached)
            box(x, rows[3], _COLOURS["block"])
        if mapped[x]:
            arrow(x, rows[0], rows[1])
            arrow(x, rows[1], rows[2])
        if is_cached:
            arrow(x, rows[2], rows[3])

    ax.set_xlim(start - 0.6, stop - 0.4)
    ax.set_ylim(-0.6, 3.6)
    ax.set_yticks([y[r] for r in rows], rows)
    ticks = [x for x in range(start, stop) if x % 8 == 0] or [start]
    ax.set_xticks(ticks, [f"{x:,}" for x in ticks])
    ax.set_xlabel(
        f"page of the mapping ({mmap.PAGESIZE // 1024} KiB each; file page = this + "
        f"{first_file_page:,})"
        if first_file_page
        else f"page of the mapping = page of the file ({mmap.PAGESIZE // 1024} KiB each)"
    )
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)
    ax.grid(False)

    outside = np.ones(len(mapped), bool)
    outside[start:stop] = False
    file_outside = np.ones(len(cached), bool)
    file_outside[max(0, start + first_file_page) : max(0, stop + first_file_page)] = False
    note = (
        f"Shown: pages {start:,} to {stop - 1:,}. Outside this window: "
        f"{int(outside.sum()):,} pages of the mapping, {int(mapped[outside].sum()):,} of them "
        f"mapped; {int(file_outside.sum()):,} pages of the file, "
        f"{int(cached[file_outside].sum()):,} of them cached."
    )
    ax.text(0, -0.26, note, transform=ax.transAxes, ha="left", va="top", fontsize=8, color="#333")
    handles = [
        Patch(facecolor=_COLOURS["touched"], edgecolor="#444", label="page your code touched"),
        Patch(facecolor=_COLOURS["mapped"], edgecolor="#444", label="PTE present (mapped)"),
        Patch(facecolor=_COLOURS["cached"], edgecolor="#444", label="in the page cache"),
        Patch(
            facecolor=_COLOURS["block"],
            edgecolor="#444",
            label="file's blocks on storage\n(every page of the file:\nnot measured)",
        ),
        Patch(facecolor="white", edgecolor="#444", linestyle="--", label="empty / not cached"),
    ]
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8
    )
    ax.set_title(
        title
        or f"{len(touched):,} page(s) touched -> {int(mapped.sum()):,} mapped -> "
        f"{int(cached.sum()):,} cached (of {len(cached):,} file pages)"
    )
    if strip_ax is not None:
        _whole_file(strip_ax, touched + first_file_page, cached, start + first_file_page, window)
    return ax


def _whole_file(ax, touched: np.ndarray, cached: np.ndarray, start: int, window: int) -> None:
    """One strip for the whole file: cached pages in green, the window drawn above boxed."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Rectangle

    colours = ListedColormap(["white", _COLOURS["cached"]])
    ax.imshow(
        cached[None, :].astype(int),
        aspect="auto",
        cmap=colours,
        vmin=0,
        vmax=1,
        interpolation="nearest",
        extent=(0, len(cached), 0, 1),
    )
    ax.add_patch(Rectangle((start, 0), window, 1, fill=False, edgecolor="black", linewidth=1.2))
    ax.plot(
        touched + 0.5,
        np.full(len(touched), 1.25),
        "v",
        color=_COLOURS["touched"],
        markersize=5,
        clip_on=False,
    )
    ax.set_yticks([])
    ax.set_xlim(0, len(cached))
    ax.grid(False)
    # a window under ~1% of the strip's width draws as a thin black mark, not as a box
    shown = "the black mark" if window * 100 < len(cached) else "boxed"
    ax.set_title(
        f"the whole file ({len(cached):,} pages): cached pages in green, the window "
        f"above: {shown}, touched pages: red marks",
        fontsize=9,
    )
    ax.set_xlabel("page of the file", fontsize=8)
    ax.tick_params(labelsize=8)


def show_page_path(
    mm: mmap.mmap,
    path: str | os.PathLike[str],
    touched: Iterable[int],
    *,
    first_file_page: int = 0,
    window: int = 48,
    ax=None,
    title: str | None = None,
    settle: float = 1.0,
) -> PagePath:
    """Measure the mapping ``mm`` of ``path`` (``measure_page_path``) and draw it."""
    found = measure_page_path(mm, path, touched, first_file_page, settle)
    draw_page_path(
        found.touched,
        found.mapped,
        found.cached,
        first_file_page=first_file_page,
        window=window,
        ax=ax,
        title=title,
    )
    return found


def explain(
    found: PagePath,
    address: int,
    major_faults: int,
    fault_around_bytes: int | None,
    read_ahead_kb: int | None,
    laptop_kb: int = 128,
) -> str:
    """Which facts decide the counts of ``found``, in words computed from this run.

    ``address`` is the mapping's start: fault-around fills the window of
    ``fault_around_bytes`` that holds the faulting address, aligned in the address space.
    By default, a major fault on a mapping reads one *read-around* window of ``read_ahead_kb``,
    centred on the faulting page; ``laptop_kb`` is the typical laptop's read_ahead_kb to compare.
    """
    page = mmap.PAGESIZE
    known = fault_around_bytes is not None
    span = (fault_around_bytes if known else 65536) // page
    windows = {(address // page + int(t)) // span for t in found.touched}
    mapped, cached = int(found.mapped.sum()), int(found.cached.sum())
    full = len(windows) * span
    if known:
        said = f"fault_around_bytes = {span * page // 1024} KiB"
    else:
        fits = "fits" if full - major_faults <= mapped <= full else "does not fit"
        said = f"fault_around_bytes unreadable here; the default 64 KiB {fits} the {mapped} PTEs"
    lines = [
        f"page table: {mapped} PTEs filled; the touches fall in {len(windows)} aligned "
        f"window(s) of {span} pages ({said})"
    ]
    if mapped == full:
        lines.append(
            f"  = {len(windows)} x {span}: each fault mapped its whole window "
            "(a touch inside a window already mapped made no fault)"
        )
    elif mapped > full:
        lines.append("  more than those windows: large folios were mapped whole")
    else:
        lines.append(
            f"  {full - mapped} fewer than those windows: fault-around skips a page readahead "
            "marked PG_readahead (where the next, asynchronous readahead starts: one such page "
            f"per read-around window, {major_faults} major fault(s) here), pages still locked "
            "for I/O, and pages not cached"
        )
    if major_faults == 0 or not cached:
        lines.append(
            f"page cache: {cached:,} pages, no major fault: nothing was read, so no "
            "readahead to see (the file stayed cached)"
        )
        return "\n".join(lines)
    where = np.flatnonzero(found.cached)
    first = int(found.touched[0]) + found.first_file_page
    lines.append(
        f"page cache: {major_faults} major fault(s) cached {cached:,} pages "
        f"({cached * page / 2**20:g} MiB): pages {where[0]:,} to {where[-1]:,}, "
        f"{first - where[0]:,} before the first touch and {where[-1] - first:,} after"
    )
    if read_ahead_kb is None:
        lines.append("  read_ahead_kb is unknown here: the window's size cannot be named")
        return "\n".join(lines)
    ra = read_ahead_kb * 1024 // page
    match = "=" if cached == major_faults * ra else "vs"
    lines.append(
        f"  {match} {major_faults} x read_ahead_kb ({read_ahead_kb:,} KiB = {ra:,} pages): one "
        "read-around window per major fault, centred on the faulting page (the default for a "
        "mapping; madvise hints change it)"
    )
    far = int(found.touched.max() - found.touched.min())
    sizes = [(read_ahead_kb, "here")]
    if laptop_kb != read_ahead_kb:
        sizes.append((laptop_kb, "a typical laptop"))
    for kb, who in sizes:
        half = kb * 1024 // page // 2
        fate = "inside it: a minor fault" if far < half else "outside it: a second major fault"
        lines.append(
            f"  read_ahead_kb = {kb:,} ({who}): the window reaches {half:,} pages either side; "
            f"the touch {far} pages from the first is {fate}"
        )
    return "\n".join(lines)


def why_span(file_bytes: int, span_bytes: int, page: int = mmap.PAGESIZE) -> str:
    """Why a mapping of a ``file_bytes`` file spans ``span_bytes`` (its VMA, measured): pages."""
    pages = -(-file_bytes // page)
    lines = [
        f"the kernel maps whole pages: {file_bytes:,} bytes need ceil({file_bytes:,} / "
        f"{page:,}) = {pages} page(s) of {page:,} bytes here, and the VMA spans "
        f"{span_bytes:,} bytes = {span_bytes // page} page(s)"
    ]
    if span_bytes == pages * page and span_bytes > file_bytes:
        lines.append(
            f"  the last {span_bytes - file_bytes:,} bytes of the last page lie past the "
            f"file's end: they read as zeros, and len(mm) stops at the file's {file_bytes:,}"
        )
    elif span_bytes != pages * page:
        lines.append("  not the pages computed: this VMA holds more than this one mapping")
    for other, who in (
        (4096, "most x86 laptops"),
        (16384, "Apple silicon"),
        (65536, "some ARM servers"),
    ):
        if other != page:
            lines.append(
                f"  with {other // 1024} KiB pages ({who}) the same file spans "
                f"{-(-file_bytes // other)} page(s)"
            )
    return "\n".join(lines)
