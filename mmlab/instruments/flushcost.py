"""What each way of flushing a mapping guarantees and costs, measured side by side.

Before every call the whole mapping is written (all its pages dirty), untimed; then one of:

* **no flush**: nothing is on storage yet; the kernel writes it back later, by its own rules;
* **msync(MS_ASYNC)**: on Linux since 2.6.19 it does nothing: the pages stay dirty;
* **flush() = msync(MS_SYNC)**: writes the mapping's dirty pages and waits for the device;
* **flush(range)**: the same on the first ``range_fraction`` of the mapping only;
* **os.fsync**: writes the file's dirty pages and its metadata (size, times; through the
  journal where the file system has one), and waits;
* **os.fdatasync**: the same without the metadata a later read does not need (the times).

``flush_race`` runs them in interleaved rounds (``mmlab.compare``): wall time and CPU time per
call, the file's pages still dirty after it (cachestat), and the bytes the block device wrote
from the call to the next one's setup (``DeviceWrites``: the whole device, every process's
writes). Those two are read between calls, outside the timed region. Where a counter is
unavailable the race says why. ``compare`` rotates a fixed order, so each call always follows
the same neighbour; to keep the neighbour from mattering, the untimed setup first makes every
page clean (``fsync``) and then dirties them all again, so every call starts from the same
state whatever ran before it.
"""

from __future__ import annotations

import mmap
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmlab.instruments.compare import compare
from mmlab.instruments.stats import BenchResult
from mmlab.instruments.writeback import MS_ASYNC, DeviceWrites, dirty_pages, msync

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["ARMS", "FlushRace", "flush_race"]

ARMS = {
    "no flush": "nothing: on storage only when the kernel writes it back",
    "msync(MS_ASYNC)": "nothing on Linux (a no-op since 2.6.19)",
    "flush() = msync(MS_SYNC)": "the mapping's data is on storage when it returns",
    "flush(range)": "only that range's data is on storage",
    "os.fsync": "the file's data and metadata are on storage",
    "os.fdatasync": "the data, and the metadata needed to read it back, are on storage",
}
_PAGE = mmap.PAGESIZE


