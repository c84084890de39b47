"""Lazy loading, measured per fault: what one touch reads, caches and maps, and what decides it.

A touch of a mapped page that is not yet in this process's page table is a page fault. What
that fault costs is decided by three sizes of the machine, not by the page alone:

* **readahead** (``read_ahead_kb`` of the block device): a fault that must read from storage
  (a *major* fault) reads a window of ``read_ahead_kb`` around the page into the page cache
  (for a mapping, "read-around"), unless ``MADV_RANDOM`` says not to;
* **fault-around** (``fault_around_bytes``, 64 KiB by default): a fault on a page already in
  the page cache (a *minor* fault) also maps the neighbours that are cached, up to that size;
* **large folios**: the page cache may hold a file in folios of many pages (up to 2 MiB with
  4 KiB pages); a fault on one page of a large folio can map the whole folio at once.
  Whether a page sits in one depends on how it was read: readahead that keeps running ahead
  of in-order touches builds ever larger folios, the read-around of a lone fault does not.

``Sizes.of(report)`` reads them from ``mmlab.machine.report``; ``touch_once`` measures what
one touch faulted, read, cached and mapped; ``stride_sweep`` touches every n-th page for
several n, to find where lazy loading stops being lazy; ``hint_reach`` counts what a hint
cached before any touch. Mapped pages come from ``/proc/self/smaps`` (the mapping's
``Rss``), read after the measured work; ``folio_sizes`` reads the folio each touched page
sat in from ``/proc/self/pagemap`` and ``/proc/kpageflags`` (root only: else it says why).
``mmlab.course.lazyexplain`` says in words which case a run showed, and
``mmlab.course.lazyview`` draws the figures and the live view.
"""

from __future__ import annotations

import mmap
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmlab.instruments import pagecache, pagemap
from mmlab.instruments.access import access_order, mapped, touch_pages
from mmlab.instruments.facts import format_size
from mmlab.instruments.proc import counters

__all__ = [
    "HINTS",
    "Sizes",
    "StrideRow",
    "Touch",
    "fewest_bytes",
    "file_bytes",
    "first_lazy_stride",
    "folio_sizes",
    "folio_text",
    "hint_reach",
    "io_cap_pages",
    "mapped_bytes",
    "read_counted",
    "read_text",
    "stride_sweep",
    "touch_once",
    "touch_run",
]

PAGE = mmap.PAGESIZE
FAULT_AROUND_DEFAULT = 65536  # the kernel's default fault_around_bytes
HINTS = {"none": None, "random": "random", "sequential": "sequential", "willneed": "willneed"}
HINTS["populate"] = "populate"  # MAP_POPULATE: a flag of mmap, not a madvise hint
KPF_TAIL = 16  # /proc/kpageflags bit: a page that is not the first of its (compound) folio
LAPTOP_WINDOW = 128 * 1024 // PAGE  # read_ahead_kb 128, many laptops' default, in pages
UNCOUNTED = "an uncounted amount (reads are not counted here: no /proc/self/io, or FUSE/NFS)"


