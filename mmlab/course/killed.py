"""Notebook 08's killed writers: what a SIGKILL loses, and why the order of writes matters.

SIGKILL ends a process at once, but the kernel keeps the page cache: whatever the process
had stored into a shared mapping, or handed to ``write()``, belongs to the file now.

* ``killed_mapping_writer``: a child writes through a shared mapping, never flushes, and is
  SIGKILLed; the parent reads every byte back (each page starts with its own index, so no
  page can pass for a hole of zeros). Nothing is lost.
* ``killed_buffered_writer``: the same with Python's buffered ``open(...).write()``: bytes
  still in the process's own buffer (not yet handed to the kernel) die with it; after
  ``f.flush()`` (a ``write()`` system call) they are the page cache's and survive.
* ``killed_counters``: publish after the data, or before it. A child fills fixed-size
  records (each in two halves, with a pause between, as a program computing them would) and
  writes the count that publishes them either after each record's data or before it; killed
  at random moments, the count-first file is found naming a record not (fully) written.
* ``killed_store_writer``: a child appends to a ``RecordStore``, flushing every ``batch``;
  killed at a random moment, the reopened store must hold a prefix of the source records,
  as many as some flush published (a multiple of ``batch``, at least the last one reported).

A SIGKILL checks the *program's order* of its writes, nothing more: every store it made is
still in the page cache. That ``RecordStore.flush`` also makes the data durable (``msync``)
before it writes the count matters only for a power loss or a kernel crash, which this
notebook explains and does not simulate.
"""

from __future__ import annotations

import os
import random
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from mmlab.course.hazards import died_of, started

__all__ = [
    "KilledStore",
    "buffered_lines",
    "counter_lines",
    "killed_buffered_writer",
    "killed_counters",
    "killed_mapping_writer",
    "killed_store_writer",
    "mapping_lines",
    "source_record",
    "store_lines",
    "store_values",
    "why_nothing_lost",
]

_PAGE = 4096


def _kill(child: subprocess.Popen) -> None:
    child.kill()
    child.wait()


def _ready(child: subprocess.Popen, what: str) -> None:
    if not child.stdout.readline():  # its first line, or end of file: it died first
        raise RuntimeError(f"the {what} died before it was ready")


# -- a mapping writer, and a buffered writer --------------------------------------------------

_MAP_WRITER = """
import mmap, sys, time
path, size = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    mm = mmap.mmap(f.fileno(), size)
    for i in range(0, size, 4096):
        page = i // 4096
        mm[i:i + 4096] = page.to_bytes(8, "little") + bytes([page % 251 + 1]) * 4088
    print("written", flush=True)
    time.sleep(60)  # waits here, its writes never flushed, until it is killed
"""


