"""Notebook 03's hands-on checks: touch every n-th page, and make random touches read less.

What a touch of a mapped page costs is decided by the machine (readahead, fault-around,
large folios), so a check cannot compare the student's numbers with fixed answers. Each check
here makes its own sample file under ``data/`` (sized in readahead windows of this machine),
evicts it before every run, and runs the student's function and the reference interleaved,
each on a fresh cold mapping, in the same call:

* ``touch_stride(touch)``: ``touch(mm, stride)`` reads one byte of every stride-th page. For
  strides 1, 16 and 256 the check counts page faults and bytes read from storage on a cold
  default mapping, for the student's function and the reference; and which pages it touched,
  on a small cold file (2,048 pages) mapped with ``MADV_RANDOM``, where a fault reads and maps
  only its own page, so that the page table (``/proc/self/pagemap``) shows exactly the pages
  touched: the student's set must equal the reference's, page for page.
* ``random_mapping(open_for_random)``: ``open_for_random(path)`` returns a mapping of the
  whole file. The check opens it, touches random pages of it and reads back their bytes, beside
  a default mapping and the reference (``MADV_RANDOM``), and compares the bytes read.

Tolerances come from this run and the machine report: the reference's own spread, one
readahead window (``read_ahead_kb``: a window still in flight can be counted, or not, when a
run ends), one fault per window read (a touch landing in a window being read takes a fault
more or less), and the faults the student's function takes by itself (a second call on pages
already mapped: its own allocations).
"""

from __future__ import annotations

import mmap
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmlab.course.handson.verdict import Verdict, attempt
from mmlab.course.lazy import Sizes, mapped_bytes, read_counted
from mmlab.instruments import pagecache, pagemap
from mmlab.instruments.access import access_order, mapped, sample_file, touch_pages
from mmlab.instruments.compare import quick_mode
from mmlab.instruments.facts import format_size
from mmlab.instruments.proc import counters

__all__ = ["STRIDES", "random_mapping", "touch_stride"]

PAGE = mmap.PAGESIZE
STRIDES = (1, 16, 256)  # the exercise's strides: dense, one fault-around apart, far apart
SMALL_PAGES = 2048  # the file on which pages touched are counted: 8 touches at stride 256
RANDOM_TOUCHES = 256  # random pages random_mapping touches


@dataclass(frozen=True)
class _Run:
    """One cold run: faults and bytes read from storage, faults of a second call, any error."""

    faults: int = 0
    read_bytes: int | None = 0  # None: reads are not counted here (read_counted)
    again: int = 0  # faults of a second call on the same, now mapped, pages
    value: int | None = None  # what the touches read (random_mapping: the bytes' sum)
    error: str | None = None


def _setup() -> tuple[Path, Path, Sizes] | str:
    """The two sample files (cold) and the machine's sizes, or why nothing can be measured."""
    if not sys.platform.startswith("linux"):
        return f"not available here ({sys.platform}): faults and bytes read come from Linux's /proc"
    from mmlab import machine

    data = Path("data")
    data.mkdir(exist_ok=True)
    sizes = Sizes.of(machine.report(data))
    window = sizes.window or 32
    windows, least = (8, 32) if quick_mode() else (16, 64)
    big = sample_file(data / "handson_lazy.bin", max(windows * window * PAGE, least * 2**20))
    small = sample_file(data / "handson_lazy_small.bin", SMALL_PAGES * PAGE)
    if counters().read_bytes is None:
        return "not available here: /proc/self/io (bytes read from storage) is unreadable"
    for path in (big, small):
        reason = _make_cold(path)
        if reason:
            return f"not checkable here: the sample file cannot be made cold ({reason})"
    return big, small, sizes


def _make_cold(path: Path) -> str | None:
    """Evict ``path`` once the reads still in flight from the last run have landed (a page
    being read cannot be dropped); None if it is cold, else why not."""
    import warnings

    for _ in range(2):
        pagecache.settled_residency(path)
        with warnings.catch_warnings():  # said in the verdict, not as a warning box
            warnings.simplefilter("ignore", pagecache.EvictionWarning)
            report = pagecache.evict(path)
        if not report.resident_after:
            return None
    return report.reason or "pages stayed in the page cache"