@dataclass(frozen=True)
class Sizes:
    """The sizes that decide what one fault reads and maps, in pages (None: unknown here)."""

    readahead: int | None  # read_ahead_kb
    fault_around: int  # fault_around_bytes, or the kernel's default where unreadable
    fault_around_known: bool
    folio: int | None  # pages one touch of a warm page mapped (warm_touch)
    large_folios: bool | None
    cold_cached: int | None = None  # pages the doctor's probe found cached after one cold touch

    @classmethod
    def of(cls, report) -> Sizes:
        ra, around, warm = report.read_ahead_kb, report.fault_around_bytes, report.warm_touch
        folios, cold = report.large_folios, report.cold_touch
        return cls(
            readahead=ra.value * 1024 // PAGE if ra.known else None,
            fault_around=(around.value if around.known else FAULT_AROUND_DEFAULT) // PAGE,
            fault_around_known=around.known,
            folio=warm.value["pages_mapped"] if warm.known else None,
            large_folios=folios.value if folios.known else None,
            cold_cached=cold.value["pages_cached"] if cold.known else None,
        )

    def lines(self) -> list[str]:
        """One line per size, with its value here."""
        ra = "unknown" if self.readahead is None else _pages(self.readahead)
        if self.readahead is None and self.cold_cached:
            ra += f"; one cold touch cached {_pages(self.cold_cached)} (mmlab doctor's probe)"
        around = _pages(self.fault_around)
        if not self.fault_around_known:
            around += " (the kernel's default; fault_around_bytes is unreadable here)"
        folios = {True: "yes", False: "no", None: "unknown"}[self.large_folios]
        if self.folio:
            folios += (
                f"; in mmlab doctor's probe (a file read in order) one warm touch mapped "
                f"{_pages(self.folio)}; pages read around a lone fault may sit in smaller ones"
            )
        return [
            f"readahead window (read_ahead_kb): {ra}",
            f"fault-around (fault_around_bytes): {around}",
            f"large folios: {folios}",
        ]

    def window_text(self) -> str:
        """``the readahead window here is 32 pages (128.0 KiB) (read_ahead_kb)``, or unknown."""
        if self.readahead is None:
            return "read_ahead_kb is unknown here"
        return f"the readahead window here is {_pages(self.readahead)} (read_ahead_kb)"

    @property
    def window(self) -> int | None:
        """Pages one cold fault reads: read_ahead_kb, else what the doctor's cold touch cached."""
        return self.readahead or self.cold_cached


def read_counted(done) -> int | None:
    """Bytes a run read from storage (a ``Counters`` difference), or None where they are not
    counted: no /proc/self/io, or a major fault that read 0 bytes (FUSE, 9p, NFS do not count
    their reads in read_bytes)."""
    if done.read_bytes is None or (done.read_bytes == 0 and done.major_faults > 0):
        return None
    return done.read_bytes


def read_text(nbytes: int | None) -> str:
    """``8.0 MiB``, or that the bytes read are not counted here."""
    return format_size(nbytes) if nbytes is not None else UNCOUNTED