def _pattern(size: int) -> bytes:
    return b"".join(
        p.to_bytes(8, "little") + bytes([p % 251 + 1]) * (_PAGE - 8) for p in range(size // _PAGE)
    )


def killed_mapping_writer(path: str | os.PathLike[str], size: int) -> dict:
    """A child writes ``size`` bytes through a mapping, never flushes, and is SIGKILLed;
    then this process reads the file with ``read()`` and deletes it. Returns what it found."""
    from mmlab.instruments.writeback import dirty_pages

    size -= size % _PAGE
    with open(path, "wb") as f:
        f.truncate(size)
    try:
        with started(_MAP_WRITER, str(path), str(size)) as child:
            _ready(child, "mapping writer")  # "written"
            _kill(child)
        dirty = dirty_pages(path)
        got = Path(path).read_bytes()
    finally:
        Path(path).unlink(missing_ok=True)
    want = _pattern(size)
    lost = sum(a != b for a, b in zip(memoryview(got), memoryview(want), strict=True))
    return {"returncode": child.returncode, "bytes": size, "lost": lost, "dirty_after": dirty}


_BUFFERED = """
import sys, time
path, nbytes, flush = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "flush"
f = open(path, "wb")  # buffered: Python keeps a block's worth in the process before write()
for _ in range(nbytes // 30):
    f.write(b"one record of thirty bytes....")
if flush:
    f.flush()  # the write() system call: now the bytes are the page cache's
print("written", flush=True)
time.sleep(60)
"""


def killed_buffered_writer(folder: str | os.PathLike[str], nbytes: int = 3000) -> dict:
    """Two children ``open(...).write()`` ``nbytes`` (30-byte records, less than Python's
    buffer) and are SIGKILLed, one without and one
    after ``f.flush()``: the bytes found in each file afterwards."""
    found = {"nbytes": nbytes - nbytes % 30}
    for how in ("no flush", "flush"):
        path = Path(folder) / "buffered.txt"
        try:
            with started(_BUFFERED, str(path), str(nbytes), how) as child:
                _ready(child, "buffered writer")  # "written"
                _kill(child)
            found[how] = path.stat().st_size
        finally:
            path.unlink(missing_ok=True)
    return found


# -- publish after the data, or before it ------------------------------------------------------

_COUNTER_WRITER = """
import mmap, sys, time
path, records, first = sys.argv[1], int(sys.argv[2]), sys.argv[3]
size = 4096 * (records + 1)
with open(path, "r+b") as f:
    mm = mmap.mmap(f.fileno(), size)
    print("ready", flush=True)
    for i in range(records):
        at, fill = 4096 * (i + 1), bytes([i % 251 + 1]) * 2048
        if first == "count":
            mm[0:8] = (i + 1).to_bytes(8, "little")  # published before the data is there
        mm[at:at + 2048] = fill
        time.sleep(0.001)  # computing the rest of the record
        mm[at + 2048:at + 4096] = fill
        if first == "data":
            mm[0:8] = (i + 1).to_bytes(8, "little")  # published after the whole record
    time.sleep(60)
"""


def _counter_consistent(data: bytes) -> bool:
    count = int.from_bytes(data[:8], "little")
    return all(
        data[_PAGE * (i + 1) : _PAGE * (i + 2)] == bytes([i % 251 + 1]) * _PAGE
        for i in range(count)
    )


def killed_counters(
    folder: str | os.PathLike[str], trials: int = 5, records: int = 2000, seed: int = 8
) -> dict[str, list[bool]]:
    """Kill the data-first and the count-first writer ``trials`` times each at random
    moments; for each kill, whether the count named only whole records."""
    rng = random.Random(seed)
    path = Path(folder) / "counted.bin"
    found: dict[str, list[bool]] = {"data first": [], "count first": []}
    try:
        for _ in range(trials):
            wait = rng.uniform(0.02, 0.3)
            for name, first in (("data first", "data"), ("count first", "count")):
                with open(path, "wb") as f:
                    f.truncate(_PAGE * (records + 1))
                with started(_COUNTER_WRITER, str(path), str(records), first) as child:
                    _ready(child, "counter writer")  # "ready"
                    time.sleep(wait)
                    _kill(child)
                found[name].append(_counter_consistent(path.read_bytes()))
    finally:
        path.unlink(missing_ok=True)
    return found


def counter_lines(found: dict[str, list[bool]]) -> list[str]:
    """``killed_counters``'s findings: one line per writer, consistent kills of all."""
    lines = []
    for name, kills in found.items():
        when = "after" if name == "data first" else "before"
        bad = kills.count(False)
        lines.append(
            f"count written {when} each record's data: {len(kills) - bad} of {len(kills)} "
            f"kills left a consistent file, {bad} a count naming a record not (fully) written"
        )
    return lines


# -- a RecordStore writer killed mid-append ---------------------------------------------------


def source_record(i: int) -> tuple[str, list[float]]:
    """The ``i``-th record the killed writer appends: known to both processes."""
    return "C" * (i % 9 + 1) + f"O{i}", [float(i) * 0.5]


_STORE_WRITER = """
import sys, time
from mmlab import RecordStore
from mmlab.course.killed import source_record
path, batch = sys.argv[1], int(sys.argv[2])
with RecordStore.create(path, ("value",), capacity=1024, overwrite=True) as store:
    print("ready", flush=True)
    i, end = 0, time.monotonic() + 60  # killed long before; bounded if it is not
    while time.monotonic() < end and i < 2_000_000:
        store.append(*source_record(i))
        i += 1
        if i % batch == 0:
            store.flush()
            print(i, flush=True)
"""


@dataclass(frozen=True)
class KilledStore:
    """One killed writer: the last flush it reported, and what the reopened store held."""

    last_reported: int
    count: int | None  # records in the reopened store (None: it did not open)
    prefix_ok: bool  # every record equals the source's
    error: str | None  # why it did not open
    batch: int = 1

    @property
    def consistent(self) -> bool:
        """A prefix, as many as some flush published: the last reported, or the next."""
        return (
            self.count is not None
            and self.prefix_ok
            and self.count % self.batch == 0
            and self.last_reported <= self.count <= self.last_reported + self.batch
        )


def _rest(stream, until: float) -> str:
    text = ""
    while time.perf_counter() < until and select.select([stream], [], [], 0.01)[0]:
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            break
        text += chunk.decode()
    return text


def _reopen(path: Path, last: int, batch: int) -> KilledStore:
    from mmlab import RecordStore

    try:
        with RecordStore.open(path) as store:
            count = len(store)
            ok = all(
                store.smiles(i) == source_record(i)[0]
                and list(store[i].values) == source_record(i)[1]
                for i in range(count)
            )
        return KilledStore(last, count, ok, None, batch)
    except Exception as error:  # a store that does not open is the finding
        return KilledStore(last, None, False, f"{type(error).__name__}: {error}", batch)


def killed_store_writer(
    folder: str | os.PathLike[str], trials: int = 5, batch: int = 200, seed: int = 8
) -> list[KilledStore]:
    """Kill a writer appending to a RecordStore (flush every ``batch``) at random moments."""
    rng = random.Random(seed)
    path = Path(folder) / "killed.mms"
    found = []
    try:
        for _ in range(trials):
            with started(_STORE_WRITER, str(path), str(batch)) as child:
                _ready(child, "store writer")  # "ready": the store exists
                time.sleep(rng.uniform(0.05, 0.5))
                _kill(child)
                output = _rest(child.stdout, time.perf_counter() + 2)
            numbers = [int(w) for w in output.split() if w.isdigit()]
            found.append(_reopen(path, numbers[-1] if numbers else 0, batch))
    finally:
        path.unlink(missing_ok=True)
    return found


# -- what the notebook prints ---------------------------------------------------------------


def mapping_lines(found: dict) -> list[str]:
    """``killed_mapping_writer``'s findings: how the child died, bytes read back, dirty."""
    dirty = found["dirty_after"]
    left = (
        f"{dirty:,} pages of the file were still dirty after the kill"
        if isinstance(dirty, int)
        else f"dirty pages not counted ({dirty})"
    )
    return [
        f"the child {died_of(found['returncode'])}",
        f"read back with read(): {found['bytes'] - found['lost']:,} of {found['bytes']:,} "
        f"bytes as the child wrote them, {found['lost']:,} lost",
        left,
    ]


def why_nothing_lost(found: dict) -> str:
    """Why a killed mapping writer lost nothing (``killed_mapping_writer``'s findings)."""
    dirty = found["dirty_after"]
    pending = (
        f" {dirty:,} of its pages were still dirty: not yet on storage, yet every reader sees "
        "them, because every reader reads the page cache."
        if isinstance(dirty, int) and dirty
        else ""
    )
    return (
        f"the child's writes went into the page cache's pages of the file, not into memory of "
        f"its own: killing it unmapped them, and the kernel kept them.{pending} They reach "
        "storage at writeback; a power loss before that would lose them, a killed process "
        "cannot"
    )


def buffered_lines(found: dict) -> list[str]:
    """``killed_buffered_writer``'s findings: the bytes kept without and after a flush."""
    n, kept, flushed = found["nbytes"], found["no flush"], found["flush"]
    lost = (
        "they were in the process's own buffer, and died with it"
        if kept < n
        else "Python's buffer was smaller than that here: write() had already been called"
    )
    return [
        f"open().write() of {n:,} bytes in 30-byte records, no flush, then SIGKILL: the file "
        f"holds {kept:,} bytes ({lost})",
        f"the same after f.flush(): the file holds {flushed:,} bytes"
        + (
            " (flush() handed them to the kernel: the page cache's now, like the mapping's pages)"
            if flushed == n
            else ""
        ),
    ]


def store_lines(found: list[KilledStore]) -> list[str]:
    """``killed_store_writer``'s findings: one line per kill, and stores ahead of a report."""
    lines = []
    for k, trial in enumerate(found, start=1):
        if trial.count is None:
            lines.append(f"kill {k}: the store did not open: {trial.error}")
            continue
        state = "consistent" if trial.consistent else "NOT consistent"
        lines.append(
            f"kill {k}: last flush reported {trial.last_reported:,}; the reopened store holds "
            f"{trial.count:,} records, {'each' if trial.prefix_ok else 'NOT each'} equal to the "
            f"source's: {state}"
        )
    more = [t for t in found if t.count is not None and t.count > t.last_reported]
    if more:
        lines.append(
            f"{len(more)} of {len(found)} stores hold more than the last flush reported: the "
            "child was killed after a flush published its count, before it could print it"
        )
    return lines


def store_values(found: list[KilledStore]) -> dict:
    """The killed writers' findings, for the notebook's tests."""
    return {
        "store_kills": len(found),
        "store_all_consistent": all(t.consistent for t in found),
        "store_counts": [t.count for t in found],
        "store_last_reported": [t.last_reported for t in found],
        "store_batch": found[0].batch if found else None,
    }
