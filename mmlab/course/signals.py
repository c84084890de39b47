"""When a mapping goes wrong, the kernel sends a signal: SIGSEGV and SIGBUS, run safely.

A mapping's permissions live in its VMA (``r--s`` in ``/proc/self/maps``). A store to one of
its pages faults whenever the page table entry does not allow it: the PTE may be empty (the
page was never touched) or *write-protected* (it allows reading only). The kernel then
checks the VMA: if the VMA allows writing, the fault is served (the page is filled in, or
copied for a private mapping: copy-on-write); if it does not, as for a read-only mapping, the
kernel sends the process **SIGSEGV** (segmentation violation). So the VMA decides, not the
PTE: the snippet shows its PTE empty before the store. Python's ``mmap`` object refuses the
write before it reaches memory (``TypeError``), so the snippet writes with
``ctypes.memset``, as C would.

A mapping may also outlive the file's data: if the file is truncated, the pages past its new
end have nothing behind them, and touching one sends **SIGBUS** (bus error), not zeros.

Either signal kills the process, so each snippet runs in a child Python (``-X faulthandler``,
which prints where it died to stderr, then lets the signal kill it; core dumps off), in a
scratch file it creates itself. ``write_read_only(folder)`` and ``touch_past_end(folder)``
return a ``ChildResult``: the signal's name (``SIGSEGV``), the exit code, stdout, stderr and
the code that ran. ``run(code)`` runs any snippet the same way.

A child is also how notebook 01 shows sharing: ``child_writes(path, access)`` has a child
map ``path`` (``ACCESS_WRITE``: ``MAP_SHARED``; ``ACCESS_COPY``: ``MAP_PRIVATE``), write
``CHILD`` at its start and wait, while this process reads the file through its own mapping and
with ``read()`` and counts the file's **dirty** pages (newer in RAM than on storage) with
``dirty_pages``: while the child waits, after it did ``then`` (``"flush"``: ``msync``) and after
it exited. ``why_seen``, ``flush_outcome``, ``why_read_only`` and ``why_truncated`` say, from
what this run saw, what happened and why.
"""

from __future__ import annotations

import mmap
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "READ_ONLY_WRITE",
    "SHARED_WRITE",
    "TRUNCATED_TOUCH",
    "ChildResult",
    "SharedWrite",
    "child_writes",
    "dirty_pages",
    "flush_outcome",
    "fresh_file",
    "run",
    "touch_past_end",
    "why_read_only",
    "why_seen",
    "why_truncated",
    "write_read_only",
]

READ_ONLY_WRITE = """\
import ctypes, mmap, sys
import numpy as np
from mmlab import pagemap
with open(sys.argv[1], "rb") as f:
    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # PROT_READ, MAP_SHARED
address = np.frombuffer(mm, np.uint8).ctypes.data
try:  # the VMA's permissions, and whether the page's PTE is filled yet
    print("VMA:", pagemap.vma(address)["line"].split()[1], end="; ")
    print("PTE present before the store:", bool(pagemap.present(mm)[0]))
except OSError as exc:
    print("cannot read this process's smaps or pagemap:", exc)
print("now writing one byte at", hex(address), flush=True)
ctypes.memset(address, ord("x"), 1)  # a store to a page whose VMA does not allow writing
print("the write went through")
"""

TRUNCATED_TOUCH = """\
import mmap, os, sys
page = mmap.PAGESIZE
with open(sys.argv[1], "r+b") as f:
    mm = mmap.mmap(f.fileno(), 2 * page)  # the file has 2 pages: map both
    os.truncate(sys.argv[1], page)  # now the file ends after its first page
print("mapped 2 pages, truncated the file to 1; reading page 0:", mm[0], flush=True)
print("now reading page 1, past the file's end", flush=True)
print("read", mm[page])
"""

SHARED_WRITE = """\
import mmap, sys
with open(sys.argv[1], "r+b") as f:
    mm = mmap.mmap(f.fileno(), 0, access=getattr(mmap, sys.argv[2]))
mm[:5] = b"CHILD"
print("written", flush=True)
sys.stdin.readline()  # wait until the parent has looked
if sys.argv[3] == "flush":
    mm.flush()
print("done", flush=True)
sys.stdin.readline()  # wait again: the parent counts dirty pages while we still run
"""


@dataclass(frozen=True)
class ChildResult:
    """How a child process ended: killed by ``signal`` (a name) or exited with ``returncode``."""

    code: str
    returncode: int
    signal: str | None
    stdout: str
    stderr: str

    def __str__(self) -> str:
        how = f"killed by {self.signal}" if self.signal else f"exited with {self.returncode}"
        lines = [f"the child was {how}", *(f"  stdout| {x}" for x in self.stdout.splitlines())]
        lines += [f"  stderr| {x}" for x in self.stderr.splitlines() if x.strip()]
        return "\n".join(lines)


