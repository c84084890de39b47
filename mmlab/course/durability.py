"""Notebook 08's measurements: the life of a dirty page, and what flushing per record costs.

``watch_dirty`` writes through a shared mapping and follows the file's pages (cachestat, or
``/proc/meminfo`` for the whole system where cachestat is missing) from dirty to clean, live,
until the kernel has written them back by itself or a timeout says it did not (the words
for what it saw are ``mmlab.course.durableviews``). ``blog_writer`` runs the blog's writer
(the layout of ``mmlab.data.seedformat``, written by ``write_blog`` into a file that
``reserve`` made, untimed, with its blocks reserved and written, so a full disk is an
``OSError`` at a call, never a SIGBUS of this process) with different flush policies in
interleaved rounds and counts what each made storage write: the bytes the process dirtied
(``write_bytes``: a flush cleans a page, the next record's write dirties the whole page
again) and the bytes the device wrote, every process's, from each call to the next one's
(untimed) setup, beside what it wrote in an idle interval as long just after.
"""

from __future__ import annotations

import mmap
import os
import statistics
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmlab.data import seedformat
from mmlab.instruments.compare import compare
from mmlab.instruments.live import LiveFigure, draw_marks
from mmlab.instruments.writeback import (
    DeviceWrites,
    Rules,
    dirty_sampler,
    meminfo_dirty,
)

__all__ = [
    "DirtyLife",
    "WriterRuns",
    "blog_records",
    "blog_writer",
    "draw_life",
    "pages_model",
    "reserve",
    "watch_dirty",
    "write_blog",
]

_PAGE = mmap.PAGESIZE
_VALUE = struct.Struct("d")  # the blog's native double


@dataclass(frozen=True)
class DirtyLife:
    """What ``watch_dirty`` saw: seconds are counted from the end of the writes."""

    pages: int  # pages written
    peak_dirty: int  # the most dirty pages seen (the file's, or the system's)
    started_s: float | None  # when the dirty count first fell (writeback began)
    clean_s: float | None  # when the pages were all clean again
    saw_writeback: bool  # a sample caught pages under writeback
    timeout_s: float
    scope: str  # what the counts count, and why
    system_wide: bool
    system_dirty_bytes: int  # /proc/meminfo Dirty right after the writes
    filesystem: str
    rules: Rules


