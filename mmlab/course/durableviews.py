"""Notebook 08's words for its measurements: the dirty page's life (which rule wrote it back,
from the run's times and the ``vm.dirty_*`` settings), the flush race, the journal, the blog's
writer.

The race's words
compare ``os.fsync`` with ``os.fdatasync`` as a ratio with a 10% margin: a difference smaller
than that, or one whose middle half of rounds straddles 1, is "no measurable difference
here". The blog's writer: why a flush per record multiplies the bytes (``why_amplification``),
the widget's run of one more policy beside the measured ones (``try_policy``), and the claims
table's sentences. What the journal does (or, where the file system has none, does not do)
comes from ``fsinfo.journal``, read for the notebook's folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmlab.course.durability import (
    _PAGE,
    DirtyLife,
    WriterRuns,
    _policy_name,
    blog_writer,
    pages_model,
)
from mmlab.instruments.facts import Info
from mmlab.instruments.fsinfo import journal
from mmlab.instruments.spread import Spread
from mmlab.instruments.writeback import Rules, background_bytes

__all__ = [
    "below_two",
    "claim_measured",
    "claim_verdict",
    "fsync_ratio",
    "journal_lines",
    "read_journal",
    "try_policy",
    "wait_line",
    "why_amplification",
    "why_async",
    "why_clean",
    "why_dirty_after_write",
    "why_fsync_ratio",
]

_MARGIN = 0.10  # fsync and fdatasync closer than 10% read "no measurable difference"


# -- the life of a dirty page, explained ---------------------------------------------------


def wait_line(rules: Rules) -> str:
    """How long section 1 may wait for the kernel's own writeback, from the settings."""
    wait = rules.longest_wait
    if wait is None:
        return "the expiry or the flusher's period is unknown here: section 1 waits up to 60 s"
    slow = " (laptop mode or a power manager on battery lengthens these)" if wait > 40 else ""
    return (
        f"section 1 waits up to {wait + 10:g} s: expiry {rules.expire_s.value:g} s + the "
        f"flusher's period {rules.period_s.value:g} s + 10 s to spare{slow}"
    )


def why_dirty_after_write(life: DirtyLife) -> str:
    scope = "the whole system's dirty pages" if life.system_wide else "the file's dirty pages"
    return (
        f"{life.pages:,} pages were written through the mapping ({life.pages * _PAGE / 2**20:g} "
        f"MiB of {_PAGE:,}-byte pages); {scope} peaked at {life.peak_dirty:,}. A write through "
        "a shared mapping changes the page-cache page itself and marks it dirty: nothing "
        "reaches storage yet. " + life.scope
    ) + (
        f". On {life.filesystem} there is no storage to write to at all"
        if life.filesystem in ("tmpfs", "ramfs")
        else ""
    )


