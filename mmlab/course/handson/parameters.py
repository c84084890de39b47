"""Notebook 01's hands-on checks: a private edit (copy-on-write) and a shared, stored write.

``copy_on_write(private_edit)``: the student's ``private_edit(path)`` maps a file so that its
writes stay private (``ACCESS_COPY``: ``MAP_PRIVATE``), writes ``b"HELLO"`` over its first
five bytes and returns the open mapping. The check reads the mapping (it must say
``HELLO``) and the file with ``read()`` (it must still say ``hello``: the page cache, what
every other process sees, is untouched), and counts the pages the process now owns: the
``Anonymous`` bytes of the mapping's VMA in ``/proc/self/smaps`` (a VMA that must map the
file: anonymous memory holding a copy is not a mapping of it). A write to a private file
mapping copies the written page into memory of the process's own (copy-on-write), page by
page: five bytes cost one page, a rewrite of the whole file costs every page. The count is
judged against the reference solution's, measured in the same call on a file of its own.

``visible_and_stored(shared_write)``: the student's ``shared_write(path)`` runs in a forked
child process and must put ``b"CHILD"`` at the start of the file through a mapping, so that
another process sees it at once, and on storage by the time it returns. While the child still
runs, this process reads the file through its own mapping, counts the file's dirty pages
(newer in RAM than on storage: ``signals.dirty_pages``) and the bytes the child passed to
``write()`` (``wchar`` of its ``/proc/self/io``). ``MAP_SHARED`` makes the store visible;
``flush()`` (``msync``) makes the page clean before the function returns (writeback would,
only later: ``dirty_expire_centisecs``); ``write()`` is not a mapping. The reference, which
flushes, runs before and after the student's function: were its pages still dirty, this run
could not judge the student's flush, and the verdict says so.
"""

from __future__ import annotations

import contextlib
import io
import json
import mmap
import os
import select
import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmlab.course.handson.verdict import Verdict, attempt

__all__ = ["copy_on_write", "visible_and_stored"]

_PAGES = 64  # the exercise file: several pages, so a write to all of them shows
_START = b"hello, mmap! "


def _exercise_file(name: str) -> Path:
    """A fresh file under data/ (as the notebooks make theirs), on storage: no page dirty."""
    folder = Path("data")
    folder.mkdir(exist_ok=True)
    path = folder / name
    with open(path, "wb") as f:
        f.write(_START + bytes(_PAGES * mmap.PAGESIZE - len(_START)))
        os.fsync(f.fileno())
    return path


def _dirty(path: Path) -> int | None:
    from mmlab.instruments import pagecache

    try:
        return pagecache.cache_stats(path).dirty
    except OSError:
        return None


# ------------------------------------------------------------------ copy-on-write


def _reference_private_edit(path: str | os.PathLike[str]) -> mmap.mmap:
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    mm[:5] = b"HELLO"
    return mm


def _private_run(fn: Callable, name: str) -> dict[str, Any]:
    """Run ``fn`` on a fresh file; what its mapping reads, what the file says, what it owns."""
    from mmlab.instruments import pagemap

    path = _exercise_file(name)
    tried = attempt(fn, path)
    found: dict[str, Any] = {"error": tried.error, "returned": type(tried.result).__name__}
    mm = tried.result
    if tried.ok and isinstance(mm, mmap.mmap) and not mm.closed:
        found["reads"] = bytes(mm[:5])
        try:
            vma = pagemap.vma(mm)
            found["owned"], found["maps_file"] = vma["Anonymous"], vma["line"].endswith(name)
        except (OSError, KeyError) as error:
            found["owned_unknown"] = str(error) or "no Anonymous field in smaps"
    found["file"] = path.read_bytes()[:5]
    found["dirty"] = _dirty(path)
    if isinstance(mm, mmap.mmap) and not mm.closed:
        mm.close()
    return found