# Core dumps off, set by the child itself: a preexec_fn could deadlock in a threaded kernel.
# On the snippet's first line, so that the line numbers in its stderr stay the snippet's own.
_NO_CORE_DUMP = "import resource as _r; _r.setrlimit(_r.RLIMIT_CORE, (0, 0)); "


def run(code: str, *args: str, timeout: float = 30.0) -> ChildResult:
    """Run ``code`` in a child Python with ``args``; how it ended, never raising for a signal."""
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", _NO_CORE_DUMP + code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    name = signal.Signals(-done.returncode).name if done.returncode < 0 else None
    return ChildResult(code, done.returncode, name, done.stdout, done.stderr)


def _scratch(folder: str | os.PathLike[str], pages: int) -> Path:
    fd, name = tempfile.mkstemp(prefix=".mmlab-signal-", suffix=".bin", dir=folder)
    with os.fdopen(fd, "wb") as f:
        f.write(b"m" * pages * os.sysconf("SC_PAGE_SIZE"))
    return Path(name)


def write_read_only(folder: str | os.PathLike[str]) -> ChildResult:
    """A child maps a scratch file in ``folder`` read-only and writes to it: SIGSEGV."""
    path = _scratch(folder, 1)
    try:
        return run(READ_ONLY_WRITE, str(path))
    finally:
        path.unlink(missing_ok=True)


def touch_past_end(folder: str | os.PathLike[str]) -> ChildResult:
    """A child maps 2 pages of a scratch file, truncates it to 1 and reads page 1: SIGBUS."""
    path = _scratch(folder, 2)
    try:
        return run(TRUNCATED_TOUCH, str(path))
    finally:
        path.unlink(missing_ok=True)


def dirty_pages(path: str | os.PathLike[str], ours: mmap.mmap) -> tuple[int | None, str]:
    """Dirty pages of ``path`` and how they were counted: ``cachestat`` (Linux 6.5+), else the
    ``Shared_Dirty`` + ``Private_Dirty`` of our own mapping ``ours`` in ``/proc/self/smaps``."""
    from mmlab.instruments import pagecache, pagemap

    try:
        return pagecache.cache_stats(path).dirty, "cachestat"
    except OSError:
        pass
    try:
        vma = pagemap.vma(ours)
        return (vma["Shared_Dirty"] + vma["Private_Dirty"]) // mmap.PAGESIZE, "smaps"
    except (OSError, KeyError):
        return None, "nothing here can count them"


def fresh_file(path: str | os.PathLike[str], size: int = 10_000) -> None:
    """``path`` rewritten ("hello, mmap! " then zeros) and on storage (fsync): no page dirty."""
    with open(path, "wb") as f:
        f.write(b"hello, mmap! " + bytes(size - 13))
        os.fsync(f.fileno())


@dataclass(frozen=True)
class SharedWrite:
    """What this process saw while a child wrote to a file, and the dirty-page counts."""

    access: str
    then: str
    seen: bytes  # the file's first 12 bytes through our own mapping, while the child waited
    read: bytes  # the same with read()
    dirty: list[int | None]  # while it waits, after it did ``then``, after it exited
    counted_by: str

    def __str__(self) -> str:
        d = self.dirty
        return (
            f"{self.access}: while the child waits, we see {self.seen}, read() gives {self.read}\n"
            f"  dirty pages ({self.counted_by}): {d[0]} while it waits, {d[1]} after it "
            f"{'flushed' if self.then == 'flush' else 'wrote and did not flush'} (still "
            f"running), {d[2]} after it exited"
        )


def child_writes(path: str | os.PathLike[str], access: str, then: str = "nothing") -> SharedWrite:
    """A child maps ``path`` with ``access`` (``"ACCESS_WRITE"`` or ``"ACCESS_COPY"``), writes
    ``CHILD`` and waits; we look and count dirty pages, it does ``then`` ("flush"), we count
    again, it exits, we count again. ``path`` is rewritten first (``fresh_file``)."""
    fresh_file(path)
    with open(path, "rb") as f:
        ours = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # our own shared view
    args = [sys.executable, "-c", SHARED_WRITE, os.fspath(path), access, then]
    child = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if child.stdout.readline().strip() != "written":
            raise RuntimeError(f"the writing child failed (exit code {child.wait(30)})")
        seen, read = bytes(ours[:12]), Path(path).read_bytes()[:12]
        counts = [dirty_pages(path, ours)]
        child.stdin.write("go\n")
        child.stdin.flush()
        child.stdout.readline()  # it did `then`
        counts.append(dirty_pages(path, ours))
        child.communicate("go\n", timeout=30)
        counts.append(dirty_pages(path, ours))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        ours.close()
    return SharedWrite(access, then, seen, read, [d for d, _ in counts], counts[0][1])