def watch_dirty(
    path: str | os.PathLike[str],
    nbytes: int,
    rules: Rules,
    filesystem: str,
    every: float = 0.25,
    timeout: float | None = None,
) -> DirtyLife:
    """Write ``nbytes`` through a shared mapping of a new ``path``; plot its dirty pages live
    until they are clean again or ``timeout`` passes (default: the flusher's longest wait
    plus 10 s, or 60 s where the settings are unknown)."""
    path = Path(path)
    try:
        with open(path, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, nbytes)
            os.fsync(f.fileno())
        if timeout is None:
            wait = rules.longest_wait
            timeout = 60.0 if wait is None else wait + 10.0
        sampler, scope = dirty_sampler(path, interval=0.01)
        system_wide = getattr(sampler, "system_wide", False)
        pages = nbytes // _PAGE
        draw = LiveFigure(lambda ax: draw_life(sampler, rules, ax), every=every, figsize=(9, 3.4))
        with sampler, draw as live:
            baseline = int(sampler.dirty[-1]) if system_wide else 0
            with open(path, "r+b") as f, mmap.mmap(f.fileno(), nbytes) as mm:
                mm[:] = b"\xab" * nbytes  # every page dirty
                sampler.mark("written")
                written = time.perf_counter()
            system_dirty = meminfo_dirty()[0]
            clean = None
            while time.perf_counter() - written < timeout:
                live.update()
                time.sleep(0.05)
                settled = sampler.dirty[-1] <= baseline + (pages // 2 if system_wide else 0)
                if settled and sampler.writeback[-1] == 0:
                    clean = time.perf_counter() - written
                    sampler.mark("clean")
                    break
            time.sleep(0.3)  # a few samples after the end, so the plot shows it
    finally:
        path.unlink(missing_ok=True)  # counted, or failed: either way not needed, not left
    times, dirty = sampler.times, sampler.dirty
    at = next(t for t, label in sampler.marks if label == "written")
    after = times >= at
    peak = int(dirty[after].max()) if after.any() else 0
    # writeback began when a tenth of the pages had gone, or a sample caught it under way
    falling = np.flatnonzero(after & ((dirty < 0.9 * peak) | (sampler.writeback > 0)))
    started = float(times[falling[0]] - at) if len(falling) else None
    return DirtyLife(
        pages,
        peak,
        started,
        clean,
        bool((sampler.writeback[after] > 0).any()),
        timeout,
        scope,
        system_wide,
        system_dirty,
        filesystem,
        rules,
    )


def draw_life(sampler, rules: Rules, ax) -> None:
    """One frame of the dirty-page plot: cached as an area, dirty and writeback as lines."""
    ax.clear()
    times, dirty, writeback = sampler.times, sampler.dirty, sampler.writeback
    n = min(len(times), len(dirty), len(writeback))  # the sampler thread may add a row between
    times, scale = times[:n], _PAGE / 2**20
    if hasattr(sampler, "cached"):
        cached = sampler.cached[:n] * scale
        ax.fill_between(times, cached, step="post", color="0.85", label="cached (the file)")
    ax.plot(times, dirty[:n] * scale, drawstyle="steps-post", color="tab:orange", lw=2.2,
            label="dirty")  # fmt: skip
    ax.plot(times, writeback[:n] * scale, drawstyle="steps-post", color="tab:green", lw=1.5,
            label="under writeback")  # fmt: skip
    under = writeback[:n] * scale
    if n and under.max() > 0:  # the burst is a few ms wide: point at it
        at = int(under.argmax())
        ax.annotate(
            f"{under[at]:.3g} MiB under writeback",
            (times[at], under[at] / 2),
            xytext=(-14, 0),
            textcoords="offset points",
            ha="right",
            va="center",
            fontsize=8,
            color="tab:green",
            arrowprops={"arrowstyle": "->", "color": "tab:green"},
        )
    written = [t for t, label in sampler.marks if label == "written"]
    expire, period = rules.expire_s, rules.period_s
    if written and expire.known and period.known:
        start = written[0] + expire.value
        ax.axvspan(start, start + period.value, color="tab:blue", alpha=0.12,
                   label="expiry rule: written back in here")  # fmt: skip
    # "clean" sits at the start of the expiry band: above the axes, it hides neither
    draw_marks(ax, [(at, label) for at, label in sampler.marks if label != "clean"])
    for at, label in sampler.marks:
        if label == "clean":
            ax.axvline(at, color="0.6", linestyle=":", linewidth=1)
            ax.annotate(label, (at, 1), xycoords=("data", "axes fraction"), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8,
                        color="0.35")  # fmt: skip
    ax.set_xlabel("seconds")
    system = getattr(sampler, "system_wide", False)
    ax.set_ylabel("MiB, whole system" if system else "MiB of the file")
    ax.set_title("/proc/meminfo Dirty and Writeback" if system else "the file's pages (cachestat)",
                 pad=14)  # fmt: skip
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)


# -- the blog's writer, flush policies ------------------------------------------------------


def blog_records(n: int) -> list[tuple[str, float]]:
    """The first ``n`` QM9 molecules as the blog writes them: SMILES and U0."""
    from mmlab.data import qm9

    u0 = qm9.FIELDS.index("U0")
    return [(smiles, y[u0]) for smiles, y in qm9.records("qm9pack", limit=n)]