def copy_on_write(private_edit: Callable) -> Verdict:
    """Check ``private_edit(path)``: HELLO in its mapping, hello in the file, one page owned."""
    reference = _private_run(_reference_private_edit, "cow-reference.bin")
    student = _private_run(private_edit, "cow.bin")
    verdict = Verdict("copy_on_write", measured={"student": student, "reference": reference})
    verdict.hint = (
        "which access= mode maps a file MAP_PRIVATE (section 1)? Write only the first 5 "
        "bytes, and return the mapping still open: the check reads it"
    )
    if student["error"]:
        verdict.off.append(f"private_edit raised an error: {student['error']}")
        return verdict
    if "reads" not in student:
        verdict.off.append(f"private_edit returned a {student['returned']}, not an open mmap")
        return verdict
    if not student.get("maps_file", True):
        verdict.off.append(
            "the mapping you returned is not a mapping of the file: it is anonymous memory, "
            "so nothing of the file was copied on write"
        )
    wrote = student["reads"] == b"HELLO"
    if wrote:
        verdict.right.append("the mapping reads b'HELLO': this process sees its own write")
    else:
        verdict.off.append(f"the mapping reads {student['reads']!r}, not b'HELLO'")
    # An untouched file and no dirty page are only right once the write happened: until
    # then they are what doing nothing gives, and saying "right" would praise nothing.
    if student["file"] == b"hello":
        if wrote:
            verdict.right.append("read() of the file still gives b'hello': no one else sees it")
    else:
        verdict.off.append(
            f"read() of the file now gives {student['file']!r}: the write reached the page "
            "cache that every process shares (a MAP_SHARED mapping, ACCESS_WRITE)"
        )
    _judge_owned(verdict, student, reference)
    if student["dirty"] is not None and (wrote or student["dirty"]):
        (verdict.right if student["dirty"] == 0 else verdict.off).append(
            f"{student['dirty']} page(s) of the file dirty (cachestat): "
            + (
                "nothing for writeback to write"
                if student["dirty"] == 0
                else "the file itself changed, and writeback will store the change"
            )
        )
    return verdict


def _judge_owned(verdict: Verdict, student: dict, reference: dict) -> None:
    """The pages the write made this process own, against the page size and the reference."""
    page = mmap.PAGESIZE
    if "owned" not in student or "owned" not in reference:
        why = student.get("owned_unknown") or reference.get("owned_unknown")
        verdict.right.append(f"the pages this process owns cannot be counted here: {why}")
        return
    owned, expected = student["owned"], reference["owned"]
    said = (
        f"the write made this process own {owned:,} bytes ({owned // page} page(s) of "
        f"{page:,} bytes) in the mapping's VMA; the reference, {expected:,} bytes"
    )
    if owned == 0:
        verdict.off.append(f"{said}: no page was copied, so nothing was written privately")
    elif owned <= max(expected, page):
        verdict.right.append(f"{said}: copy-on-write copied only the page written to")
    else:
        verdict.off.append(
            f"{said}: copy-on-write copies each page written to, so writing "
            f"{owned // page} pages copied them all; write only the 5 bytes"
        )


# ------------------------------------------------------------------ visible and stored


def _reference_shared_write(path: str | os.PathLike[str]) -> None:
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE)
    mm[:5] = b"CHILD"
    mm.flush()
    mm.close()


def _wchar() -> int | None:
    from mmlab.instruments import proc

    counters = proc.proc_io()
    return None if counters is None or "wchar" not in counters else counters["wchar"]


def _in_child(fn: Callable, path: Path, report: int, go: int) -> None:
    """In the forked child: run ``fn``, report to the parent, wait for it, and exit."""
    status: dict[str, Any] = {}
    try:
        sys.stdout = sys.stderr = io.StringIO()  # the kernel's streams belong to the parent
        before = _wchar()
        tried = attempt(fn, path)
        after = _wchar()
        status = {"error": tried.error}
        status["wchar"] = None if None in (before, after) else after - before
    except BaseException as error:  # never return into the parent's code
        status = {"error": f"{type(error).__name__}: {error}"}
    finally:
        try:  # one short write: a pipe takes 4 KiB at once, so the parent reads it whole
            if status.get("error"):
                status["error"] = status["error"][-2000:]
            os.write(report, json.dumps(status).encode()[:4000] + b"\n")
            os.read(go, 1)  # still alive while the parent looks
        finally:
            os._exit(0)


