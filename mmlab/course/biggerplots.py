"""Notebook 07's figures and explanations: what each limited run did here, and why.

Every sentence is built from this run's numbers (``mmlab.course.bigger``'s runs and
``mmlab.course.workingset``'s sweep) and the mechanism that limited the child, so the text
never contradicts what was measured: a naive load may end with ``MemoryError`` (RLIMIT_DATA
refused a reservation) or with SIGKILL from the OOM killer (a cgroup's private memory past its
limit); a working set may thrash (a cgroup) or stay fast (RLIMIT_DATA: no page-cache limit).
"""

from __future__ import annotations

from mmlab.course.bigger import swap_total

# The sweep's views, here too: the notebook reads every explanation from this module.
from mmlab.course.sweepviews import (
    exercise_reveal,
    largest_fast,
    read_above,
    slowdown_above,
    sweep_lines,
    what_happened,
    why_cliff,
    why_read,
    why_slowdown,
)
from mmlab.instruments import memlimit
from mmlab.instruments.memlimitrun import OOM_KILLED, LimitedRun

__all__ = [
    "PLACES",
    "exercise_reveal",
    "largest_fast",
    "mechanism_lines",
    "naive_outcome",
    "plot_workloads",
    "read_above",
    "readahead_aside",
    "slowdown_above",
    "sweep_lines",
    "what_happened",
    "why_cliff",
    "why_list",
    "why_naive",
    "why_read",
    "why_slowdown",
    "why_stream",
    "workload_lines",
]

MiB = 2**20
PLACES = 21  # a record's string offset, its 19 fields, its string: the places take() reads


def _mib(n: float | None) -> str:
    return "unknown" if n is None else f"{n / MiB:,.1f} MiB"


def mechanism_lines() -> list[str]:
    """Each mechanism, usable here or not and why, then what the chosen one models."""
    lines = [str(m) for m in memlimit.mechanisms()]
    chosen = memlimit.best()
    lines.append(
        f"-> this notebook limits its children with {chosen.name}: it models {chosen.models}"
    )
    swap = swap_total()
    if swap is None:
        lines.append("swap here: unknown (/proc/meminfo unreadable)")
    elif swap == 0:
        lines.append("swap here: none (SwapTotal 0): a full machine here would kill, not swap")
    else:
        lines.append(
            f"swap here: {_mib(swap)}: a full machine here would first swap private pages out "
            "(the children below get none of it)"
        )
    return lines


def _ended(r: LimitedRun) -> str:
    if r.completed:
        return "completed"
    if r.outcome == "MemoryError":
        return "MemoryError"
    return "killed"


def _peak(r: LimitedRun) -> str:
    if not r.mechanism.limits_page_cache:
        return ""
    if r.peak is None:
        return f", cgroup charge at its peak {r.peak_source}"
    sampled = " (sampled)" if r.cgroup_peak is None else ""
    return f", cgroup charge up to {_mib(r.peak)}{sampled}"


def workload_lines(runs: dict[str, LimitedRun], file_bytes: int) -> list[str]:
    """One line per arm: how it ended, its memory, what the cgroup counted, I/O, refaults."""
    budget = next(iter(runs.values())).budget
    lines = [f"store {_mib(file_bytes)}, budget {_mib(budget)}"]
    for name, r in runs.items():
        refaults = ""
        if r.mechanism.limits_page_cache:
            refaults = ", refaults unknown" if r.refaults is None else f", {r.refaults:,} refaults"
        read = (
            f"storage reads {r.read_bytes_source}"
            if r.read_bytes is None
            else f"{_mib(r.read_bytes)} read from storage "
            f"({r.read_bytes / file_bytes:.2f}x the file)"
        )
        lines.append(
            f"{name:>15}: {r.outcome} after {r.seconds:.2f} s; private memory "
            f"+{_mib(r.private_peak)}{_peak(r)}; {read}{refaults}"
        )
    notes = {n for r in runs.values() for n in r.notes}
    return lines + [f"note: {n}" for n in sorted(notes)]


