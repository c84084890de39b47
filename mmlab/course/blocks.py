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
``why_faults`` why touching a fresh private anonymous mapping took as many page faults as it
did (one per page, or one per huge page).
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
    "fit",
    "plot",
    "round_2_mapped",
    "run",
    "try_size",
    "why_faults",
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
            f"after free, {max(s['rss_kept_after_trim'], 0) / grown:.0%} after malloc_trim(0)",
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


def _phase_x(steps: list[str]) -> tuple[np.ndarray, list[str]]:
    """x of each step: phase k spans [k, k + 1), so runs of any block count line up; a value
    holds from its step to the next (drawn as steps)."""
    phases = list(dict.fromkeys(steps))
    x = np.zeros(len(steps))
    for k, name in enumerate(phases):
        where = [i for i, s in enumerate(steps) if s == name]
        x[where] = k + np.arange(len(where)) / len(where)
    return x, phases


def plot(runs: list[BlockRun], axes=None):
    """glibc's mapped blocks, /proc/self/maps lines, anonymous mapped size and RSS after each
    step, one line per run.

    The x axis is the phases (malloc, free, malloc again, free again, trim), each one unit
    wide whatever the block count; sizes are percentages of the round's blocks' total size.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if axes is None:
        _, axes = plt.subplots(1, 4, figsize=(15, 3.4), layout="constrained")
    # Runs often coincide (two sizes both mapped, or neither): thick lines under thin ones.
    styles = [("-", 4.5), ("--", 2.5), (":", 1.8), ("-.", 1.2)]
    for n, r in enumerate(runs):
        x, phases = _phase_x(r.steps)
        x = np.append(x, len(phases))  # the last value holds to the right edge
        style, width = styles[n % len(styles)]
        kw = {"drawstyle": "steps-post", "linestyle": style, "linewidth": width, "zorder": 2 + n}
        kw["label"] = f"{r.count} x {_size(r.block_bytes)}"
        if r.mapped_blocks is not None:
            axes[0].plot(
                x, np.append(r.mapped_blocks, r.mapped_blocks[-1]) - r.mapped_blocks[0], **kw
            )
        axes[1].plot(x, np.append(r.maps, r.maps[-1]) - r.maps[0], **kw)
        for ax, y in ((axes[2], r.anon), (axes[3], r.rss)):
            if y is not None:
                ax.plot(x, 100 * (np.append(y, y[-1]) - y[0]) / (r.count * r.block_bytes), **kw)
    counter = next((r.counter for r in runs if r.counter), None)
    titles = (
        f"blocks glibc mapped ({counter})",
        "/proc/self/maps lines added",
        "anonymous mappings added (size)",
        "RSS added",
    )
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xticks(np.arange(len(phases)) + 0.5, phases, fontsize=8, rotation=30, ha="right")
        ax.set_xlim(0, len(phases))
        for k in range(1, len(phases)):
            ax.axvline(k, color="#ccc", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.grid(False, axis="x")  # the phase boundaries are the vertical lines
    for ax in axes[:2]:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("count")
    axes[1].set_ylabel("lines")
    axes[2].set_ylabel("% of the round's blocks")
    axes[3].set_ylabel("% of the round's blocks")
    legend = {"fontsize": 8, "frameon": False, "ncol": len(runs)}
    if axes[0].figure.get_layout_engine() is not None:  # below the panels, clear of the lines
        handles, labels = axes[-1].get_legend_handles_labels()  # every run, once
        axes[0].figure.legend(handles, labels, loc="outside lower center", **legend)
    else:
        axes[0].legend(**legend)
    if counter is None:
        axes[0].text(
            0.5,
            0.5,
            "glibc's count unavailable\n(not glibc?)",
            ha="center",
            transform=axes[0].transAxes,
        )
    return axes


def round_2_mapped(r: BlockRun) -> str:
    """How many of round 2's blocks glibc mapped: "all", "some" or "none" (or why unknown)."""
    mapped = r.summary()["mmapped_blocks_round_2"]
    if mapped is None:
        return "not countable here"
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


def why_faults(faults: int, pages: int, huge_bytes: int, thp: str, page: int = 4096) -> str:
    """Why touching ``pages`` fresh private anonymous pages took ``faults`` minor faults.

    ``huge_bytes`` is the VMA's ``AnonHugePages`` (smaps), ``thp`` the setting of
    /sys/kernel/mm/transparent_hugepage/enabled ("always", "madvise", "never" or "unknown").
    """
    huge_pages = 2**21 // page
    if faults < 0.9 * pages and huge_bytes:
        return (
            f"{faults:,} faults for {pages:,} pages: {huge_bytes / 2**20:g} MiB of the mapping "
            f"sits in 2 MiB huge pages (THP {thp!r} here), and one fault filled each of them: "
            f"{huge_pages} pages of {page:,} bytes at once"
        )
    if faults < 0.9 * pages:
        return (
            f"{faults:,} faults for {pages:,} pages, yet no 2 MiB huge page: the kernel gave "
            "the mapping folios of several pages, each filled in one fault (multi-size THP, "
            "Linux 6.8+: /sys/kernel/mm/transparent_hugepage/hugepages-*kB/enabled)"
        )
    reason = {
        "always": "THP is 'always' here, but no whole 2 MiB-aligned range of the mapping got "
        "a huge page (it may hold none, or the kernel had no free 2 MiB block at hand)",
        "madvise": "THP is 'madvise' here: only mappings that ask with MADV_HUGEPAGE get huge "
        "pages, and this one did not ask",
        "never": "THP is 'never' here: no huge pages at all",
    }.get(thp, "the THP setting is unknown here, and the VMA holds no huge page")
    extra = faults - pages
    more = f"; the {extra:,} extra are the interpreter's own while measuring" if extra > 0 else ""
    return (
        f"{faults:,} faults for {pages:,} pages: one per page, each giving it one zeroed page of "
        f"{page:,} bytes at its first write{more}. {reason}"
    )