def _shared_run(fn: Callable, name: str, timeout: float = 30.0) -> dict[str, Any]:
    """Run ``fn(path)`` in a forked child; while it waits, look at the file and count."""
    from mmlab.course import signals

    path = _exercise_file(name)
    with open(path, "rb") as f:
        ours = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    report_r, report_w = os.pipe()
    go_r, go_w = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns of fork in a threaded kernel: the child
        warnings.simplefilter("ignore", DeprecationWarning)  # only runs fn, then exits
        pid = os.fork()
    if pid == 0:
        _in_child(fn, path, report_w, go_r)
    os.close(report_w)
    os.close(go_r)
    try:
        ready, _, _ = select.select([report_r], [], [], timeout)
        raw = os.read(report_r, 65536) if ready else b""
        if not ready:
            os.kill(pid, signal.SIGKILL)  # stuck in the student's function: end it
        try:
            found = json.loads(raw) if raw else {"error": _no_answer(ready, timeout)}
        except ValueError:  # cut short: the child died while writing
            found = {"error": "the child's report arrived incomplete: run the check again"}
        found["seen"] = bytes(ours[:5]).decode("latin-1")
        found["read"] = path.read_bytes()[:5].decode("latin-1")
        found["dirty"], found["counted_by"] = signals.dirty_pages(path, ours)
    finally:
        with contextlib.suppress(BrokenPipeError):  # the child may be gone: exited, killed
            os.write(go_w, b"x")
        for fd in (go_w, report_r):
            os.close(fd)
        os.waitpid(pid, 0)
        ours.close()
    return found


def _no_answer(ready: bool, timeout: float) -> str:
    if ready:
        return "the child process ended without an answer: did your function end the process?"
    return (
        f"no answer within {timeout:g} s: the function did not return, or the forked child "
        "hung on a lock another thread of this kernel held when it forked: run the check again"
    )


def visible_and_stored(shared_write: Callable) -> Verdict:
    """Check ``shared_write(path)``, run in a child: CHILD seen at once, clean, no write()."""
    before = _shared_run(_reference_shared_write, "shared-reference.bin")
    student = _shared_run(shared_write, "shared.bin")
    after = _shared_run(_reference_shared_write, "shared-reference.bin")
    verdict = Verdict(
        "visible_and_stored", measured={"student": student, "reference": [before, after]}
    )
    verdict.hint = (
        "other processes see a store at once through a MAP_SHARED mapping (which access=, and "
        "which open() mode lets it write?); and what makes its dirty page clean before you "
        "return?"
    )
    if student["error"]:
        verdict.off.append(f"shared_write raised an error: {student['error']}")
        return verdict
    if student["seen"] == "CHILD":
        verdict.right.append(
            "while your process still ran, ours read 'CHILD' through its own mapping: one "
            "page-cache page, shared"
        )
    else:
        verdict.off.append(
            f"while your process still ran, ours read {student['seen']!r} through its mapping: "
            "the write stayed in your process (a private mapping, ACCESS_COPY?) or never happened"
        )
    if student["seen"] == "CHILD":  # until the write is seen, "no write()" praises nothing
        _judge_write_calls(verdict, student, before, after)
    _judge_dirty(verdict, student, before, after)
    return verdict


def _judge_write_calls(verdict: Verdict, student: dict, *references: dict) -> None:
    """Bytes passed to write() by the child: a store through a mapping passes none."""
    counts = [r["wchar"] for r in (student, *references)]
    if None in counts:
        verdict.right.append("the bytes passed to write() cannot be counted here (/proc/self/io)")
        return
    baseline = max(counts[1:])
    if counts[0] - baseline >= len("CHILD"):
        verdict.off.append(
            f"your process passed {counts[0]:,} bytes to write() (the reference {baseline:,}): "
            "write() changes the file too, but the exercise is to change it through a mapping"
        )
    else:
        verdict.right.append(
            f"{counts[0]:,} bytes passed to write() (the reference: {baseline:,}): the change "
            "went through the mapping, as a store to memory"
        )


def _judge_dirty(verdict: Verdict, student: dict, *references: dict) -> None:
    """Dirty pages of the file once the function returned: a flush leaves none."""
    dirty, by = student["dirty"], student["counted_by"]
    if dirty is None or student["seen"] != "CHILD":
        if dirty is None:
            verdict.right.append(f"dirty pages cannot be counted here: {by}")
        return
    if dirty == 0:
        verdict.right.append(
            f"0 dirty pages of the file ({by}) when your function returned: flush() wrote "
            "the change to storage, so it survives a crash"
        )
    elif any(r["dirty"] for r in references):
        verdict.right.append(
            f"{dirty} dirty page(s) of the file ({by}), but the reference's pages were dirty "
            "too: writeback was not done, this run cannot judge your flush"
        )
    else:
        verdict.off.append(
            f"{dirty} dirty page(s) of the file ({by}) when your function returned, where "
            "the reference left 0: the others see the change, but it is only in RAM until "
            "writeback (a crash now would lose it): flush() it"
        )
