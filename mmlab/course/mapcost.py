"""What one mapping costs, measured: the system calls, and what Python's ``mmap`` adds.

Python's ``mmap.mmap`` does more than the ``mmap`` system call: it ``fstat``s the file and
keeps a duplicate of its file descriptor for as long as the mapping lives (Python 3.13's
``trackfd=False`` skips the duplicate). To show where the time of one map-and-unmap goes,
each function below makes ``n`` calls of one kind, to time side by side with
``mmlab.bench.compare``:

``python_mmaps``, ``bare_mmaps``, ``fd_calls``, ``refused_mmaps``, ``ctypes_calls``: ``n``
  map-and-unmap pairs with Python's object, the same system calls through ``ctypes``, the
  ``fstat``, ``dup`` and ``close`` Python's object adds, and ``ctypes``' own cost per call
  (no system call), to time with ``mmlab.bench.compare``; ``cost_split`` reads the split,
  ``plot_per_call`` draws microseconds per call.

The limits on how many mappings a process may hold are ``mmlab.mapcount``. ``overhead_claim``
and ``fragmentation_claim`` judge the blog's two claims on mappings' cost and limits from
this run's numbers.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import platform
from dataclasses import dataclass

from mmlab.course import mapcount
from mmlab.course.mapcount import _FAILED, _MAP_SHARED, _PROT_READ, PAGE, _libc
from mmlab.instruments.stats import FEW_ROUNDS, Spread

__all__ = [
    "BARE",
    "CTYPES",
    "FD_CALLS",
    "LARGE",
    "ONE_PAGE",
    "REFUSED",
    "Split",
    "bare_mmaps",
    "cost_split",
    "ctypes_calls",
    "fd_calls",
    "fragmentation_claim",
    "overhead_claim",
    "plot_per_call",
    "python_mmaps",
    "refused_mmaps",
    "why_size",
]


def python_mmaps(fd: int, n: int, pages: int = 1) -> None:
    """Map ``pages`` pages of ``fd`` with ``mmap.mmap`` and close the mapping, ``n`` times."""
    for _ in range(n):
        mmap.mmap(fd, pages * PAGE, access=mmap.ACCESS_READ).close()


def bare_mmaps(fd: int, n: int, pages: int = 1) -> None:
    """The bare ``mmap`` and ``munmap`` system calls (through ``ctypes``), ``n`` times."""
    libc, length = _libc(), pages * PAGE
    mmap_, munmap = libc.mmap, libc.munmap
    for _ in range(n):
        address = mmap_(None, length, _PROT_READ, _MAP_SHARED, fd, 0)
        if address == _FAILED:
            raise OSError(ctypes.get_errno(), "mmap failed")
        munmap(address, length)


def fd_calls(fd: int, n: int) -> None:
    """What ``mmap.mmap`` adds around the system call, through ``ctypes`` like
    ``bare_mmaps``: ``fstat`` (for the file's size), ``dup``, then ``close`` of the copy."""
    libc, stat = _libc(), ctypes.create_string_buffer(512)  # larger than any struct stat
    fstat, dup, close = getattr(libc, "fstat", None), libc.dup, libc.close
    if fstat is None:  # glibc before 2.33 exports fstat only as __fxstat(_STAT_VER, ...)
        fstat = functools.partial(libc.__fxstat, 1 if platform.machine() == "x86_64" else 0)
    for _ in range(n):
        fstat(fd, stat)
        close(dup(fd))


def refused_mmaps(fd: int, n: int) -> None:
    """``ctypes``' own cost for ``mmap``, with no system call: ``n`` calls with the arguments
    of ``bare_mmaps`` but offset 1, which the C library refuses before calling the kernel."""
    mmap_ = _libc().mmap
    for _ in range(n):
        mmap_(None, PAGE, _PROT_READ, _MAP_SHARED, fd, 1)


def ctypes_calls(n: int) -> None:
    """``ctypes``' own cost for a cheap call: ``n`` calls of ``abs()``, no system call."""
    absolute = _libc().abs
    for _ in range(n):
        absolute(0)


# The arms of section 4 of notebook 02; ``cost_split`` finds them by these names.
ONE_PAGE = "mmap.mmap, 1 page"
LARGE = "mmap.mmap, the whole file"
BARE = "mmap + munmap via ctypes"
FD_CALLS = "fstat + dup + close via ctypes"
REFUSED = "mmap via ctypes, refused by libc"
CTYPES = "abs() via ctypes"


@dataclass(frozen=True)
class Split:
    """What one mapping cost, from ``bench.compare`` rounds of ``n`` calls per arm.

    Each value is a ``Spread`` over the rounds, computed round by round. ``large_over_one``:
    a mapping of the whole file's time over a one-page mapping's. Microseconds per call:
    ``python`` (``mmap.mmap`` of one page, then ``close``), ``kernel`` (the ``mmap`` and
    ``munmap`` system calls, with ``ctypes``' own cost of two calls taken off), ``fd``
    (``fstat``, ``dup``, ``close``, three calls' cost taken off), ``rest`` (what is left
    of ``python``: building Python's object, parsing its arguments), and ``ctypes``' own
    cost per call: ``ctypes_mmap`` (the refused ``mmap``) and ``ctypes_call`` (``abs``).
    """

    n: int
    pages: int
    large_over_one: Spread
    python: Spread
    kernel: Spread
    fd: Spread
    rest: Spread
    ctypes_mmap: Spread
    ctypes_call: Spread

    def larger_part(self) -> str | None:
        """``"kernel"`` if the system calls' share lies clearly above half (the whole IQR,
        or every round with few rounds), ``"python"`` if clearly below, ``None`` if the
        rounds straddle half: this run cannot tell."""
        return {1: "kernel", -1: "python", 0: None}[self.share(self.kernel).side(0.5)]

    def share(self, part: Spread) -> Spread:
        """A part's time as a fraction of Python's whole call, round by round."""
        return Spread.of(x / p for x, p in zip(part.samples, self.python.samples, strict=True))

    def __str__(self) -> str:
        ratio = self.large_over_one
        total = Spread.of(self.n / r for r in ratio.samples)
        lines = [
            f"a {self.pages:,}-page mapping takes {ratio.text('.2f', 'x', than=1.0)} the time of "
            f"a one-page one, round by round: its size {_size_verdict(ratio)}",
            f"so {self.n:,} one-page mappings take {total.text(',.0f', 'x')} the time of one "
            f"{self.pages:,}-page mapping, for the same pages",
            f"one mmap.mmap of one page, then close(): {self.python.text('.3g', ' µs')}, of which",
        ]
        parts = (
            ("mmap + munmap system calls", self.kernel),
            ("fstat + dup + close of the fd", self.fd),
            ("the rest (Python's object)", self.rest),
        )
        for label, part in parts:
            # a part is a difference of timings: below 0 in some rounds means noise, not time
            noisy = ": below 0 in some rounds, within this run's noise" if part.q1 < 0 else ""
            share = self.share(part).text(".0%")
            lines.append(f"  {label:<30}{part.text('.2g', ' µs')} ({share}){noisy}")
        lines.append("  (each part's median over the rounds: they need not add up to 100% exactly)")
        lines.append(
            f"ctypes' own cost, taken off above: {self.ctypes_mmap.text('.2g', ' µs')} per mmap "
            f"call (the refused one), {self.ctypes_call.text('.2g', ' µs')} per cheap call: why "
            "the ctypes system calls can take longer than the whole of mmap.mmap"
        )
        few = len(self.python.samples) < FEW_ROUNDS  # then Spread.side asks every round
        side = f"the system calls' share {'in every round' if few else 'over the whole IQR'} is"
        lines.append(
            {
                "kernel": f"{side} above 50%: the mmap system calls are the larger part here",
                "python": f"{side} below 50%: what Python adds (fstat, dup, close, the object) "
                "is the larger part here",
                None: "about half each: the rounds fall on both sides of 50%, so this run cannot "
                "tell which part is larger",
            }[self.larger_part()]
        )
        return "\n".join(lines)


def _size_verdict(ratio: Spread) -> str:
    if 0.5 < ratio.median < 2:
        return "changes the cost by less than 2x (the kernel maps no page until it is touched)"
    return "changes the cost by more than 2x here"


def why_size(split: Split) -> str:
    """Why a mapping of many pages cost what it did against a one-page one, from this run's
    rounds: ``mmap`` records one VMA and maps no page until it is touched."""
    ratio, rounds = split.large_over_one, len(split.large_over_one.samples)
    measured = (
        f"over {rounds} interleaved rounds, a {split.pages:,}-page mapping (map, then unmap, "
        f"untouched) took {ratio.text('.2f', 'x', than=1.0)} the time of a one-page one "
        f"(median [interquartile range])"
    )
    if 0.5 < ratio.median < 2:
        return (
            f"{measured}: mmap only records the range in one VMA and maps no page until one is "
            f"touched (notebook 03), so its size changes the cost by less than 2x, while the count "
            f"does: {split.pages:,} one-page mappings cost about "
            f"{split.pages / ratio.median:,.0f}x one mapping of them all"
        )
    return (
        f"{measured}: more than the 2x that recording one VMA explains, since no page was "
        f"touched; the range of the rounds ({ratio.min:.2f}x to {ratio.max:.2f}x) shows how "
        "much of it is this run's noise: run the cell again"
    )


def overhead_claim(split: Split) -> dict:
    """The blog's claim on the kernel overhead of mappings, judged from this run's ``split``
    (``cost_split``). Returns ``measured`` and ``verdict`` for ``mmlab.results.claim``."""
    ratio, n = split.large_over_one.median, split.n
    measured = (
        f"map and unmap, median of {len(split.python.samples)} interleaved rounds: one page "
        f"{split.python.median:.2g} µs with mmap.mmap, a {split.pages:,}-page mapping "
        f"{ratio:.2f}x that, so {n:,} one-page mappings cost {n / ratio:,.0f}x one large one; "
        f"the mmap and munmap system calls are {split.share(split.kernel).median:.0%} of "
        f"mmap.mmap's time, fstat + dup + close {split.share(split.fd).median:.0%}"
    )
    larger = {
        "kernel": "most of each is the system calls",
        "python": "most of each is Python's mmap object",
        None: "system calls and Python's object take about half each (this run cannot tell "
        "which more)",
    }[split.larger_part()]
    if 0.5 < ratio < 2:
        verdict = (
            f"true: each mapping is a system call and a kernel object (a VMA), and its cost "
            f"hardly depends on its size ({ratio:.2f}x for {split.pages:,} times the pages): the "
            f"count of mappings is what costs; {larger}"
        )
    else:
        verdict = (
            f"not shown by this run: the large mapping took {ratio:.2f}x a one-page one, more "
            f"than recording one VMA explains (noise: run it again); {larger}"
        )
    return {"measured": measured, "verdict": verdict}


def fragmentation_claim(
    top: int, accepted: bool, vmas: mapcount.Refusal, files: mapcount.Refusal
) -> dict:
    """The blog's claim on fragmentation and limited address space, judged from this run:
    one mapping of a quarter of the address space ``accepted`` or not (``reserve``), and
    the two children. Returns ``measured`` and ``verdict`` for ``mmlab.results.claim``."""
    lower = {
        "EMFILE": "RLIMIT_NOFILE was the lower here",
        "ENOMEM": "vm.max_map_count was the lower here",
        None: f"neither limit was reached below {files.cap:,} here",
    }.get(files.error, f"the calls failed with {files.error}")
    capped = mapcount.address_space_limit()
    measured = (
        f"address space about {top / 2**40:g} TiB, one mapping of a quarter of it "
        f"{'accepted' if accepted else 'refused'}"
        + (f" (RLIMIT_AS {capped / 2**30:,.1f} GiB)" if capped else "")
        + f"; a child splitting one anonymous mapping with mprotect {vmas.end} at "
        f"{vmas.vmas:,} VMAs (vm.max_map_count {vmas.max_map_count:,}); one made "
        f"{files.calls:,} one-page mmap.mmap calls, then {files.end} (RLIMIT_NOFILE soft "
        f"{files.nofile_soft:,}: each holds a duplicated file descriptor)"
    )
    space = (
        "partly true: on 64-bit the address space is not the limit"
        if accepted
        else "true here: this process's address space is capped"
        + (" by RLIMIT_AS (ulimit -v)" if capped else "")
        + ", so one large mapping was refused"
    )
    count = "the count of mappings is" if accepted else "the count of mappings is a limit too"
    verdict = f"{space}; {count}, and for Python's mmap so is the open-file limit: {lower}"
    return {"measured": measured, "verdict": verdict}


def cost_split(cost, n: int, pages: int) -> Split:
    """Read ``bench.compare``'s result ``cost``, whose arms are named ``ONE_PAGE``, ``LARGE``,
    ``BARE``, ``FD_CALLS``, ``REFUSED`` and ``CTYPES`` and made ``n`` calls each per round."""
    per_call = {row.name: [s / n * 1e6 for s in row.seconds.samples] for row in cost}
    names = (ONE_PAGE, BARE, FD_CALLS, REFUSED, CTYPES)
    rounds = zip(*(per_call[k] for k in names), strict=True)
    # ctypes' own cost: an mmap call and a cheap one (munmap) for bare_mmaps, three cheap
    # ones for fd_calls; what remains of each is the system calls
    parts = []
    for py, bare, fd, refused, cheap in rounds:
        kernel, fd_work = bare - refused - cheap, fd - 3 * cheap
        parts.append((py, kernel, fd_work, py - kernel - fd_work, refused, cheap))
    spreads = (Spread.of(column) for column in zip(*parts, strict=True))
    return Split(n, pages, cost.relative(ONE_PAGE, LARGE), *spreads)


def plot_per_call(cost, n: int, ax=None):
    """``bench.compare``'s result ``cost`` (``n`` calls per arm and round) as microseconds per
    call: medians as bars, the IQR as error bars. Needs matplotlib; returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 1.5 + 0.4 * len(cost)), layout="constrained")
    spreads = [row.seconds.scaled(1e6 / n) for row in cost]
    medians = [s.median for s in spreads]
    errors = [[s.median - s.q1 for s in spreads], [s.q3 - s.median for s in spreads]]
    ax.barh(cost.names, medians, xerr=errors, capsize=3, color="#1f77b4")
    for y, spread in enumerate(spreads):  # the median, written past the error bar
        ax.text(spread.q3, y, f"  {spread.median:.2g}", va="center", fontsize=8)
    ax.set_xlim(0, max(s.q3 for s in spreads) * 1.12)
    ax.invert_yaxis()
    ax.set_xlabel("µs per call (median of the rounds; error bars: interquartile range)")
    ax.set_title(f"{n:,} calls per way and round; {cost.rounds} rounds, interleaved", fontsize=9)
    return ax
