"""Notebook 08's hands-on checks: a durable writer with few flushes, and predicting its bytes.

``durable_writer`` runs the student's ``write_records(path, records)``, which writes QM9
records in the blog's layout into an existing file of zeros (its blocks reserved, so a full
disk cannot SIGBUS this process), beside this machine's reference (write everything, flush
once) in the same call: the file must hold the oracle's bytes, no page of it may be dirty or
under writeback afterwards (cachestat: the kernel has written every page; whether the
device's own cache was flushed cannot be seen from here; where a flush leaves pages dirty
anyway, as on tmpfs, or cachestat is missing, the check says it cannot judge durability),
and the bytes the writer dirtied for storage (``write_bytes``) must stay within twice the
reference's largest run. The hint names the criterion that failed.

``flush_policy_bytes`` runs the student's ``expected_bytes(record_sizes, k, page_size)``,
a prediction of the bytes the blog's writer dirties when it flushes every ``k`` records
(``None``: once), and measures the writer under several policies: a prediction passes when
it is within 25% of the measurement, or at least as close as the reference model is (where
the kernel charges whole large folios, a page-based model is off by their size). An answer
that is the measurement divided by the page size gets told it looks like pages.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

from mmlab.course.durability import blog_records, pages_model, reserve, write_blog
from mmlab.course.handson.verdict import Verdict, attempt
from mmlab.data import seedformat
from mmlab.instruments.cachestat import cache_stats
from mmlab.instruments.compare import quick_mode
from mmlab.instruments.measure import measure

__all__ = [
    "durable_writer",
    "flush_policy_bytes",
    "reference_expected_bytes",
    "reference_writer",
]

_LENGTH, _VALUE = struct.Struct("I"), struct.Struct("d")
_PAGE = mmap.PAGESIZE
_SLACK = 2.0  # a writer may dirty up to twice what the one-flush reference did
_CLOSE = 0.25  # a prediction within 25% of the measurement is right
_POLICIES = (1, 10, 100, None)


def _records() -> list[tuple[str, float]]:
    return blog_records(1000 if quick_mode() else 3000)


def reference_writer(path: str | os.PathLike[str], records) -> None:
    """Write every record through the mapping, then flush once."""
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        offset = 0
        for smiles, value in records:
            raw = smiles.encode()
            _LENGTH.pack_into(mm, offset, len(raw))
            mm[offset + 4 : offset + 4 + len(raw)] = raw
            _VALUE.pack_into(mm, offset + 4 + len(raw), value)
            offset += 12 + len(raw)
        mm.flush()


def _unwritten(path: Path) -> int | str:
    """Pages still dirty or under writeback, or why they cannot be counted."""
    try:
        stats = cache_stats(path)
    except OSError as error:
        return str(error)
    return stats.dirty + stats.writeback


def _run(writer: Callable, path: Path, records, size: int):
    reserve(path, size)  # blocks reserved: a full disk is an OSError here, not a SIGBUS
    with measure() as m:
        tried = attempt(writer, str(path), records)
    return tried, m.write_bytes, _unwritten(path)


def durable_writer(write_records: Callable) -> Verdict:
    """Check ``write_records(path, records)``: right bytes, nothing dirty, few bytes written."""
    verdict = Verdict("durable_writer")
    records = _records()
    size = seedformat.data_size(records) + _PAGE
    Path("data").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="handson_08_", dir="data") as folder:
        folder = Path(folder)
        oracle = folder / "oracle.dat"
        reserve(oracle, size)
        write_blog(oracle, records, flush_every=None)
        reference = [_run(reference_writer, folder / "ref.dat", records, size)]
        tried, written, dirty = _run(write_records, folder / "yours.dat", records, size)
        reference.append(_run(reference_writer, folder / "ref.dat", records, size))
        same = tried.ok and (folder / "yours.dat").read_bytes() == oracle.read_bytes()
    ref_bytes = max(r[1] for r in reference)
    ref_dirty = reference[-1][2]
    verdict.measured = {"write_bytes": written, "reference_bytes": ref_bytes, "dirty": dirty}
    if not tried.ok:
        verdict.off.append(f"your function raised:\n{tried.error}")
        return verdict
    hints = []
    if same:
        verdict.right.append(f"the file holds all {len(records):,} records, byte for byte")
    else:
        verdict.off.append("the file's bytes differ from the blog's layout of the records")
        hints.append(
            "the layout: a native struct 'I' length, the UTF-8 SMILES, a native 'd' value, "
            "back to back from byte 0"
        )
    if isinstance(dirty, str) or isinstance(ref_dirty, str) or ref_dirty:
        why = dirty if isinstance(dirty, str) else ref_dirty
        if not isinstance(why, str):
            why = f"the reference's flush left {ref_dirty:,} pages dirty (no storage under them)"
        verdict.right.append(f"whether the data is durable cannot be judged here: {why}")
    elif dirty:
        verdict.off.append(
            f"{dirty:,} pages of the file were still dirty (or under writeback) when you returned"
        )
        hints.append(
            "nothing made every page durable before you returned: call mm.flush() (or "
            "os.fsync) once, after the last record; msync(MS_ASYNC) does nothing, and "
            "flush(offset, size) covers only that range"
        )
    else:
        verdict.right.append(
            "no page of the file was dirty or under writeback when it returned: the kernel "
            "had written every page (whether the device's own cache was flushed cannot be "
            "seen from here)"
        )
    if written is None:
        verdict.right.append("bytes written cannot be counted here (no /proc/self/io)")
    elif written > _SLACK * ref_bytes:
        data = seedformat.data_size(records)
        verdict.off.append(
            f"you dirtied {written / 2**20:.2f} MiB for storage, {written / data:.0f}x the "
            f"data; flushing once dirtied {ref_bytes / 2**20:.3f} MiB here "
            f"({ref_bytes / data:.1f}x the data)"
        )
        hints.append(
            "every flush cleans the page the next record dirties again: how many flushes "
            "does durability at the end really need?"
        )
    else:
        verdict.right.append(
            f"you dirtied {written / 2**20:.3f} MiB; the one-flush reference "
            f"{ref_bytes / 2**20:.3f} MiB (at most {_SLACK:g}x passes)"
        )
    verdict.hint = " ".join(hints)
    return verdict


def reference_expected_bytes(record_sizes, k, page_size) -> int:
    """Each flush writes the pages the records since the last flush touched."""
    return pages_model(list(record_sizes), k, page_size)


def _measured(records, k, folder: Path) -> int:
    reserve(folder / "policy.dat", seedformat.data_size(records))
    with measure() as m:
        write_blog(folder / "policy.dat", records, k)
    return m.write_bytes


def flush_policy_bytes(expected_bytes: Callable) -> Verdict:
    """Check ``expected_bytes(record_sizes, k, page_size)`` against the writer, k = 1, 10,
    100 and None (once)."""
    verdict = Verdict("flush_policy_bytes")
    records = _records()
    sizes = [12 + len(s.encode()) for s, _ in records]
    Path("data").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="handson_08_", dir="data") as folder:
        measured = {k: _measured(records, k, Path(folder)) for k in _POLICIES}
    if None in measured.values():
        verdict.right.append("bytes written cannot be counted here (no /proc/self/io)")
        return verdict
    pages = False
    for k in _POLICIES:
        name = "once" if k is None else f"every {k}"
        tried = attempt(expected_bytes, list(sizes), k, _PAGE)
        if not tried.ok:
            verdict.off.append(f"k={k}: your function raised:\n{tried.error}")
            return verdict
        ref = reference_expected_bytes(sizes, k, _PAGE)
        got, real = tried.result, measured[k]
        try:
            off = abs(math.log(float(got) / real))
        except (TypeError, ValueError, ZeroDivisionError):
            verdict.off.append(f"flush {name}: {got!r} is not a positive number of bytes")
            continue
        allowed = max(math.log(1 + _CLOSE), abs(math.log(ref / real)) * 1.05)
        line = f"flush {name}: you said {float(got) / 2**20:.3f} MiB, measured {real / 2**20:.3f}"
        (verdict.right if off <= allowed else verdict.off).append(line)
        pages = pages or (off > allowed and abs(math.log(float(got) * _PAGE / real)) <= allowed)
        verdict.measured[name] = {"predicted": got, "measured": real, "reference": ref}
    verdict.hint = (
        f"that looks like a number of pages: return bytes (pages x page_size, {_PAGE:,} here)"
        if pages
        else "a flush writes whole pages: count, for each group of k records, the pages its "
        "bytes span (a group can straddle a page boundary)"
    )
    return verdict
