"""Sharing memory between processes, measured: readers of one mapped file, DataLoader workers.

Notebook 06's helpers. RSS counts every resident page a process maps; USS only the pages no
other process maps; PSS splits each shared page between its sharers, so PSS adds up across
processes. Each splits by what backs the page: *anonymous* memory (heap, copy-on-write copies)
belongs to the processes that map it and is freed when the last one exits; *file-backed*
pages are page cache, which outlives every process that maps it. So the USS of a process
that is the only one mapping a file counts those pages as "unique", yet killing it frees
none of them: they stay cached until the kernel reclaims them.

``Readers`` starts reader processes that map a ``RecordStore`` and read all of it, and
``snapshot`` measures them: the store's pages (``file_memory``), each reader's memory by kind
and the store's pages in the page cache. ``data_pages`` counts the file's pages that hold
records; the rest (the string area's unused room, the padding that starts each section on a
64 KiB boundary, the header) no reader touches, which is why the readers' PSS, summed, sits
under the file's size. ``exit_lines`` and ``pss_lines`` are what the notebook prints;
``why_rss_over_pss``, ``why_first_uss`` and ``why_after_exit`` explain its reveals (what
happened to each prediction, from this run's numbers and the facts that decide it).

The DataLoader workers of the notebook's third section are ``mmlab.course.workers``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from mmlab.instruments import pagecache
from mmlab.instruments.proc import memory_by_kind
from mmlab.instruments.sampler import file_memory
from mmlab.store import RecordStore

__all__ = [
    "READER",
    "Readers",
    "after_exit",
    "data_pages",
    "exit_lines",
    "plot_readers",
    "pss_lines",
    "readers_summary",
    "snapshot",
    "step_lines",
    "uss_change",
    "why_after_exit",
    "why_first_uss",
    "why_rss_over_pss",
]

_PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 2**20

# A reader process: maps the store, touches every field page and every string, then holds
# the mapping until it reads a line on stdin.
READER = """
import sys
from mmlab import RecordStore
store = RecordStore.open(sys.argv[1])
total = sum(float(store.column(name).sum()) for name in store.fields)  # every field page
chars = sum(len(store.smiles(i)) for i in range(len(store)))  # offsets and heap pages
print("ready", flush=True)
sys.stdin.readline()
"""


class Readers:
    """Reader processes of one store: ``join()`` starts one and waits until it has read it all,
    ``leave()`` stops the oldest; ``pids`` are those alive. A context manager stops the rest."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._procs: list[subprocess.Popen] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def join(self) -> int:
        proc = subprocess.Popen(
            [sys.executable, "-c", READER, str(self.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            raise RuntimeError(f"reader {proc.pid} of {self.path} failed (exit {proc.wait()})")
        self._procs.append(proc)
        return proc.pid

    def leave(self) -> None:
        proc = self._procs.pop(0)
        try:
            proc.communicate("stop\n", timeout=30)
        except subprocess.TimeoutExpired:  # a stuck reader must not outlive the notebook
            proc.kill()
            proc.communicate()

    def __enter__(self) -> Readers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        while self._procs:
            self.leave()


def snapshot(path: str | os.PathLike[str], pids: list[int]) -> dict[str, float]:
    """Now: the store's pages summed over ``pids`` (``rss``, ``pss``, ``uss``), each reader's
    whole-process memory by kind summed (``all_uss``, ``all_pss_anon``, ``all_pss_file``),
    the USS of the first reader alone (``first_uss``, of the store) and the store's pages in
    the page cache (``cached``), all in bytes; ``readers`` is how many."""
    path = Path(path).resolve()
    out: dict[str, float] = {"readers": len(pids), **file_memory(str(path), pids)}
    out["first_uss"] = file_memory(str(path), pids[:1])["uss"] if pids else 0
    for name in ("uss", "pss_anon", "pss_file"):
        out[f"all_{name}"] = 0
    for pid in pids:
        kinds = memory_by_kind(pid, uss_pss=True)
        for name in ("uss", "pss_anon", "pss_file"):
            out[f"all_{name}"] += getattr(kinds, name) or 0
    out["cached"] = int(pagecache.residency(path).sum()) * _PAGE
    return out


def step_lines(steps: list[dict]) -> list[str]:
    """Cell lines: at each step, the readers' store pages (RSS, PSS, USS of the store), the
    store's pages in the page cache, and the readers' whole processes by kind of page."""
    return [
        f"{s['readers']} reader{'s' if s['readers'] != 1 else ' '}: store pages RSS "
        f"{s['rss'] / MiB:6.1f} MiB, PSS {s['pss'] / MiB:6.1f}, USS {s['uss'] / MiB:6.1f}; page "
        f"cache {s['cached'] / MiB:6.1f} MiB; whole processes: Pss_Anon "
        f"{s['all_pss_anon'] / MiB:6.1f}, Pss_File {s['all_pss_file'] / MiB:6.1f}"
        for s in steps
    ]


def data_pages(path: str | os.PathLike[str]) -> dict[str, int]:
    """Bytes of the store file: ``file`` (its size), ``data`` (the pages of each section that
    hold records: offsets, strings, values), ``reserved`` (the rest), split into
    ``heap_unused`` (whole pages of the string area past the last string) and ``padding``
    (each section's padding to its 64 KiB boundary, and the header)."""
    with RecordStore.open(path) as store:
        n, sections, size = len(store), store.sections, store.nbytes
    # The store's format: int64 offsets, the end of the last string at offsets[n].
    heap_used = int(np.fromfile(path, np.int64, count=1, offset=sections["offsets"][0] + 8 * n)[0])
    used = dict.fromkeys(sections, 8 * n) | {"offsets": 8 * (n + 1), "heap": heap_used}
    pages = {name: -(-used[name] // _PAGE) * _PAGE for name in sections}
    data = sum(pages.values())
    heap_unused = sections["heap"][1] // _PAGE * _PAGE - pages["heap"]
    return {
        "file": size,
        "data": data,
        "reserved": size - data,
        "heap_unused": heap_unused,
        "padding": size - data - heap_unused,
    }


def plot_readers(steps: list[dict], file_size: int, data_size: int, sampler=None):
    """Left: the readers' whole processes over time (PSS by kind, USS). Right: the store's
    pages at each step (readers joining then leaving) against the file and data sizes."""
    import matplotlib.pyplot as plt

    fig, (over_time, per_step) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    if sampler is not None:
        for name, label in (("pss_anon", "Pss_Anon"), ("pss_file", "Pss_File"), ("uss", "USS")):
            series = sampler.series(f"children_{name}")
            # A reader caught exiting has no memory left to read: its sample is NaN. Skip
            # those samples rather than break the line.
            ok = np.isfinite(series)
            over_time.plot(sampler.times[ok], series[ok] / MiB, label=f"sum of {label}")
        from mmlab.instruments.live import draw_marks

        draw_marks(over_time, sampler.marks)
        _stagger(over_time, sampler.times)
        over_time.set(xlabel="time (s)", ylabel="MiB", title="the readers' whole processes")
        over_time.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, fontsize=8)
    x = np.arange(len(steps))
    # The reference lines thin and light, under the curves; PSS last and thickest, since it
    # lies on (or near) the pages holding data and the page cache, and the text is about it.
    per_step.axhline(file_size / MiB, color="0.75", lw=0.8, linestyle=":", label="file size")
    per_step.axhline(
        data_size / MiB, color="0.6", lw=0.8, linestyle="-.", label="pages holding data"
    )
    for key, style, width in (
        ("rss", "o-", 1.5),
        ("uss", "o-", 1.5),
        ("cached", "s--", 1),
        ("pss", "o-", 3),
    ):
        label = "in the page cache" if key == "cached" else f"sum of {key.upper()}"
        per_step.plot(x, [s[key] / MiB for s in steps], style, lw=width, ms=4, label=label)
    per_step.set_xticks(x, [f"{s['readers']}" for s in steps])
    per_step.set(xlabel="readers alive (joining, then leaving)", ylabel="MiB")
    per_step.set_title("the store's pages only")
    per_step.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, fontsize=8)
    return fig


def _stagger(ax, times) -> None:
    """Drop a mark's label (``draw_marks``: rotated, hanging from the top) a row lower when it
    is within 3% of the time axis of the last label of its row, so that labels of readers
    joining in quick succession do not print over each other; up to three rows."""
    span = float(np.ptp(times)) if len(times) > 1 else 1.0
    last: dict[int, float] = {}  # row -> time of its last label
    for label in sorted(ax.texts, key=lambda t: t.xy[0]):
        at = label.xy[0]
        row = next((r for r in range(3) if at - last.get(r, -np.inf) >= 0.03 * span), 0)
        last[row] = at
        label.xy = label.xyann = (at, 1 - 0.12 * row)  # the point and the text at it


# -- what the notebook records for its tests and the course's claims table -------------------


def readers_summary(steps: list[dict], sizes: dict[str, int]) -> tuple[dict, str, str]:
    """From a join-and-leave run (``snapshot`` per step, ``data_pages``): the values to record,
    and the claims table's "measured" and "verdict" sentences, both from this run's numbers."""
    full = max(steps, key=lambda s: s["readers"])
    one, two, last, gone = steps[1], steps[2], steps[-2], steps[-1]
    values = {f"sum_{k}": full[k] for k in ("rss", "pss", "uss")} | {"readers": full["readers"]}
    values |= {"file_bytes": sizes["file"], "data_bytes": sizes["data"], "last_uss": last["uss"]}
    values |= {"first_uss_alone": one["first_uss"], "first_uss_with_two": two["first_uss"]}
    values["cached_after_exit"] = gone["cached"]
    measured = (
        f"{full['readers']} readers of a {sizes['file'] / 1e6:.0f} MB store: sum of RSS "
        f"{full['rss'] / MiB:.1f} MiB, sum of PSS {full['pss'] / MiB:.1f} MiB (pages holding "
        f"records {sizes['data'] / MiB:.1f} MiB), sum of USS {full['uss'] / MiB:.1f} MiB; reader "
        f"1's USS {one['first_uss'] / MiB:.1f} MiB alone, {two['first_uss'] / MiB:.1f} with reader "
        f"2; {gone['cached'] / MiB:.1f} MiB still cached after the last reader exited"
    )
    ratio = full["rss"] / full["pss"] if full["pss"] else 0.0
    if ratio > 0.8 * full["readers"] and gone["cached"] >= 0.9 * last["uss"]:
        verdict = "true: the pages exist once, in the page cache, and outlive the readers"
    else:
        verdict = (
            f"partly: the sum of RSS was {ratio:.1f}x the sum of PSS with {full['readers']} "
            f"readers, and {gone['cached'] / MiB:.1f} MiB stayed cached after the last exited"
        )
    return values, measured, verdict


def exit_lines(steps: list[dict]) -> list[str]:
    """Cell lines: reader 1's USS of the store alone and with reader 2, and what the last
    reader's exit freed of the store's page cache against its USS of the store."""
    one, two, last, gone = steps[1], steps[2], steps[-2], steps[-1]
    freed = last["cached"] - gone["cached"]
    lines = [
        f"reader 1 alone: USS of the store {one['first_uss'] / MiB:.1f} MiB; with reader 2: "
        f"{two['first_uss'] / MiB:.1f} MiB",
        f"the last reader, alone again: USS of the store {last['uss'] / MiB:.1f} MiB",
        f"the store's pages in the page cache: {last['cached'] / MiB:.1f} MiB before it exited,"
        f" {gone['cached'] / MiB:.1f} MiB after",
    ]
    if freed < 0.1 * last["uss"]:
        end = "its file-backed USS stayed cached."
    else:
        end = "the kernel dropped some of it meanwhile (memory pressure?)."
    lines.append(
        f"-> its exit freed {freed / MiB:.1f} MiB of the store's page cache, against "
        f"{last['uss'] / MiB:.1f} MiB of USS of the store: {end}"
    )
    return lines


def pss_lines(steps: list[dict], sizes: dict[str, int]) -> list[str]:
    """Cell lines: the file split into pages holding records, the string area's unused room
    and padding, against the readers' summed PSS and the store's pages in the page cache."""
    full = max(steps, key=lambda s: s["readers"])
    return [
        f"file {sizes['file'] / MiB:.1f} MiB = pages holding records {sizes['data'] / MiB:.1f}"
        f" MiB + string area never written {sizes['heap_unused'] / MiB:.1f} MiB + padding to "
        f"64 KiB boundaries and header {sizes['padding'] / MiB:.1f} MiB",
        f"sum of PSS with {full['readers']} readers: {full['pss'] / MiB:.1f} MiB "
        f"({full['pss'] / sizes['file']:.0%} of the file, {full['pss'] / sizes['data']:.0%} of "
        "the pages holding records)",
        f"in the page cache: {full['cached'] / MiB:.1f} MiB, of which "
        f"{(full['cached'] - full['pss']) / MiB:.1f} MiB mapped by no reader (read ahead, "
        "never faulted)",
    ]


# -- the reveals: what this run measured, and why ------------------------------------------


def why_rss_over_pss(steps: list[dict]) -> tuple[float, str]:
    """The sum of the readers' RSS of the store over the sum of their PSS with all readers in,
    and why it is about the number of readers."""
    full = max(steps, key=lambda s: s["readers"])
    n, rss, pss = full["readers"], full["rss"], full["pss"]
    ratio = rss / pss if pss else float("nan")
    # RSS / PSS is exactly n when all n readers map every page; fewer sharers lower it.
    same = ", as here" if abs(ratio - n) < 0.05 * n else " (here they did not quite)"
    return ratio, (
        f"{n} readers each mapped the store's {rss / n / MiB:.1f} MiB of pages (RSS, each): RSS "
        f"counts a shared page in full in every process that maps it, so the sum is "
        f"{rss / MiB:.1f} MiB; PSS gives each of the {n} sharers 1/{n} of it, so the sum is "
        f"{pss / MiB:.1f} MiB, each page once: {ratio:.2f}x, the number of readers. When every "
        f"reader maps the same set of pages{same}, the ratio does not depend on the page "
        "size, the readahead or the file system: only on how many processes map them."
    )


def uss_change(steps: list[dict]) -> str:
    """ "falls", "stays" or "grows": reader 1's USS of the store when reader 2 joined."""
    alone, with_two = steps[1]["first_uss"], steps[2]["first_uss"]
    if with_two < 0.5 * alone:
        return "falls"
    return "grows" if with_two > 1.5 * alone else "stays"


def why_first_uss(steps: list[dict]) -> str:
    """Why reader 1's USS of the store changed when reader 2 joined, though reader 1 did not."""
    alone, with_two = steps[1]["first_uss"], steps[2]["first_uss"]
    return (
        f"reader 1's USS of the store was {alone / MiB:.1f} MiB alone and {with_two / MiB:.1f} "
        f"MiB once reader 2 had read the store too. USS counts only pages no other process maps "
        "right now: reader 2 mapped the same page-cache pages, so they stopped being unique to "
        "reader 1, though reader 1 did nothing. A process's USS depends on the others."
    )


def after_exit(steps: list[dict]) -> str:
    """ "cached" or "freed": the store's pages once the last reader has exited."""
    return "cached" if steps[-1]["cached"] >= 0.5 * steps[-2]["cached"] else "freed"


def _room(free, limit) -> str:
    """The memory the page cache could use, as far as the report knows: MemAvailable (the
    host's, in a container) and the cgroup's limit, which the page cache is charged to."""
    said = (
        f"{free.value / 2**30:.1f} GiB available when the notebook began"
        if free.known
        else "the available memory unknown"
    )
    if limit.known and not isinstance(limit.value, str):
        said += f"; this cgroup may hold {limit.value / 2**30:.1f} GiB, page cache included"
    return said


def why_after_exit(steps: list[dict], report) -> str:
    """Why the store's pages stayed in the page cache after the last reader exited (or not),
    with this machine's file system and available memory."""
    last, gone = steps[-2], steps[-1]
    fs, free = report.filesystem, report.memory_available
    where = f"{fs.value}" if fs.known else "a file system this report could not name"
    room = _room(free, report.cgroup_memory_limit)
    head = (
        f"before the last reader exited, {last['cached'] / MiB:.1f} MiB of the store were in the "
        f"page cache (its USS of the store: {last['uss'] / MiB:.1f} MiB); after, "
        f"{gone['cached'] / MiB:.1f} MiB. "
    )
    if after_exit(steps) == "cached" and fs.known and fs.value == "tmpfs":
        return head + (
            "On tmpfs the store's pages are shared memory, not page cache: no disk holds them, "
            "so the kernel cannot drop them; they stay until the file is deleted (or are "
            "swapped out). Exiting unmaps them and frees none of them."
        )
    if after_exit(steps) == "cached":
        return head + (
            f"File pages belong to the file ({where} here), not to the processes that map them: "
            "exiting unmaps them, and they stay cached until the kernel needs the memory, which "
            f"it did not ({room}). A process's USS of file pages is not what killing it frees."
        )
    return head + (
        "The kernel dropped them: it needed the memory meanwhile (memory pressure, or a "
        "container's memory limit) and clean file pages are the first it reclaims. Without "
        "that pressure they would have stayed cached after the last reader exited."
    )