def why_clean(life: DirtyLife) -> str:
    """Which rule made the kernel write the pages back, from this run's times and settings."""
    rules = life.rules
    if life.filesystem in ("tmpfs", "ramfs"):
        return (
            f"the file is on {life.filesystem}, which has no storage: its pages are the file "
            "itself and are never written back (cachestat may count them dirty for good, or "
            "not at all); run the notebook from a folder on a disk to see writeback"
        )
    if life.clean_s is None:
        return (
            f"the pages were still not clean {life.timeout_s:.0f} s after the writes, longer "
            "than the settings allow (" + "; ".join(rules.lines()[:2]) + "): the flusher was "
            "held back here (vm.dirty_writeback_centisecs = 0 turns periodic writeback off; "
            "laptop mode delays it; a busy device queues it)"
        )
    started = life.clean_s if life.started_s is None else life.started_s
    caught = " (a sample caught pages under writeback)" if life.saw_writeback else ""
    timing = (
        f"writeback began {started:.1f} s after the writes{caught}; clean at {life.clean_s:.1f} s"
    )
    expire, period = rules.expire_s, rules.period_s
    if expire.known and started >= expire.value - 0.5:
        extra = ""
        if period.known:
            extra = (
                f", and the flusher, waking every {period.value:g} s, wrote them back at its "
                f"first wakeup after that: so between {expire.value:g} and "
                f"{expire.value + period.value:g} s"
            )
        threshold = background_bytes()
        below = (
            f"The system's dirty memory right after the writes "
            f"({life.system_dirty_bytes / 2**20:.1f} MiB) was below the background threshold "
            f"({threshold.value / 2**20:.0f} MiB), so nothing started writeback earlier"
            if threshold.known and life.system_dirty_bytes < threshold.value
            else "Nothing started writeback earlier"
        )
        return (
            f"{timing}. The expiry rule: the file had been dirty for "
            f"vm.dirty_expire_centisecs ({expire.value:g} s; the kernel times it per file, "
            f"from when the file first went dirty){extra}. {below}"
        )
    threshold = background_bytes()
    if threshold.known and life.system_dirty_bytes > threshold.value:
        return (
            f"{timing}. The background rule: the system's dirty memory "
            f"({life.system_dirty_bytes / 2**20:.1f} MiB) was above the background threshold "
            f"({threshold.value / 2**20:.0f} MiB, {threshold.source}), so the flusher started "
            "writing back at once, before the pages expired"
        )
    said = f"{expire.value:g} s" if expire.known else "an unknown expiry"
    return (
        f"{timing}, before the pages were {said} old and with the system's dirty memory "
        "below the background threshold: something else wrote them back early, such as "
        "another program's sync or a flusher pass for another file of this file system"
    )


def read_journal(folder: str | os.PathLike[str]) -> Info:
    """The journal of the file system holding ``folder`` (``fsinfo.journal``)."""
    return journal(Path(folder))


def _has_journal(info: Info) -> bool | None:
    if not info.known:
        return None
    return info.value != "none"


def journal_lines(info: Info, filesystem: str) -> list[str]:
    """What the journal is here, and what a power loss would do to this file system."""
    if not info.known:
        return [
            f"journal: unknown ({info.reason})",
            "after a power loss: whatever this file system promises; dirty pages are lost",
        ]
    if info.value == "none":
        if filesystem in ("tmpfs", "ramfs"):
            return [
                f"journal: none ({info.source})",
                "after a power loss: nothing at all survives, the files lived in memory",
            ]
        return [
            f"journal: none ({info.source})",
            "after a power loss: every page not yet written back is lost, and the file "
            "system's metadata may be half updated: it needs a file-system check (fsck), and "
            "a file may hold stale blocks",
        ]
    if info.value.startswith("copy-on-write"):
        return [
            f"journal: {info.value} ({info.source})",
            "after a power loss: each block shows its old or its new version, never a mix; "
            "pages not yet written back are lost",
        ]
    return [
        f"journal: {info.value} ({info.source})",
        "after a power loss: the metadata is replayed from the journal; with data=ordered a "
        "file never shows blocks of garbage, but pages not yet written back are lost",
    ]


def why_async(race) -> str:
    """Why MS_ASYNC left the pages dirty (or what this run saw instead)."""
    if race.dirty_unknown:
        return f"dirty pages cannot be counted here: {race.dirty_unknown}"
    left = race.median("dirty_after", "msync(MS_ASYNC)")
    synced = race.median("dirty_after", "flush() = msync(MS_SYNC)")
    pages = race.nbytes // _PAGE
    if left >= 0.9 * pages:
        said = (
            f"msync(MS_ASYNC) left {left:,.0f} of the {pages:,} pages dirty, as many as no "
            f"flush at all: since Linux 2.6.19 it starts no writing, because the kernel already "
            f"tracks every dirty page and writes it back by its own rules (on BSD and macOS it "
            f"does start the writing)"
        )
    else:
        said = (
            f"msync(MS_ASYNC) left {left:,.0f} of {pages:,} pages dirty here: fewer than all, "
            "so something wrote part of them back meanwhile (the flusher, or another sync; "
            "in a container with a small memory limit, its own dirty threshold)"
        )
    return f"{said}; msync(MS_SYNC) left {synced:,.0f}"