def _first(data: bytes) -> str:
    return repr(data[:5].decode("latin-1"))


def why_seen(shared: SharedWrite, private: SharedWrite) -> str:
    """Why we read what we read while the child waited, with a shared and a private mapping."""
    dirty, by = shared.dirty[0], shared.counted_by
    if dirty is None:
        counted = "the dirty pages were not counted here"
    elif dirty:
        counted = f"{dirty} dirty page(s) ({by}): newer in RAM than on storage"
    else:
        counted = f"0 dirty pages ({by}): writeback had already stored the change"
    if shared.seen.startswith(b"CHILD"):
        lines = [
            f"{shared.access} (MAP_SHARED): we read {_first(shared.seen)} while the child "
            "waited, before any flush(): its store went into the page-cache page our mapping "
            f"maps too; read() copies from that same page and gave {_first(shared.read)}; "
            f"{counted}"
        ]
    else:
        lines = [
            f"{shared.access}: we read {_first(shared.seen)}, not the child's write: this "
            "machine did not share the page as MAP_SHARED promises; this run cannot say why"
        ]
    private_dirty = private.dirty[0]
    tail = (
        "the file's dirty pages were not counted"
        if private_dirty is None
        else f"{private_dirty} dirty page(s) of the file"
    )
    kept = (
        "the child's first write copied the page into memory of its own (copy-on-write)"
        if not private.seen.startswith(b"CHILD")
        else "the child's write reached the file: not private here, this run cannot say why"
    )
    lines.append(f"{private.access} (MAP_PRIVATE): we read {_first(private.seen)}: {kept}; {tail}")
    return "\n".join(lines)


def why_truncated(result: ChildResult, page: int = mmap.PAGESIZE) -> str:
    """Why the child that read past its truncated file's end ended as it did."""
    if result.signal == "SIGBUS":
        return (
            f"the child read page 0 and was killed by SIGBUS at page 1: its VMA still covers 2 "
            f"pages ({2 * page:,} bytes), so the read was allowed, but the file now ends at "
            f"{page:,} bytes and page 1 has no data behind it, so the kernel signals a bus "
            "error rather than invent zeros. Zeros are only what lies past the end inside "
            "the file's last page (section 2)"
        )
    if result.signal:
        return f"the child was killed by {result.signal}, not SIGBUS: its stderr says where"
    return (
        f"the child exited with {result.returncode}: the read past the file's end went "
        "through here, which Linux should not allow: this kernel mapped data past the file's "
        "end (a large folio spanning the end?); its output says what it read"
    )


def flush_outcome(shared: SharedWrite, flushed: SharedWrite) -> tuple[str | None, str]:
    """What ``flush()`` changed, measured: ``"dirty"`` (the dirty pages) or ``"read"`` (what
    we read), or None where this run cannot tell; and why, from both runs' counts."""
    without, flushed_count = shared.dirty[1], flushed.dirty[1]
    if shared.seen != flushed.seen:
        return "read", (
            f"we read {_first(shared.seen)} without flush() and {_first(flushed.seen)} with it, "
            "before the flush ran: this run cannot say why the two differ"
        )
    if None in (without, flushed_count):
        return None, (
            f"no dirty-page count here ({flushed.counted_by}): this run cannot tell what "
            f"flush() changed; we read {_first(flushed.seen)} with or without it"
        )
    if flushed_count < without:
        return "dirty", (
            f"flush() took the file's dirty pages from {flushed.dirty[0]} to {flushed_count} "
            f"(without it: {without}; {flushed.counted_by}), while we read "
            f"{_first(flushed.seen)} both times, before any flush: the change was visible "
            "through the shared page cache already; flush() (msync) wrote it to storage, so "
            "it survives a crash"
        )
    return None, (
        f"the dirty counts do not differ ({without} without flush(), {flushed_count} with it): "
        "writeback may have written the pages meanwhile, so this run cannot tell"
    )


def why_read_only(result: ChildResult) -> str:
    """Why the child that stored to its read-only mapping ended as it did, from its output."""
    found = re.search(r"VMA: (\S+); PTE present before the store: (\w+)", result.stdout)
    vma, pte = found.groups() if found else ("not read here", "not read here")
    if result.signal == "SIGSEGV":
        return (
            f"killed by SIGSEGV: the store faulted (its PTE present: {pte}), and the kernel "
            f"found the VMA ({vma}) without write permission: a segmentation violation. "
            "Under a VMA that allows writing, the same fault would have been served"
        )
    if result.signal:
        return f"killed by {result.signal}, not SIGSEGV (VMA {vma}): its stderr says where"
    return (
        f"the child exited with {result.returncode}: its store to a {vma} mapping went "
        "through, which Linux does not allow; its output says what happened"
    )