def plot_workloads(runs: dict[str, LimitedRun]):
    """Per arm, the child's private and mapped memory (and its cgroup's charge) over time."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(runs), figsize=(4 * len(runs) + 1, 3.4), layout="constrained", sharey=True
    )
    for ax, (name, r) in zip(axes, runs.items(), strict=True):
        t = r.series("t")
        counted = "" if r.mechanism.limits_page_cache else ", not counted"
        ax.plot(t, [v / MiB for v in r.series("rss_anon")], label="private, new (RssAnon)")
        if "anon" in r.samples:  # also counts copies of inherited pages (copy-on-write)
            ax.plot(t, [v / MiB for v in r.series("anon")], label="private, charged (cgroup)",
                    color="C4", linestyle=":")  # fmt: skip
        ax.plot(t, [v / MiB for v in r.series("rss_file")], label=f"mapped file{counted}")
        if "usage" in r.samples:
            ax.plot(t, [v / MiB for v in r.series("usage")], label="cgroup charge", color="C3")
        ax.axhline(r.budget / MiB, color="k", linestyle="--", linewidth=1.5, label="budget",
                   zorder=5)  # fmt: skip
        ax.set(title=f"{name}: {_ended(r)}", xlabel="seconds")
        ax.set_xlim(0, max([*t, 0.1]))
        ax.locator_params(axis="x", nbins=5)
        if r.seconds < 0.05:  # over before the samples (20 ms apart) could show anything
            ax.text(0.5, 0.75, f"{r.outcome}\nafter {r.seconds * 1e3:.1f} ms", ha="center",
                    va="center", transform=ax.transAxes)  # fmt: skip
    axes[0].set_ylabel("MiB")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8)
    return fig


def naive_outcome(runs: dict[str, LimitedRun]) -> str:
    """How ``read()`` of the whole store ended: "MemoryError", "killed" or "completed"."""
    return _ended(runs["read()"])


def why_naive(runs: dict[str, LimitedRun], file_bytes: int) -> str:
    r = runs["read()"]
    head = f"read() needs {_mib(file_bytes)} of private memory under a {_mib(r.budget)} budget"
    if r.outcome == "MemoryError":
        when = (
            "before a byte was read"
            if r.read_bytes == 0
            else f"after {_mib(r.read_bytes)} read"
            if r.read_bytes is not None
            else f"(its storage reads are {r.read_bytes_source})"
        )
        return (
            f"{head}: {r.mechanism.name} refused the reservation of the buffer {when} (it "
            "counts the virtual size of private writable mappings, so asking is enough), and "
            "Python raised MemoryError, which a program can catch"
        )
    if r.outcome == OOM_KILLED:
        copied = r.private_peak
        reread = None if r.read_bytes is None else r.read_bytes - copied
        extra = (
            f"; its storage reads are {r.read_bytes_source}"
            if reread is None
            else f"; it read {_mib(r.read_bytes)} from storage for the {_mib(copied)} it had "
            f"copied: {_mib(reread)} more, pages read ahead and dropped before read() copied "
            "them"
            if reread > r.budget / 16
            else f"; it read {_mib(r.read_bytes)} from storage"
        )
        return (
            f"{head}: the bytes object grew as read() copied the file in, and private memory "
            f"reached {_mib(copied)} at the last sample (they are 20 ms apart) of the "
            f"{_mib(r.budget)} budget; the rest "
            "was page cache and kernel memory the cgroup could not reclaim fast enough, so "
            f"the OOM killer sent SIGKILL, which no program can catch{extra}"
        )
    if r.completed:
        return f"{head}, yet it completed: the limit did not hold here ({r.mechanism.reason})"
    return f"{head}: it ended '{r.outcome}' after reading {_mib(r.read_bytes)}"


def why_list(r: LimitedRun, file_bytes: int) -> str:
    """Why the list of records ended as it did, from its numbers."""
    objects = (
        f"a tuple, a str and a NumPy row object per record: more bytes of objects than the "
        f"{8 * (PLACES - 2)} bytes of numbers and the string they hold"
    )
    if r.outcome == OOM_KILLED:
        return (
            f"the list of records ({objects}) grew private memory to {_mib(r.private_peak)} "
            f"of the {_mib(r.budget)} budget after {r.seconds:.2f} s, reading "
            f"{_mib(r.read_bytes)}{_share(r, file_bytes)}: the OOM "
            f"killer ended it, as it would on a full machine without swap. {_charged(r)}"
        )
    if r.outcome == "MemoryError":
        return (
            f"{r.mechanism.name} refused a reservation once the records ({objects}) had grown "
            f"private memory by {_mib(r.private_peak)}: MemoryError after {r.seconds:.2f} s"
        )
    if r.outcome.startswith("killed at the timeout"):
        head = f"the list had not finished after {r.seconds:.1f} s; it read {_mib(r.read_bytes)}"
        if r.read_bytes is None:
            return f"{head} bytes from storage ({r.read_bytes_source})"
        kept = r.read_bytes > file_bytes
        return head + (
            ", more than the file: pages were dropped and read again (thrashing)"
            if kept
            else ", less than the file: it stalled rather than thrashed"
        )
    return f"the list of records ended '{r.outcome}' after {r.seconds:.2f} s"


def _share(r: LimitedRun, file_bytes: int) -> str:
    """`` (N% of the file)``, or where the reads are unknown, why."""
    if r.read_bytes is None:
        return f" ({r.read_bytes_source})"
    return f" ({r.read_bytes / file_bytes:.0%} of the file)"


def _charged(r: LimitedRun) -> str:
    """What the cgroup charged at the sample where its private charge peaked, against the
    child's RssAnon growth: the gap is copies of inherited pages."""
    anon, own = r.series("anon"), r.series("rss_anon")
    # the samples where RssAnon and the cgroup's private charge were both readable
    alive = [i for i, v in enumerate(own) if v == v and i < len(anon) and anon[i] == anon[i]]
    if not alive or max(anon[i] for i in alive) <= 0:
        return "(This mechanism reports no private charge of its own to compare with.)"
    i = max(alive, key=anon.__getitem__)
    usage, file = r.series("usage")[i], r.series("file")[i]
    copies = anon[i] - own[i]
    return (
        f"At the sample where the cgroup's private charge peaked ({r.series('t')[i]:.2f} s) "
        f"it was charged {_mib(usage)}: {_mib(anon[i])} private (memory.stat), "
        f"{_mib(file)} page cache and {_mib(max(usage - anon[i] - file, 0))} of kernel "
        f"memory and page tables. RssAnon had grown by only {_mib(own[i])} then: the other "
        f"{_mib(copies)} of private charge are pages the child inherited from the notebook "
        "and wrote to (its heap: Python puts new objects in free memory there, and updates "
        "the reference counts of objects it uses); writing to an inherited page copies it "
        "(copy-on-write), the cgroup is charged for the copy, and RssAnon, which already "
        "counted the page, does not grow."
    )