def _folio_span() -> int:
    """Pages searched on each side of a page for its folio's ends: the largest folio, a PMD
    (2 MiB with 4 KiB pages, 32 MiB with 16 KiB; 2 MiB where THP does not say)."""
    try:
        pmd = int(Path("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size").read_text())
    except (OSError, ValueError):
        pmd = 2**21
    return max(pmd // PAGE, 16)


def _pages(n: int) -> str:
    return f"{_count(n)} ({format_size(n * PAGE)})"


def _count(n: int) -> str:
    return f"{n:,} page{'' if n == 1 else 's'}"


def file_bytes(file_mib: int, sizes: Sizes, windows: int = 40) -> tuple[int, str]:
    """The sample file's size: ``file_mib`` MiB, or ``windows`` readahead windows if larger.

    Ten touches of a file only a few readahead windows long read all of it, which would hide
    lazy loading; 40 windows keep ten cold touches under a quarter of the file. Where
    read_ahead_kb is unknown (btrfs names its readahead device btrfs-N), the window is what
    the doctor's cold touch cached.
    """
    asked = file_mib * 2**20
    window = sizes.window
    if window is None:
        return asked, f"{format_size(asked)} (the readahead window is unknown here)"
    what = (
        f"read_ahead_kb {window * PAGE // 1024:,}"
        if sizes.readahead
        else f"{format_size(window * PAGE)} (what one cold touch cached)"
    )
    needed = windows * window * PAGE
    if asked >= needed:
        return asked, f"{format_size(asked)}, {asked // (window * PAGE):,} windows of {what}"
    return needed, (
        f"{format_size(needed)} instead of {format_size(asked)}: {windows} windows of {what}, "
        "so a few touches cannot read it all"
    )


def mapped_bytes(mm: mmap.mmap) -> int:
    """Bytes of ``mm`` present in this process's page table (its ``Rss`` in smaps)."""
    return pagemap.vma(mm)["Rss"]


def folio_sizes(mm: mmap.mmap, pages: Sequence[int] | np.ndarray, most: int = 256) -> Counter | str:
    """How many of ``pages`` (up to ``most``, evenly picked) sat in a folio of each size.

    Read while ``mm`` still maps them: ``/proc/self/pagemap`` gives each page's frame number
    and ``/proc/kpageflags`` marks every frame of a folio but its first as a tail. Both show
    frame numbers only to root; elsewhere the answer is a sentence saying so.
    """
    pages = np.asarray(pages, dtype=np.int64)
    if len(pages) > most:
        pages = pages[np.linspace(0, len(pages) - 1, most).astype(int)]
    try:
        raw = pagemap.entries(mm)[pages]
    except OSError as exc:
        return str(exc)
    frames = (raw & pagemap.PFN_MASK)[(raw & pagemap.PRESENT) != 0].astype(np.int64)
    if not frames.any():
        return "folio sizes are unknown: page frame numbers are shown only to root"
    sizes: Counter = Counter()
    span = _folio_span()
    try:
        with open("/proc/kpageflags", "rb", buffering=0) as f:
            for frame in frames:
                low = max(int(frame) - span, 0)
                f.seek(low * 8)
                flags = np.frombuffer(f.read((2 * span + 1) * 8), "<u8")
                head = (flags >> np.uint64(KPF_TAIL)) & np.uint64(1) == 0
                at = int(frame) - low
                first = np.flatnonzero(head[: at + 1])[-1] if head[: at + 1].any() else 0
                ends = np.flatnonzero(head[at + 1 :])
                sizes[int((at + 1 + ends[0] if len(ends) else len(head)) - first)] += 1
    except OSError as exc:
        return f"folio sizes are unknown: /proc/kpageflags is unreadable ({exc.strerror})"
    return sizes


def folio_text(sizes: Counter | str | None) -> str:
    """``"1 page: 3 of 4, 512 pages: 1 of 4"`` (most common first), or why unknown."""
    if not isinstance(sizes, Counter):
        return sizes or "not measured"
    total, top = sum(sizes.values()), sizes.most_common(3)
    text = ", ".join(f"{_count(n)}: {k} of {total}" for n, k in top)
    other = total - sum(k for _, k in top)
    return text + (f", other sizes: {other} of {total}" if other else "")


def io_cap_pages(report) -> int | None:
    """The device's largest single I/O (``max_sectors_kb``) in pages, next to read_ahead_kb."""
    ra = report.read_ahead_kb
    if not ra.known or not str(ra.source).endswith("/read_ahead_kb"):
        return None
    try:
        return int(Path(str(ra.source)).with_name("max_sectors_kb").read_text()) * 1024 // PAGE
    except (OSError, ValueError):
        return None


def touch_run(path: Path, hint: str | None, pages: np.ndarray) -> Callable[[], None]:
    """A call that maps ``path`` with ``hint`` and touches ``pages``: the mapping is inside
    the call, so that a timer around it counts MAP_POPULATE's reading too."""

    def run() -> None:
        with mapped(path, hint) as mm:
            touch_pages(mm, pages)

    return run


def hint_reach(path: Path, hint: str | None) -> tuple[int, int]:
    """Pages of the cold file cached once ``mapped(path, hint)`` returns, before any touch:
    (right away, once the reads it started finished)."""
    pagecache.evict(path)
    with mapped(path, hint):
        at_once = int(pagecache.residency(path).sum())
        return at_once, int(pagecache.settled_residency(path).sum())


@dataclass(frozen=True)
class Touch:
    """What one touch of one page did."""

    page: int
    cold: bool
    minor_faults: int
    major_faults: int
    read_bytes: int | None
    mapped_pages: int
    cached_at_once: int
    resident: np.ndarray  # the page cache once settled
    seconds: float = 0.0
    present: np.ndarray | None = None  # per page of the mapping: in the page table (pagemap)
    folio: Counter | str | None = None  # the touched page's folio size (folio_sizes)

    def window(self) -> tuple[int, int]:
        """The run of cached pages around the touched page: (first, end) page numbers."""
        cached = self.resident
        if not cached[self.page]:
            return self.page, self.page
        gaps = np.flatnonzero(~cached)
        before, after = gaps[gaps < self.page], gaps[gaps > self.page]
        first = int(before[-1]) + 1 if len(before) else 0
        return first, int(after[0]) if len(after) else len(cached)

    @property
    def cached(self) -> int:
        return int(self.resident.sum())

    def __str__(self) -> str:
        read = "n/a" if self.read_bytes is None else format_size(self.read_bytes)
        return (
            f"{'cold' if self.cold else 'warm'} touch of page {self.page:,}: "
            f"{self.major_faults} major + {self.minor_faults} minor fault(s); read {read} from "
            f"storage; mapped {_pages(self.mapped_pages)}; page cache {self.cached_at_once:,} "
            f"pages right after, {self.cached:,} once the reads finished; "
            f"{self.seconds * 1e3:.3g} ms"
        )


def touch_once(path: Path, page: int, *, cold: bool = True) -> Touch:
    """Touch one page through a fresh mapping (after evicting the file if ``cold``)."""
    if cold:
        pagecache.evict(path)
    with mapped(path) as mm:
        counters(), touch_pages(mm, np.array([], dtype=np.int64))  # warm up the code paths
        before = counters()
        touch_pages(mm, [page])
        after = counters() - before
        present = mapped_bytes(mm) // PAGE
        try:
            which = pagemap.present(mm)
        except OSError:  # no pagemap here: the count from smaps still stands
            which = None
        folio = folio_sizes(mm, [page])
    at_once = int(pagecache.residency(path).sum())
    resident = pagecache.settled_residency(path)
    return Touch(
        page, cold, after.minor_faults, after.major_faults, read_counted(after), present, at_once,
        resident, after.wall_s, which, folio,
    )  # fmt: skip


@dataclass(frozen=True)
class StrideRow:
    """One cold run of touching every ``stride``-th page."""

    stride: int
    touched: int
    minor_faults: int
    major_faults: int
    read_bytes: int | None  # None: not counted here (read_counted)
    mapped_pages: int
    cached_pages: int
    file_pages: int
    seconds: float
    folios: Counter | str | None = None  # folio sizes of the touched pages (folio_sizes)

    @property
    def faults(self) -> int:
        return self.minor_faults + self.major_faults

    @property
    def per_fault(self) -> float:
        """Pages mapped per fault."""
        return self.mapped_pages / max(self.faults, 1)

    def fraction(self, what: str) -> float:
        """``"read"``, ``"mapped"``, ``"cached"`` or ``"touched"``: a fraction of the file
        (NaN for "read" where reads are not counted: a plot leaves the point out)."""
        if what == "read" and self.read_bytes is None:
            return float("nan")
        pages = {"read": (self.read_bytes or 0) // PAGE, "mapped": self.mapped_pages}
        pages |= {"cached": self.cached_pages, "touched": self.touched}
        return pages[what] / self.file_pages


def stride_sweep(path: Path, strides: Sequence[int], madvise: str | None = None) -> list[StrideRow]:
    """For each stride: evict, map, touch every stride-th page, and count what that did."""
    rows = []
    file_pages = -(-path.stat().st_size // PAGE)
    for stride in strides:
        order = access_order(file_pages, "strided", stride=stride)
        pagecache.evict(path)
        with mapped(path, madvise) as mm:
            before = counters()
            touch_pages(mm, order)
            done = counters() - before
            present = mapped_bytes(mm) // PAGE
            folios = folio_sizes(mm, order)
        cached = int(pagecache.settled_residency(path).sum())
        row = StrideRow(
            stride, len(order), done.minor_faults, done.major_faults, read_counted(done),
            present, cached, file_pages, done.wall_s, folios,
        )  # fmt: skip
        rows.append(row)
    return rows


def first_lazy_stride(rows: Sequence[StrideRow]) -> int | str | None:
    """The smallest stride that read less than 90% of the file (or "none of them"): a tenth
    unread is clear of the pages a window reads past either end of the file. None where
    reads are not counted: nothing can be said."""
    if any(r.read_bytes is None for r in rows):
        return None
    return next((r.stride for r in rows if r.fraction("read") < 0.9), "none of them")


def fewest_bytes(result) -> str | None:
    """The name of the row of a ``bench.compare`` result that read the fewest bytes, or None
    where reads are not counted (unknown, or 0 bytes although faults were major)."""
    rows = result.rows
    if any(row.storage_bytes is None for row in rows):
        return None
    if not any(row.storage_bytes for row in rows) and any(row.major_faults for row in rows):
        return None
    return min(rows, key=lambda row: row.storage_bytes).name