def reserve(path: str | os.PathLike[str], size: int) -> None:
    """A new file of ``size`` zero bytes with its blocks reserved (``posix_fallocate``: no
    room is an OSError here, not a SIGBUS at a later write through a mapping) and written,
    so a later flush writes only data, with no block to allocate or convert; then dropped
    from the page cache."""
    with open(path, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, size)
        f.write(bytes(size))
        os.fsync(f.fileno())
        # out of the page cache: the writer's faults bring pages in as the blog's do (write()
        # above may have cached them as large folios, which a store dirties whole)
        os.posix_fadvise(f.fileno(), 0, size, os.POSIX_FADV_DONTNEED)


def write_blog(path: str | os.PathLike[str], records, flush_every: int | None = 1) -> None:
    """The blog's writer into an existing file (``reserve``): its layout, a flush every
    ``flush_every`` records (None: once, at the end)."""
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        offset = 0
        for n, (smiles, value) in enumerate(records, start=1):
            raw = smiles.encode("utf-8")
            mm[offset : offset + 4] = len(raw).to_bytes(4, sys.byteorder)
            mm[offset + 4 : offset + 4 + len(raw)] = raw
            _VALUE.pack_into(mm, offset + 4 + len(raw), value)
            offset += 12 + len(raw)
            if flush_every is not None and n % flush_every == 0:
                mm.flush()
        mm.flush()


def pages_model(record_sizes: list[int], k: int | None, page_size: int = _PAGE) -> int:
    """Bytes a flush every ``k`` records dirties: each flush, the pages its records touched."""
    k = len(record_sizes) if k is None else k
    pages, start = 0, 0
    for first in range(0, len(record_sizes), k):
        end = start + sum(record_sizes[first : first + k])
        pages += (end - 1) // page_size - start // page_size + 1
        start = end
    return pages * page_size


@dataclass(frozen=True)
class WriterRuns:
    """The blog's writer under several flush policies: medians over interleaved rounds."""

    data_bytes: int
    records: int
    flushes: dict[str, int]
    write_bytes: dict[str, int]  # bytes the process dirtied (counted once per dirtying)
    device_bytes: dict[str, int] | None  # bytes the device wrote (whole device, all processes)
    device_unknown: str | None
    seconds: dict[str, float]
    cpu_s: dict[str, float]
    idle_bytes: int | None = None  # the device's bytes in an idle interval as long as the
    idle_s: float = 0.0  # slowest policy's median, right after the rounds

    def amplification(self, name: str) -> float:
        return self.write_bytes[name] / self.data_bytes

    def lines(self) -> list[str]:
        out = [
            f"{self.records:,} records, {self.data_bytes:,} bytes of data in the blog's layout "
            f"(each flush count includes the final flush at the end)"
        ]
        for name in self.flushes:
            device = (
                "device n/a"
                if self.device_bytes is None
                else f"device wrote {self.device_bytes[name] / 2**20:.3f} MiB"
            )
            out.append(
                f"  {name:<18} {self.flushes[name]:>6,} "
                f"{'flushes' if self.flushes[name] > 1 else 'flush'}: dirtied "
                f"{self.write_bytes[name] / 2**20:.3f} MiB "
                f"({self.amplification(name):.2f}x the data), {device}, wall "
                f"{self.seconds[name] * 1e3:.1f} ms, CPU {self.cpu_s[name] * 1e3:.1f} ms"
            )
        if self.device_unknown:
            out.append(f"  device bytes not read here: {self.device_unknown}")
        elif self.idle_bytes is not None:
            out.append(
                f"  idle for {self.idle_s:.1f} s right after, the device wrote "
                f"{self.idle_bytes / 2**20:.3f} MiB: the device counts every process's writes "
                "and the file system's metadata, so its bytes are not this writer's alone"
            )
        return out

    def merged(self, other: WriterRuns) -> WriterRuns:
        """These rows with ``other``'s added (or replacing the ones of the same name)."""

        def both(a, b):
            return None if a is None or b is None else a | b

        return WriterRuns(
            self.data_bytes,
            self.records,
            self.flushes | other.flushes,
            self.write_bytes | other.write_bytes,
            both(self.device_bytes, other.device_bytes),
            self.device_unknown,
            self.seconds | other.seconds,
            self.cpu_s | other.cpu_s,
            self.idle_bytes,
            self.idle_s,
        )

    def plot(self, ax=None):
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(8, 1.6 + 0.55 * len(self.flushes)), layout="constrained")
        names = list(self.flushes)
        y = np.arange(len(names))
        dirtied = [self.write_bytes[n] / 2**20 for n in names]
        bars = ax.barh(y - 0.2, dirtied, 0.4, label="dirtied by the writer", color="tab:purple")
        ax.bar_label(bars, [f"{v:.3f} MiB" for v in dirtied], fontsize=7, padding=2)
        if self.device_bytes is not None:
            device = [self.device_bytes[n] / 2**20 for n in names]
            bars = ax.barh(
                y + 0.2, device, 0.4, label="device wrote (all processes)", color="tab:gray"
            )
            # a bar of 0 bytes has no width on a log scale: no label to place
            shown = [f"{v:.3f} MiB" if v > 0 else "" for v in device]
            ax.bar_label(bars, shown, fontsize=7, padding=2, color="dimgray")
        ax.axvline(self.data_bytes / 2**20, color="k", linestyle=":", label="the data")
        ax.set_xscale("log")
        ax.margins(x=0.25)
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlabel("MiB written for the same data (log scale)")
        ax.figure.legend(fontsize=8, loc="outside lower center", ncol=3)
        ax.set_title("the blog's writer: bytes to storage by flush policy", fontsize=10)
        return ax