def fsync_ratio(race) -> Spread:
    """os.fsync's time over os.fdatasync's, round by round (what the rounds share cancels)."""
    fsync, fdatasync = race.result["os.fsync"].seconds, race.result["os.fdatasync"].seconds
    return Spread.of(a / b for a, b in zip(fsync.samples, fdatasync.samples, strict=True))


def shown_ratio(ratio: Spread) -> str:
    """The ratio's median as ``why_fsync_ratio`` prints it: two decimals, more where two
    would round it onto 1 (the reveal then shows the same number as its why)."""
    return ratio.text(".2f", than=1).split(" [")[0]


def _metadata(info: Info) -> str:
    has = _has_journal(info)
    if has is None:
        return "writes the inode's changed times, which fdatasync skips"
    if has:
        return (
            "commits the inode's changed times through the journal (a journal write and a "
            "device-cache flush), which fdatasync skips"
        )
    return (
        "writes the inode's block (a few KiB) with the changed times; there is no journal "
        "here, and fdatasync skips that block"
    )


def why_fsync_ratio(race, info: Info) -> str:
    """The fsync/fdatasync verdict and its reason, which never contradict each other."""
    ratio = fsync_ratio(race)
    rounds = (
        f"fsync over fdatasync {ratio.text('.2f', 'x', than=1)} per round: the median, and in "
        "brackets the middle half of the rounds"
    )
    side = ratio.side(1.0, margin=_MARGIN)
    if side > 0:
        said = (
            f"fsync took longer ({ratio.verdict(1.0, 'longer', 'shorter', margin=_MARGIN)}; "
            f"{rounds}): it also {_metadata(info)}"
        )
    elif side < 0:
        said = (
            f"fdatasync took longer ({rounds}). fdatasync does a part of fsync's work, so the "
            "file system does not explain this: it came from the device or the machine (a "
            "device-cache flush costing more at some moments than at others). Run the race "
            "again: a real effect repeats"
        )
    else:
        said = (
            f"no measurable difference here ({rounds}; within {_MARGIN:.0%} of 1 or straddling "
            f"it): both write the same {race.nbytes / 2**20:g} MiB of dirty pages and wait for "
            f"the device. What fsync adds is small beside that: it {_metadata(info)}"
        )
    wall, cpu = race.result["os.fsync"].seconds.median, race.cpu_s("os.fsync")
    times = f"fsync {wall * 1e3:.2f} ms wall, {cpu * 1e3:.2f} ms CPU"
    if wall > 2 * cpu:
        return f"{said}. The wall time dwarfs the CPU time ({times}): the process waits"
    return (
        f"{said}. Wall and CPU time are close ({times}): the device is fast enough here that "
        "the kernel's own work, finding and submitting the dirty pages, is most of the cost"
    )


# -- the blog's writer, explained ------------------------------------------------------------


def why_amplification(runs: WriterRuns, per_record: str, once: str = "flush once") -> str:
    """Why flushing per record writes so much more than the data, from this run's numbers
    (each ratio computed from the values printed beside it)."""
    flushes = runs.flushes[per_record]
    dirtied = runs.write_bytes[per_record]
    per_flush = round(dirtied / flushes)
    record = round(runs.data_bytes / runs.records, 1)
    pages = round(dirtied / _PAGE, 1)
    extra = round(pages - runs.records, 1)  # the final flush dirties nothing new
    measured = (
        f"{dirtied:,} / {_PAGE:,} = {pages:,.1f} pages for {runs.records:,} records, so 1 "
        f"record in {runs.records:,} / {extra:.1f} = {runs.records / extra:.0f}"
        if extra > 0
        else f"{dirtied:,} / {_PAGE:,} = {pages:,.1f} pages, none beyond one per record"
    )
    unit = per_flush / _PAGE
    folio = (
        f"about one {_PAGE:,}-byte page: the page model predicts that 1 record in "
        f"{_PAGE / record:.0f} straddles two pages, so that the flush after it writes both "
        f"(measured: {measured})"
        if 0.8 <= unit <= 1.5
        else f"about {unit:.1f} pages: the kernel charges a whole large folio, not one page"
    )
    device = ""
    if runs.device_bytes is not None and runs.idle_bytes is not None:
        device = (
            f" The device wrote {runs.device_bytes[per_record] / 2**20:.3f} MiB during that "
            f"writer, {runs.idle_bytes / 2**20:.3f} MiB in {runs.idle_s:.1f} s of idle time "
            "right after: its count includes other processes and the file system's metadata"
        )
    return (
        f"a record is {runs.data_bytes:,} / {runs.records:,} = {record:.1f} bytes on average, "
        f"but each of the {flushes:,} flushes ({runs.records:,} records + the final flush) "
        f"cleaned the page being written, so the next record dirtied it again: "
        f"{per_flush:,} bytes per flush, {folio}. {dirtied:,} bytes "
        f"({dirtied / 2**20:.3f} MiB) for {runs.data_bytes:,} bytes of data is "
        f"{runs.amplification(per_record):.2f}x the data, about page size / record size "
        f"({_PAGE:,} / {record:.1f} = {_PAGE / record:.0f}). Flushing once dirtied each page "
        f"once: {runs.amplification(once):.2f}x the data (whole pages). Each flush also waits "
        f"for the device, which is where the wall time went.{device}"
    )


