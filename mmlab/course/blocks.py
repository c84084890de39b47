"""How malloc gets memory: its own anonymous mapping per large block, the heap for small ones.

``malloc`` (glibc) serves a request of at least ``M_MMAP_THRESHOLD`` bytes with its own
private anonymous mapping and ``free`` unmaps it, so the memory goes back to the kernel at
once. (The kernel merges adjacent anonymous mappings with the same permissions into one VMA,
so several such blocks may show as one line of ``/proc/self/maps``.) Smaller requests come
from the *heap*, one region grown with ``brk``; a freed small block stays in it for reuse,
and the heap can only shrink from its top, so resident memory (RSS) does not fall back
while a later block sits above. ``malloc_trim(0)`` asks glibc to give free heap pages back.

The threshold is *dynamic*: it starts at 128 KiB and, when a mapped block is freed, rises to
that block's size (up to 32 MiB on 64-bit), so the next block of that size comes from the
heap. The history of a process decides, so ``run(block_bytes, count)`` measures in a fresh
child process: it ``malloc``s ``count`` blocks (writing every byte, so they are resident),
then a small block that pins the heap's top, ``free``s the blocks, does both again (the
second round shows the raised threshold), then ``malloc_trim(0)``. After each step it
counts ``/proc/self/maps`` lines and glibc's mapped blocks (``mallinfo2``, glibc 2.33+) and
reads RSS. ``plot(runs)`` draws the three for several runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import numpy as np

__all__ = ["BlockRun", "plot", "run"]

_CHILD = """\
import ctypes, json, mmap, sys
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size, count = int(sys.argv[1]), int(sys.argv[2])
class Info(ctypes.Structure):  # struct mallinfo2: ten size_t counters
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks "
                "fsmblks uordblks fordblks keepcost".split()]
mallinfo2 = getattr(libc, "mallinfo2", None)  # glibc 2.33+
if mallinfo2:
    mallinfo2.restype = Info
steps = []
def step(name):
    with open("/proc/self/maps") as f:
        maps = sum(1 for _ in f)
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * mmap.PAGESIZE
    steps.append((name, maps, rss, mallinfo2().hblks if mallinfo2 else -1))
step("start")
for round in (1, 2):
    blocks = []
    for _ in range(count):
        blocks.append(libc.malloc(size))
        ctypes.memset(blocks[-1], 1, size)
        step(f"malloc {round}")
    pin = libc.malloc(min(size, 65536))  # big enough to go on top, not into an old hole
    for block in blocks:
        libc.free(block)
        step(f"free {round}")
if hasattr(libc, "malloc_trim"):  # glibc's; other C libraries have none
    libc.malloc_trim(0)
step("malloc_trim")
print(json.dumps(steps))
"""


@dataclass(frozen=True)
class BlockRun:
    """One child's run: after each step, its name, mapping count and RSS in bytes."""

    block_bytes: int
    count: int
    steps: list[str]
    maps: np.ndarray
    rss: np.ndarray
    mapped_blocks: np.ndarray | None  # glibc's own count of mmapped blocks (mallinfo2)

    def at(self, step: str) -> tuple[int, int]:
        """(mapping count, RSS) after the last step named ``step``."""
        k = len(self.steps) - 1 - self.steps[::-1].index(step)
        return int(self.maps[k]), int(self.rss[k])

    def summary(self) -> dict:
        """Mappings and glibc's mmapped blocks added (over the start) at the end of each phase,
        RSS grown by the first round and kept after each round's frees and after the trim."""
        start_maps, start_rss = self.at("start")
        maps1, rss1 = self.at("malloc 1")
        mapped = self.mapped_blocks

        def mapped_after(step: str) -> int | None:
            k = self.steps.index(step) - 1 + self.count  # after the round's last step
            return None if mapped is None else int(mapped[k] - mapped[0])

        return {
            "maps_added_round_1": maps1 - start_maps,
            "maps_after_free_1": self.at("free 1")[0] - start_maps,
            "mmapped_blocks_round_1": mapped_after("malloc 1"),
            "mmapped_blocks_round_2": mapped_after("malloc 2"),
            "mmapped_blocks_after_free_1": mapped_after("free 1"),
            "rss_grown": rss1 - start_rss,
            "rss_kept_after_free_1": self.at("free 1")[1] - start_rss,
            "rss_kept_after_free_2": self.at("free 2")[1] - start_rss,
            "rss_kept_after_trim": self.at("malloc_trim")[1] - start_rss,
        }


def run(block_bytes: int, count: int, timeout: float = 60.0) -> BlockRun:
    """Measure ``count`` blocks of ``block_bytes`` malloc'ed and freed in a fresh child."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(block_bytes), str(count)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the malloc child failed ({done.returncode}): {done.stderr[-500:]}")
    steps = json.loads(done.stdout)
    names, maps, rss, mapped = zip(*steps, strict=True)
    mapped = None if mapped[0] < 0 else np.array(mapped)
    return BlockRun(block_bytes, count, list(names), np.array(maps), np.array(rss), mapped)


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n / 2**10:g} KiB"


def _phase_x(steps: list[str]) -> tuple[np.ndarray, list[str]]:
    """x of each step: phase k spans [k, k + 1), so runs of any block count line up."""
    phases = list(dict.fromkeys(steps))
    x = np.zeros(len(steps))
    for k, name in enumerate(phases):
        where = [i for i, s in enumerate(steps) if s == name]
        x[where] = k + (np.arange(1, len(where) + 1) / len(where) if k else 0.5)
    return x, phases


def plot(runs: list[BlockRun], axes=None):
    """glibc's mapped blocks, /proc/self/maps lines and RSS after each step, one line per run.

    The x axis is the phases (malloc, free, malloc again, free again, trim), each one unit
    wide whatever the block count; RSS is a percentage of the round's blocks' total size.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    for r in runs:
        x, phases = _phase_x(r.steps)
        label = f"{r.count} x {_size(r.block_bytes)}"
        if r.mapped_blocks is not None:
            axes[0].plot(x, r.mapped_blocks - r.mapped_blocks[0], marker=".", label=label)
        axes[1].plot(x, r.maps - r.maps[0], marker=".", label=label)
        axes[2].plot(x, 100 * (r.rss - r.rss[0]) / (r.count * r.block_bytes), marker=".")
    titles = ("blocks glibc mapped (mallinfo2)", "/proc/self/maps lines added", "RSS added")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xticks(np.arange(len(phases)) + 0.5, phases, fontsize=8)
        for k in range(1, len(phases)):
            ax.axvline(k, color="#ccc", linewidth=0.8)
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel("count")
    axes[1].set_ylabel("lines")
    axes[2].set_ylabel("% of the round's blocks")
    axes[0].legend(fontsize=8, frameon=False)
    if runs[0].mapped_blocks is None:
        axes[0].text(
            0.5,
            0.5,
            "mallinfo2 unavailable\n(glibc < 2.33?)",
            ha="center",
            transform=axes[0].transAxes,
        )
    return axes