def readahead_aside(read_ahead_kb: int | None, r: LimitedRun) -> str:
    """Why the list of records ``r`` was built with readahead off, from read_ahead_kb, the
    budget and whether the mechanism limits the page cache."""
    if read_ahead_kb is None:
        return "Aside: read_ahead_kb is unknown here, so what readahead would do cannot be sized"
    reach = PLACES * read_ahead_kb * 1024
    if not r.mechanism.limits_page_cache:
        verdict = (
            f"but {r.mechanism.name} does not limit the page cache, so here readahead would "
            "not change the ending; under a cgroup "
            + ("it would exceed" if reach > r.budget else "it would fit in")
            + f" the {_mib(r.budget)} budget"
        )
    elif reach > r.budget:
        verdict = (
            f"more than the {_mib(r.budget)} budget: the pages read ahead for one place would "
            "be dropped before the loop came back to them, and read again and again "
            "(thrashing, until the timeout), before the list's own memory ran out"
        )
    else:
        verdict = f"well within the {_mib(r.budget)} budget: readahead would not change the ending"
    return (
        f"Aside: a record's values are in {PLACES} places of the file (its string offset, "
        f"{PLACES - 2} columns, its string). With readahead on, each place is read "
        f"{read_ahead_kb:,} KiB ahead (read_ahead_kb here): {PLACES} x {read_ahead_kb:,} KiB = "
        f"{_mib(reach)} in flight, {verdict}. The child advises the kernel not to read ahead "
        "(MADV_RANDOM), so what you see is the list's memory, not readahead."
    )


def why_stream(r: LimitedRun, file_bytes: int) -> str:
    private = f"its private memory grew only {_mib(r.private_peak)}"
    if not r.mechanism.limits_page_cache:
        return (
            f"the stream read {_mib(r.read_bytes)} of a {_mib(file_bytes)} store and {private}: "
            "RLIMIT_DATA does not count a read-only mapping, so what the limit counted stayed "
            "near 0; its file pages went into the page cache, which this machine did not need "
            "to shrink"
        )
    if r.peak is None:
        return f"the cgroup's peak is {r.peak_source}; {private}"
    skipped = (
        f" (it read {_mib(r.read_bytes)}, {r.read_bytes / file_bytes:.0%} of the file: the "
        "SMILES strings are never touched)"
        if r.read_bytes is not None and r.read_bytes < file_bytes
        else ""
    )
    return (
        f"the cgroup counted {_mib(r.peak)} at the peak of a {_mib(r.budget)} budget: page "
        "cache fills whatever room a limit leaves, so a stream that reads more than the budget "
        "always reaches it; the kernel reclaimed the pages already summed (clean, so dropped "
        f"without writing) to make room for the next{skipped}; {private}, so nothing had to "
        "be killed"
    )