def below_two(records: list[tuple[str, float]]) -> str:
    """Where the page model puts a flush policy's bytes below twice the data."""
    sizes = [12 + len(s.encode()) for s, _ in records]
    data = sum(sizes)
    k = next((k for k in range(1, len(sizes) + 1) if pages_model(sizes, k) < 2 * data), None)
    if k is None:
        return "by the page model, no policy gets below 2x the data for these records"
    return (
        f"by the page model (each flush writes the pages its records touched), the bytes fall "
        f"below 2x the data from {k} records per flush: about {k * data / len(sizes):,.0f} "
        f"bytes, half a page or more, per flush"
    )


def try_policy(
    records: list[tuple[str, float]], folder: str | os.PathLike[str], k: int, baseline: WriterRuns
):
    """For the widget: the blog's writer flushing every ``k`` records (0: once), one run,
    drawn beside ``baseline``'s flush per record and flush once; prints the lines."""
    chosen = None if k == 0 else k
    mine = blog_writer(records, folder, (chosen,), repeats=1, idle=False)
    runs = baseline.merged(mine)
    order = ["flush per record", _policy_name(chosen), "flush once"]
    runs = WriterRuns(
        runs.data_bytes,
        runs.records,
        {name: runs.flushes[name] for name in dict.fromkeys(order)},
        runs.write_bytes,
        runs.device_bytes,
        runs.device_unknown,
        runs.seconds,
        runs.cpu_s,
        runs.idle_bytes,
        runs.idle_s,
    )
    print(f"{_policy_name(chosen)}: run now, once; the other two rows are from the rounds above")
    for line in runs.lines()[:-1] if runs.idle_bytes is not None else runs.lines():
        print(line)
    print(below_two(records))
    runs.plot()
    return runs


def claim_measured(runs: WriterRuns) -> str:
    """The claims table's sentence for the blog's flush per record, from this run."""
    return (
        f"{runs.records:,} QM9 records ({runs.data_bytes / 2**20:.3f} MiB): a flush per record "
        f"dirtied {runs.write_bytes['flush per record'] / 2**20:.3f} MiB for storage "
        f"({runs.amplification('flush per record'):.2f}x the data) in "
        f"{runs.seconds['flush per record']:.3f} s; one flush "
        f"{runs.write_bytes['flush once'] / 2**20:.3f} MiB "
        f"({runs.amplification('flush once'):.2f}x) in {runs.seconds['flush once']:.3f} s"
    )


def claim_verdict(runs: WriterRuns) -> str:
    per_record, once = runs.amplification("flush per record"), runs.amplification("flush once")
    if per_record > 2 * once:
        return (
            f"true, but costly: each record is durable at once, at {per_record:.2f}x the data "
            f"against {once:.2f}x for one flush at the end; flush where durability is needed, "
            "not per record"
        )
    return f"true; a flush per record cost {per_record:.2f}x the data, one flush {once:.2f}x"