def _unavailable(exercise: str, reason: str) -> Verdict:
    """A verdict that judges nothing: this machine cannot measure what the check needs."""
    return Verdict(
        exercise,
        off=[f"cannot judge here, whatever your code does: {reason}"],
        hint="run this notebook on Linux, with data/ on a local disk (not tmpfs, FUSE or NFS)",
    )


UNCOUNTED = "bytes read are not counted on this file system (major faults read 0 bytes)"


def _reference_touch(mm: mmap.mmap, stride: int) -> None:
    touch_pages(mm, np.arange(0, len(mm) // PAGE, stride))


def _cold_touch(path: Path, touch: Callable, stride: int) -> _Run:
    _make_cold(path)
    with mapped(path) as mm:
        before = counters()
        tried = attempt(touch, mm, stride)
        done = counters() - before
        if not tried.ok:
            return _Run(error=tried.error)
        again = counters()
        attempt(touch, mm, stride)
        again = counters() - again
    faults, again_faults = done.minor_faults + done.major_faults, again.minor_faults
    return _Run(faults, read_counted(done), again_faults + again.major_faults)


def _pages_touched(path: Path, touch: Callable, stride: int) -> np.ndarray | int | None:
    """Which pages ``touch`` touched (one bool per page, from pagemap; where pagemap is
    unreadable, how many, from smaps): on a cold file mapped with MADV_RANDOM a fault maps
    only its own page."""
    _make_cold(path)
    with mapped(path, "random") as mm:
        if not attempt(touch, mm, stride).ok:
            return None
        try:
            return pagemap.present(mm)
        except OSError:
            return mapped_bytes(mm) // PAGE


def _spread(values: list[int]) -> int:
    return max(values) - min(values)


def touch_stride(touch: Callable) -> Verdict:
    """Judge ``touch(mm, stride)``: the pages it touches, and its faults and storage bytes on a
    cold file for strides 1, 16 and 256, beside the reference run interleaved with it."""
    name = "touch_stride"
    setup = _setup()
    if isinstance(setup, str):
        return _unavailable(name, setup)
    big, small, sizes = setup
    file_bytes = big.stat().st_size
    rounds = 2 if quick_mode() else 3
    runs: dict[int, dict[str, list[_Run]]] = {s: {"yours": [], "ref": []} for s in STRIDES}
    for round_ in range(rounds):
        for stride in STRIDES:
            pair = [("ref", _reference_touch), ("yours", touch)]
            for who, function in pair[:: 1 if round_ % 2 else -1]:
                runs[stride][who].append(_cold_touch(big, function, stride))
    errors = [r.error for s in STRIDES for r in runs[s]["yours"] if r.error]
    if errors:
        hint = "touch(mm, stride) gets an mmap.mmap and an int; read mm[offset]"
        return Verdict(name, off=[f"your touch raised:\n{errors[0]}"], hint=hint)
    if any(r.read_bytes is None for s in STRIDES for r in runs[s]["ref"]):
        return _unavailable(name, UNCOUNTED)
    verdict = Verdict(name, measured={"file_bytes": file_bytes, "window_pages": sizes.window})
    for stride in STRIDES:
        _judge_stride(verdict, stride, runs[stride], (small, touch), sizes, file_bytes)
    if verdict.off:
        verdict.hint = (
            "start at page 0, step a whole stride of pages (mmap.PAGESIZE bytes each) at a "
            "time to the end of the mapping, in increasing order (readahead follows it)"
        )
    return verdict


def _judge_stride(verdict, stride, runs, small_and_touch, sizes, file_bytes) -> None:
    small, touch = small_and_touch
    window_bytes = (sizes.window or 1) * PAGE
    yours, ref = runs["yours"], runs["ref"]
    which = _pages_touched(small, touch, stride)
    expected_which = _pages_touched(small, _reference_touch, stride)
    touched, expected = _total(which), _total(expected_which)
    same = _same_pages(which, expected_which)
    faults = int(np.median([r.faults for r in yours]))
    read = int(np.median([r.read_bytes or 0 for r in yours]))
    ref_faults, ref_read = [r.faults for r in ref], [r.read_bytes for r in ref]
    windows_read = -(-max(ref_read) // window_bytes)
    noise = max(r.again for r in yours + ref)
    fault_slack = 2 * _spread(ref_faults) + noise + windows_read
    read_slack = 2 * _spread(ref_read) + window_bytes
    verdict.measured[f"stride_{stride}"] = {
        "pages_touched": touched, "reference_pages_touched": expected, "faults": faults,
        "reference_faults": ref_faults, "read_bytes": read, "reference_read_bytes": ref_read,
    }  # fmt: skip
    of = f"stride {stride}: "
    small_file = f"the small {format_size(SMALL_PAGES * PAGE)} check file"
    if not same:
        wanted = expected if expected is not None else -(-SMALL_PAGES // stride)
        where = "" if touched != wanted else ", but not the same pages"
        verdict.off.append(
            f"{of}on {small_file} your touch touched {_count(touched)}{where}; "
            f"{_every(stride)} from page 0 is {wanted:,} pages"
        )
        return
    touches = -(-file_bytes // (stride * PAGE))
    ref_f = f"{min(ref_faults):,}" + (f"-{max(ref_faults):,}" if _spread(ref_faults) else "")
    line = (
        f"{of}{touched:,} of {expected:,} expected pages touched on {small_file} "
        f"({_every(stride)}); on the cold {format_size(file_bytes)} file: {touches:,} touches, "
        f"{faults:,} faults (reference {ref_f}), read {format_size(read)} = "
        f"{100 * read / file_bytes:.0f}% of the file (reference "
        f"{format_size(int(np.median(ref_read)))})"
    )
    if abs(faults - np.median(ref_faults)) > fault_slack:
        verdict.off.append(f"{line}: {faults:,} faults is more than {fault_slack:,} off")
    elif abs(read - np.median(ref_read)) > read_slack:
        verdict.off.append(f"{line}: more than {format_size(read_slack)} off in bytes read")
    else:
        verdict.right.append(f"{line}; {_lesson(stride, faults, read, file_bytes, sizes)}")


def _total(pages: np.ndarray | int | None) -> int | None:
    return int(pages.sum()) if isinstance(pages, np.ndarray) else pages


def _same_pages(yours: np.ndarray | int | None, ref: np.ndarray | int | None) -> bool:
    """The same pages, page for page (pagemap); counted only, where pagemap is unreadable."""
    if yours is None or ref is None:
        return False
    if isinstance(yours, np.ndarray) and isinstance(ref, np.ndarray):
        return bool(np.array_equal(yours, ref))
    return _total(yours) == _total(ref)


def _count(pages: int | None) -> str:
    return "no pages" if not pages else f"{pages:,} page{'' if pages == 1 else 's'}"


def _mapped_by_others(touches: int, faults: int, stride: int, fault_around: int) -> str:
    """Why fewer faults than touches: a fault-around window holds at most this many touched
    pages (1 once the stride reaches it); more touches per fault means large folios."""
    if faults >= touches:
        return ""
    text = ". A touch of a page an earlier fault had mapped took no fault of its own"
    per_window = max(fault_around // stride, 1)
    if touches > faults * per_window:
        return text + (
            f": {touches / max(faults, 1):,.1f} touches per fault, more than the {per_window} "
            f"touched page(s) one fault-around window ({fault_around} pages) holds: large "
            "folios, mapped whole"
        )
    return text + f" (fault-around maps up to {fault_around} pages)"


def _every(stride: int) -> str:
    return "every page" if stride == 1 else f"every {stride}th page"


def _lesson(stride: int, faults: int, read: int, file_bytes: int, sizes: Sizes) -> str:
    """Why this stride read what it read, from this run: the gap against the readahead window."""
    window_bytes = (sizes.window or 1) * PAGE
    gap, window = stride * PAGE, format_size(window_bytes)
    touches = -(-file_bytes // gap)
    others = _mapped_by_others(touches, faults, stride, sizes.fault_around)
    if read >= 0.9 * file_bytes and gap < window_bytes:
        return (
            f"the {format_size(gap)} gaps are inside the {window} readahead window: reads "
            f"covered them{others}"
        )
    if read >= 0.9 * file_bytes:
        return "readahead kept running ahead of the in-order touches across the gaps" + others
    return (
        f"the {format_size(gap)} gaps are wider than what one fault reads "
        f"({format_size(read // max(touches, 1))} per touch here): only part of the file came in"
    )


def _open_and_touch(path: Path, opener: Callable, pages: np.ndarray) -> _Run:
    """Evict, open a mapping with ``opener(path)``, touch ``pages``: all of it measured."""
    _make_cold(path)
    before = counters()
    tried = attempt(opener, path)
    if not tried.ok:
        return _Run(error=tried.error)
    mm = tried.result
    try:
        if not isinstance(mm, mmap.mmap):
            return _Run(error=f"it returned {type(mm).__name__}, not an mmap.mmap")
        if mm.closed:
            return _Run(error="it returned a closed mmap: return it open")
        if len(mm) != path.stat().st_size:
            return _Run(error=f"its mapping is {len(mm):,} bytes, the file {path.stat().st_size:,}")
        value = touch_pages(mm, pages)
        done = counters() - before
    finally:
        if isinstance(mm, mmap.mmap):
            mm.close()
    faults = done.minor_faults + done.major_faults
    return _Run(faults, read_counted(done), value=value)


def _window_says(sizes: Sizes) -> str:
    """What read_ahead_kb says about a default mapping reading no more than MADV_RANDOM."""
    if sizes.readahead is None:
        return "read_ahead_kb is unknown here"
    if sizes.readahead <= 1:
        return f"read_ahead_kb is {sizes.readahead * PAGE // 1024} here: no readahead"
    return f"read_ahead_kb is {sizes.readahead * PAGE // 1024:,}, so this file system read less"


def _default(path: Path) -> mmap.mmap:
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _reference_random(path: Path) -> mmap.mmap:
    mm = _default(path)
    mm.madvise(mmap.MADV_RANDOM)
    return mm


def random_mapping(open_for_random: Callable) -> Verdict:
    """Judge ``open_for_random(path)``: random touches of its cold mapping must read the same
    bytes as the reference's (MADV_RANDOM) and far fewer from storage than a default mapping."""
    name = "random_mapping"
    setup = _setup()
    if isinstance(setup, str):
        return _unavailable(name, setup)
    big, _, sizes = setup
    window_bytes = (sizes.window or 1) * PAGE
    pages = access_order(big.stat().st_size // PAGE, "random", count=RANDOM_TOUCHES, seed=3)
    openers = {"default": _default, "ref": _reference_random, "yours": open_for_random}
    runs: dict[str, list[_Run]] = {who: [] for who in openers}
    for round_ in range(2 if quick_mode() else 3):
        for who in np.roll(list(openers), round_):  # a different one goes first each round
            runs[who].append(_open_and_touch(big, openers[who], pages))
    error = next((r.error for r in runs["yours"] if r.error), None)
    hint = "open the file, mmap all of it (length 0), call mm.madvise(...) and return mm"
    if error:
        return Verdict(name, off=[f"open_for_random: {error}"], hint=hint)
    if any(r.read_bytes is None for who in ("default", "ref") for r in runs[who]):
        return _unavailable(name, UNCOUNTED)
    read = {who: [r.read_bytes or 0 for r in found] for who, found in runs.items()}
    yours, ref, default = (int(np.median(read[w])) for w in ("yours", "ref", "default"))
    slack = 2 * _spread(read["ref"]) + window_bytes
    measured = {f"{who}_read_bytes": values for who, values in read.items()}
    measured |= {f"{who}_faults": [r.faults for r in runs[who]] for who in openers}
    verdict = Verdict(name, measured=measured, hint=hint + ": which advice stops readahead?")
    if any(r.value != runs["ref"][0].value for r in runs["yours"]):
        verdict.off.append("the bytes read through your mapping are not the file's")
    faults = int(np.median(measured["yours_faults"]))
    line = (
        f"{RANDOM_TOUCHES} random touches of the cold {format_size(big.stat().st_size)} file "
        f"read {format_size(yours)} through your mapping ({faults:,} faults), "
        f"{format_size(ref)} through MADV_RANDOM's, {format_size(default)} through a default one"
    )
    if default <= ref + slack and not verdict.off:
        return _unavailable(
            name,
            f"{line}: here the default read no more than MADV_RANDOM (within "
            f"{format_size(slack)}: {_window_says(sizes)}), so no mapping can be told apart",
        )
    if default <= ref + slack:
        return verdict
    elif yours > ref + slack:
        verdict.off.append(f"{line}: {yours / max(ref, 1):,.0f}x the reference's")
    else:
        each, by_default = yours // RANDOM_TOUCHES, default // RANDOM_TOUCHES
        verdict.right.append(
            f"{line}: every touch read only about its own page ({format_size(each)} per touch, "
            f"against {format_size(by_default)} by default: the readahead window is "
            f"{format_size(window_bytes)}), at the cost of one small read per touch"
        )
    return verdict