@dataclass(frozen=True)
class FlushRace:
    """The race's table, with the counters read between the calls (one value per round)."""

    result: BenchResult
    nbytes: int  # bytes written (all pages dirtied) before each call
    range_bytes: int
    dirty_after: dict[str, list[int]]  # the file's dirty pages right after each call
    device_bytes: dict[str, list[int]]  # bytes the device wrote during each call
    dirty_unknown: str | None  # why dirty pages could not be counted
    device_unknown: str | None  # why the device's bytes could not be read

    def median(self, counter: str, name: str) -> float | None:
        """The median of ``counter`` ("dirty_after" or "device_bytes") for call ``name``;
        None where it was not counted."""
        values = getattr(self, counter).get(name)
        return statistics.median(values) if values else None

    def cpu_s(self, name: str) -> float:
        """Median CPU seconds (user + system) of one call of ``name``."""
        row = self.result[name]
        return row.user_s.median + row.system_s.median

    def values(self) -> dict:
        """Medians per call, keyed for a notebook's record (None where uncounted)."""
        values = {"race_pages": self.nbytes // _PAGE, "dirty_counted": not self.dirty_unknown}
        keys = ("none", "async", "sync", "range", "fsync", "fdatasync")
        for name, key in zip(ARMS, keys, strict=True):
            values[f"dirty_after_{key}"] = self.median("dirty_after", name)
            values[f"device_bytes_{key}"] = self.median("device_bytes", name)
            values[f"seconds_{key}"] = self.result[name].seconds.median
        return values

    def lines(self) -> list[str]:
        """One line per call: wall and CPU time, pages left dirty, device bytes."""
        out = [
            f"{self.nbytes / 2**20:g} MiB written through the mapping before each call "
            f"({self.nbytes // _PAGE:,} pages dirty); flush(range) covers the first "
            f"{self.range_bytes / 2**20:g} MiB; medians of {self.result.rounds} rounds"
        ]
        for name in ARMS:
            row = self.result[name]
            dirty = self.median("dirty_after", name)
            device = self.median("device_bytes", name)
            shown_dirty = "n/a" if dirty is None else f"{dirty:,.0f} pages dirty after"
            shown_device = "n/a" if device is None else f"device wrote {device / 2**20:.2f} MiB"
            out.append(
                f"  {name:<25} wall {row.seconds.median * 1e3:8.3f} ms, CPU "
                f"{self.cpu_s(name) * 1e3:7.3f} ms, {shown_dirty}, {shown_device}"
            )
        if self.dirty_unknown:
            out.append(f"  dirty pages: not counted here: {self.dirty_unknown}")
        if self.device_unknown:
            out.append(f"  device bytes: not read here: {self.device_unknown}")
        else:
            out.append(
                "  (device bytes: the whole device, every process's writes during the call "
                "and until the next setup, not only this call's)"
            )
        return out

    def plot(self) -> Figure:
        """Left: wall and CPU time per call; right: pages left dirty and device MiB written."""
        import matplotlib.pyplot as plt

        names = list(ARMS)
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
        y = np.arange(len(names))
        wall = [self.result[n].seconds.median * 1e3 for n in names]
        cpu = [self.cpu_s(n) * 1e3 for n in names]
        left.barh(y - 0.2, wall, 0.4, label="wall time", color="tab:blue")
        left.barh(y + 0.2, cpu, 0.4, label="CPU time", color="tab:orange")
        left.set_xscale("log")
        left.set_yticks(y, names)
        left.invert_yaxis()
        left.set_xlabel("ms per call (median, log scale)")
        left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
        for offset, counter, label, color in (
            (-0.2, "dirty_after", "MiB still dirty after", "tab:red"),
            (0.2, "device_bytes", "MiB the device wrote (all processes)", "tab:gray"),
        ):
            values = [self.median(counter, n) for n in names]
            if all(v is not None for v in values):
                scale = _PAGE if counter == "dirty_after" else 1
                mib = [v * scale / 2**20 for v in values]
                bars = right.barh(y + offset, mib, 0.4, label=label, color=color)
                # two decimals, as .lines() prints the device's MiB
                right.bar_label(bars, [f"{v:.2f}" for v in mib], fontsize=7, padding=2)
        right.margins(x=0.15)
        right.set_yticks(y, [""] * len(names))
        right.invert_yaxis()
        right.set_xlabel("MiB per call (median)")
        right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
        fig.suptitle(f"flushing {self.nbytes / 2**20:g} MiB of dirty pages of a mapping")
        return fig


def _arms(mm: mmap.mmap, fd: int, range_bytes: int) -> dict[str, Callable[[], None]]:
    return {
        "no flush": lambda: None,
        "msync(MS_ASYNC)": lambda: msync(mm, MS_ASYNC),
        "flush() = msync(MS_SYNC)": mm.flush,
        "flush(range)": lambda: mm.flush(0, range_bytes),
        "os.fsync": lambda: os.fsync(fd),
        "os.fdatasync": lambda: os.fdatasync(fd),
    }


def flush_race(
    path: str | os.PathLike[str],
    nbytes: int,
    repeats: int | None = None,
    range_fraction: float = 1 / 8,
) -> FlushRace:
    """Create ``path`` (``nbytes``, at least a page, space reserved), race the flush calls on
    its mapping, and delete it: whatever happens (an error, Ctrl-C), no file is left."""
    if nbytes < _PAGE:
        raise ValueError(f"nbytes must be at least a page ({_PAGE:,} bytes), not {nbytes:,}")
    path = Path(path)
    range_bytes = max(_PAGE, int(nbytes * range_fraction) // _PAGE * _PAGE)
    fd, mm = None, None
    calls: list[tuple[str, int | str, int | None]] = []
    state: dict = {"name": None, "device": None, "fill": 0}
    try:
        with open(path, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, nbytes)  # blocks reserved: no allocation later
            os.fsync(f.fileno())
        fd = os.open(path, os.O_RDWR)
        mm = mmap.mmap(fd, nbytes)
        state["pages"] = np.frombuffer(mm, dtype=np.uint8)

        def note_previous() -> None:
            if state["name"] is not None:
                state["device"].__exit__(None, None, None)
                calls.append((state["name"], dirty_pages(path), state["device"].nbytes))

        def setup(name: str) -> None:
            note_previous()
            os.fsync(fd)  # every page clean first, whatever the previous call left
            state["fill"] = (state["fill"] + 1) % 251
            state["pages"][:] = state["fill"]  # every page dirty again, with new bytes
            state["name"], state["device"] = name, DeviceWrites(path).__enter__()

        arms = _arms(mm, fd, range_bytes)
        result = compare(arms, repeats, setup=setup, title="flush calls, interleaved")
        note_previous()
        device_unknown = DeviceWrites(path).unknown
    finally:
        state.pop("pages", None)  # release the buffer, or the mapping could not be closed
        if mm is not None:
            mm.close()
        if fd is not None:
            os.close(fd)
        path.unlink(missing_ok=True)  # 64 MiB left behind would cost a student's quota
    timed = calls[len(arms) :]  # the first round was the untimed warm-up
    dirty = {name: [d for n, d, _ in timed if n == name] for name in arms}
    device = {name: [b for n, _, b in timed if n == name] for name in arms}
    dirty_unknown = next((d for _, d, _ in timed if isinstance(d, str)), None)
    return FlushRace(
        result,
        nbytes,
        range_bytes,
        {} if dirty_unknown else dirty,
        {} if device_unknown else device,
        dirty_unknown,
        device_unknown,
    )
