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
heap. (Its cap is checked against the chunk, the request plus glibc's header rounded up to
whole pages: a block of exactly 32 MiB is over it and stays mapped.) The history of a process
decides, so ``run(block_bytes, count)`` measures in a fresh child process: it ``malloc``s
``count`` blocks (writing every byte, so they are resident), then a small block that pins the
heap's top, ``free``s the blocks, does both again (the second round shows the raised
threshold), then ``malloc_trim(0)``. After each step it counts ``/proc/self/maps`` lines and
glibc's mapped blocks (``hblks`` of ``mallinfo2``, glibc 2.33+, or of ``mallinfo`` before)
and reads RSS, into records allocated beforehand so that measuring maps nothing itself.
``BlockRun.describe()`` says what happened in words, ``merging()`` whether the blocks' mappings
merged into one VMA, ``fit`` caps a block count to the memory a child may use (``try_size``
runs, plots and describes one size within that cap, for a widget), and
``plot(runs)`` draws the three counts for several runs. ``round_2_mapped(run)`` says how many
of its second round's blocks glibc mapped ("all", "some", "none") and ``why_round_2`` why;
``usable_memory(report)`` says how much memory a child may take now (the lower of MemAvailable
and the cgroup's headroom) and ``claim_mmap_vs_malloc`` words the course's claim from three runs.
(Why touching fresh anonymous memory takes the faults it does: ``mmlab.course.thp``.)
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np

__all__ = [
    "THRESHOLD_CAP",
    "BlockRun",
    "claim_mmap_vs_malloc",
    "fit",
    "plot",
    "round_2_mapped",
    "run",
    "try_size",
    "usable_memory",
    "why_round_2",
]

_CHILD = """\
import ctypes, json, mmap, platform, sys
from array import array
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size, count = int(sys.argv[1]), int(sys.argv[2])
FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
class Info2(ctypes.Structure):  # struct mallinfo2 (glibc 2.33+): ten size_t counters
    _fields_ = [(n, ctypes.c_size_t) for n in FIELDS]
class Info(ctypes.Structure):  # struct mallinfo (older glibc): ten ints; hblks still fits
    _fields_ = [(n, ctypes.c_int) for n in FIELDS]
counter = next((n for n in ("mallinfo2", "mallinfo") if hasattr(libc, n)), None)
if counter:
    info = getattr(libc, counter)
    info.restype = Info2 if counter == "mallinfo2" else Info
names = ["start"] + [f"{p} {r}" for r in (1, 2) for p in ("malloc", "free") for _ in range(count)]
names.append("malloc_trim")
# Preallocated: recording a step must not make CPython's allocator map a new arena,
# which would add a line to /proc/self/maps that no malloc'ed block made.
maps, anon, rss, hblks = (array("q", bytes(8 * len(names))) for _ in range(4))
blocks = array("Q", bytes(8 * count))
k = 0
def step():
    global k
    with open("/proc/self/maps", "rb") as f:
        lines = f.read().splitlines()
    maps[k] = len(lines)
    anon[k] = 0
    for line in lines:
        fields = line.split()
        if len(fields) == 5:  # no path: anonymous memory (malloc's mappings, not the heap)
            low, high = fields[0].split(b"-")
            anon[k] += int(high, 16) - int(low, 16)
    del lines
    with open("/proc/self/statm", "rb") as f:
        rss[k] = int(f.read().split()[1]) * mmap.PAGESIZE
    hblks[k] = info().hblks if counter else -1
    k += 1
step()
for round in (1, 2):
    for i in range(count):
        blocks[i] = libc.malloc(size)
        ctypes.memset(blocks[i], 1, size)
        step()
    pin = libc.malloc(min(size, 65536))  # big enough to go on top, not into an old hole
    for i in range(count):
        libc.free(blocks[i])
        step()
if hasattr(libc, "malloc_trim"):  # glibc's; other C libraries have none
    libc.malloc_trim(0)
step()
libc_name = " ".join(platform.libc_ver()).strip() or "not glibc"
print(json.dumps([names, list(maps), list(anon), list(rss), list(hblks), counter, libc_name]))
"""

# glibc's DEFAULT_MMAP_THRESHOLD_MAX: freeing a mapped block raises the threshold only up to it
THRESHOLD_CAP = 4 * 2**20 * ctypes.sizeof(ctypes.c_long)


@dataclass(frozen=True)
class BlockRun:
    """One child's run: after each step, its name, mapping count and RSS in bytes."""

    block_bytes: int
    count: int
    steps: list[str]
    maps: np.ndarray
    rss: np.ndarray
    mapped_blocks: np.ndarray | None  # glibc's own count of mmapped blocks (hblks)
    counter: str | None = "mallinfo2"  # where mapped_blocks came from: mallinfo2 or mallinfo
    libc: str = "glibc"  # the child's C library, as platform.libc_ver() names it
    anon: np.ndarray | None = None  # bytes in anonymous mappings (maps lines with no path)

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

        def anon_after(step: str) -> int | None:
            k = self.steps.index(step) - 1 + self.count
            return None if self.anon is None else int(self.anon[k] - self.anon[0])

        return {
            "maps_added_round_1": maps1 - start_maps,
            "maps_after_free_1": self.at("free 1")[0] - start_maps,
            "anon_added_round_1": anon_after("malloc 1"),
            "anon_after_free_1": anon_after("free 1"),
            "mmapped_blocks_round_1": mapped_after("malloc 1"),
            "mmapped_blocks_round_2": mapped_after("malloc 2"),
            "mmapped_blocks_after_free_1": mapped_after("free 1"),
            "rss_grown": rss1 - start_rss,
            "rss_kept_after_free_1": self.at("free 1")[1] - start_rss,
            "rss_kept_after_free_2": self.at("free 2")[1] - start_rss,
            "rss_kept_after_trim": self.at("malloc_trim")[1] - start_rss,
            "counter": self.counter,
            "libc": self.libc,
        }

    def merging(self) -> str:
        """Which case happened to the /proc/self/maps lines, from glibc's count and the lines."""
        s = self.summary()
        lines, mapped, anon = (
            s["maps_added_round_1"],
            s["mmapped_blocks_round_1"],
            s["anon_added_round_1"],
        )
        grew = f"anonymous mappings grew {_size(anon)}" if anon is not None else ""
        if mapped is None:
            return f"{lines:+} line(s), {grew}; glibc's count of mapped blocks is unavailable"
        each = f"{anon / mapped / 1024:,.0f} KiB per block" if mapped and anon else ""
        if mapped == 0:
            return f"no block had its own mapping: {lines:+} line(s), {grew}"
        if lines <= 0:
            return (
                f"{mapped} blocks mapped, {grew} ({each}), {lines:+} lines: the kernel merged "
                "each new mapping into the adjacent anonymous VMA already there"
            )
        if lines < mapped:
            return (
                f"{mapped} blocks mapped, {grew} ({each}), {lines:+} line(s): the kernel put "
                f"each new mapping next to the last and merged them into {lines} VMA(s)"
            )
        return (
            f"{mapped} blocks mapped, {grew} ({each}), {lines:+} lines: not merged, the kernel "
            "left gaps between them (e.g. 2 MiB alignment of large anonymous mappings)"
        )

    def describe(self) -> str:
        """The summary in words: blocks mapped per round, lines added, RSS after free and trim."""
        s, size = self.summary(), _size(self.block_bytes)
        grown = max(s["rss_grown"], 1)
        text = [
            f"{self.count} x {size} ({self.libc}, counted with {self.counter or 'nothing'}):",
            f"  round 1: {self.merging()}",
            f"  round 2: glibc mapped {s['mmapped_blocks_round_2']} block(s)",
            f"  RSS grew {_size(s['rss_grown'])}; kept {s['rss_kept_after_free_1'] / grown:.0%} "
            f"after free 1, {s['rss_kept_after_free_2'] / grown:.0%} after free 2, "
            f"{max(s['rss_kept_after_trim'], 0) / grown:.0%} after malloc_trim(0)",
        ]
        freeing = [int(m) for m, n in zip(self.maps, self.steps, strict=True) if n == "free 1"]
        if freeing and max(freeing) > self.at("malloc 1")[0]:
            text.append(
                f"  while freeing: up to {max(freeing) - self.at('malloc 1')[0]:+} line(s), as "
                "unmapping a block out of a merged VMA splits it in two"
            )
        again = s["mmapped_blocks_round_1"] and s["mmapped_blocks_round_2"]
        if again and self.block_bytes <= THRESHOLD_CAP:
            text.append(
                f"  mapped again in round 2: the block plus glibc's header, rounded up to whole "
                f"pages, is over the threshold's cap ({_size(THRESHOLD_CAP)}), so freeing it "
                "did not raise the threshold"
            )
        return "\n".join(text)


def fit(block_bytes: int, count: int, usable: int | None) -> int:
    """How many of ``count`` blocks a child can hold in half of ``usable`` bytes (at least 1)."""
    if usable is None:
        return count
    return max(1, min(count, usable // 2 // block_bytes))


# Where neither MemAvailable nor a cgroup's headroom can be read: a size every laptop has free
_CAUTIOUS = 256 * 2**20


def usable_memory(report) -> tuple[int, str]:
    """Bytes a child may take now, and where the number comes from: the lower of MemAvailable
    and each cgroup's headroom (its limit minus what the cgroup already uses: a container's
    MemAvailable is the host's); a cautious 256 MiB where neither can be read."""
    room = []
    available = report.memory_available
    if available.known and isinstance(available.value, int):
        room.append((available.value, f"{_size(available.value)} available (MemAvailable)"))
    room += _cgroup_headroom()
    return min(room, default=(_CAUTIOUS, "no memory figure readable here: a cautious 256 MiB"))


def _cgroup_headroom() -> list[tuple[int, str]]:
    """(limit - usage, where) for each cgroup on this process's path that has a limit."""
    from pathlib import Path

    from mmlab.instruments import sysinfo

    try:
        dirs = sysinfo._cgroup_dirs("memory", Path("/proc/self"), Path("/"))
    except (OSError, ValueError):
        return []
    found = []
    for leaf, top, version in dirs:
        limit_name, used_name = (
            ("memory.max", "memory.current")
            if version == 2
            else ("memory.limit_in_bytes", "memory.usage_in_bytes")
        )
        for d in sysinfo._ancestors(leaf, top):
            try:
                limit = (d / limit_name).read_text().strip()
                used = int((d / used_name).read_text())
            except (OSError, ValueError):
                continue
            if limit != "max" and int(limit) < 2**62:  # v1 says "no limit" with ~2**63
                room = max(int(limit) - used, 0)
                found.append((room, f"{_size(room)} left under the cgroup limit ({d})"))
    return found


def claim_mmap_vs_malloc(small: BlockRun, large: BlockRun) -> dict[str, str]:
    """The claim "use mmap in place of malloc", worded from a run of small and of large blocks:
    ``measured`` and ``verdict`` for ``results.claim``."""
    s, g = small.summary(), large.summary()
    kept_small = s["rss_kept_after_free_1"] / max(s["rss_grown"], 1)
    kept_large = g["rss_kept_after_free_1"] / max(g["rss_grown"], 1)
    measured = (
        f"{large.count} blocks of {_size(large.block_bytes)}: glibc mapped "
        f"{g['mmapped_blocks_round_1']} and RSS kept {kept_large:.0%} after free; "
        f"{small.count} blocks of {_size(small.block_bytes)}: {s['mmapped_blocks_round_1']} "
        f"mapped, RSS kept {kept_small:.0%} after free"
    )
    # Unmapped blocks give back (nearly) all; heap blocks under the pin keep (nearly) all:
    # the halfway mark tells the two apart whatever the interpreter's own pages add.
    if kept_large < 0.5 < kept_small:
        verdict = (
            "misleading: malloc itself uses a private anonymous mapping per large block and "
            "unmaps it on free; small blocks come from the heap and stay resident after free"
        )
    else:
        verdict = f"not shown here: RSS kept {kept_large:.0%} (large) and {kept_small:.0%} (small)"
    return {"measured": measured, "verdict": verdict}


def try_size(block_bytes: int, count: int, usable: int | None) -> BlockRun:
    """Run, plot and describe ``count`` blocks (fewer if they would not ``fit``): a widget's."""
    n = fit(block_bytes, count, usable)
    if n < count:
        print(f"{count} blocks would not fit in half of {_size(usable or 0)} usable: running {n}")
    r = run(block_bytes, n)
    plot([r])
    print(r.describe())
    return r


def run(block_bytes: int, count: int, timeout: float = 60.0) -> BlockRun:
    """Measure ``count`` blocks of ``block_bytes`` malloc'ed and freed in a fresh child."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(block_bytes), str(count)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        how = "killed (out of memory?)" if done.returncode < 0 else "failed"
        raise RuntimeError(
            f"the malloc child {how} ({done.returncode}): {done.stderr[-500:] or 'no message'}"
        )
    names, maps, anon, rss, mapped, counter, libc = json.loads(done.stdout)
    mapped = None if counter is None else np.array(mapped)
    arrays = (np.array(maps), np.array(rss), mapped)
    return BlockRun(block_bytes, count, names, *arrays, counter, libc, np.array(anon))


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if abs(n) >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n / 2**10:.4g} KiB"


def plot(runs: list[BlockRun], axes=None):
    """glibc's mapped blocks, /proc/self/maps lines, anonymous mapped size and RSS after each
    step, one line per run (drawn by ``mmlab.course.blockplot``)."""
    from mmlab.course import blockplot

    return blockplot.plot(runs, axes)


def round_2_mapped(r: BlockRun) -> str | None:
    """How many of round 2's blocks glibc mapped: "all", "some" or "none" (None: no count)."""
    mapped = r.summary()["mmapped_blocks_round_2"]
    if mapped is None:
        return None
    return "none" if mapped == 0 else "all" if mapped >= r.count else "some"


def why_round_2(r: BlockRun) -> str:
    """Why round 2 of ``r`` mapped as many blocks as it did: the dynamic threshold, measured."""
    s, size = r.summary(), _size(r.block_bytes)
    first, second = s["mmapped_blocks_round_1"], s["mmapped_blocks_round_2"]
    if first is None:
        return f"{r.libc} gives no count of mapped blocks (mallinfo2): this run cannot tell"
    fixed = [k for k in ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES") if k in os.environ]
    setting = f" ({', '.join(fixed)} is set here: a fixed threshold)" if fixed else ""
    if first == 0:
        return (
            f"round 1 mapped none of the {r.count} blocks of {size}: glibc's threshold here "
            f"is already above {size}{setting}, so every block came from the heap"
        )
    if second == 0:
        return (
            f"round 1 mapped {first} of {r.count} blocks of {size} (over the starting "
            f"threshold, 128 KiB); freeing a mapped block raised the threshold to its size, "
            f"under the cap of {_size(THRESHOLD_CAP)}, so round 2's {r.count} blocks came "
            "from the heap: 0 mapped. glibc learns from the program's past frees"
        )
    # the mapped chunk: the block and glibc's header, rounded up to whole pages; the cap is
    # a whole number of pages, so the rounding cannot carry a chunk over it
    over = r.block_bytes + 2 * ctypes.sizeof(ctypes.c_size_t) > THRESHOLD_CAP
    why = (
        f"the block plus glibc's header is over the threshold's cap ({_size(THRESHOLD_CAP)}): "
        "freeing it could not raise the threshold that far"
        if over
        else f"the threshold did not rise here{setting}"
        + ("" if fixed else ", and this run cannot tell why")
    )
    return f"round 1 mapped {first}, round 2 {second} of {r.count} blocks of {size}: {why}"