def _policy_name(k: int | None) -> str:
    return "flush once" if k is None else "flush per record" if k == 1 else f"flush every {k}"


def blog_writer(
    records: list[tuple[str, float]],
    folder: str | os.PathLike[str],
    policies: tuple[int | None, ...] = (1, None),
    repeats: int | None = None,
    idle: bool = True,
) -> WriterRuns:
    """Write ``records`` with the blog's writer once per policy (records per flush, None:
    once at the end) in interleaved rounds (no warm-up: each call writes a fresh file, on
    ``folder``'s disk); then, with ``idle``, count the device's writes over an idle interval
    as long as the slowest policy's median (at most 5 s)."""
    size = seedformat.data_size(records)
    names = {_policy_name(k): k for k in policies}
    device: dict[str, list[int | None]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="writer_", dir=folder) as tmp:
        # the device's bytes from the end of one call's setup to the next setup (as in
        # flushcost): the sysfs reads stay out of the timed calls
        counting: list = []

        def counted() -> None:
            if counting:
                name, writes = counting.pop()
                writes.__exit__(None, None, None)
                device[name].append(writes.nbytes)

        def writer(name: str):
            return lambda: write_blog(Path(tmp) / "blog.dat", records, names[name])

        def fresh(name: str) -> None:
            counted()
            reserve(Path(tmp) / "blog.dat", size)
            counting.append((name, DeviceWrites(tmp).__enter__()))

        result = compare({name: writer(name) for name in names}, repeats, setup=fresh, warmup=0)
        counted()
        unknown = DeviceWrites(tmp).unknown
        idle_s = min(5.0, max(result[name].seconds.median for name in names)) if idle else 0.0
        with DeviceWrites(tmp) as quiet:
            time.sleep(idle_s)
    n = len(records)
    return WriterRuns(
        size,
        n,
        {name: 1 if k is None else n // k + 1 for name, k in names.items()},
        {
            name: int(statistics.median(m.write_bytes for m in result[name].measurements))
            for name in names
        },
        None
        if unknown
        else {name: int(statistics.median(v[-result.rounds :])) for name, v in device.items()},
        unknown,
        {name: result[name].seconds.median for name in names},
        {name: result[name].user_s.median + result[name].system_s.median for name in names},
        quiet.nbytes if idle else None,
        idle_s,
    )
