"""Notebook 08's hazards of writing through a mapping, each shown in a child process.

(The killed writers are ``mmlab.course.killed``.)

* ``truncated_mapping``: a child maps a file, another descriptor truncates it, and the child
  touches a page past the new end: SIGBUS (returncode -7).
* ``tiny_filesystem``: on a tmpfs of ``size`` bytes (in a private mount namespace made by
  ``unshare``, as root or with a user namespace; as root without ``unshare``, mounted here and
  unmounted after; else skipped with the reason), a child fills a sparse file through a
  mapping: SIGBUS when tmpfs cannot allocate a page within its size (on a disk: when no
  block can be reserved). Then ``RecordStore.create`` there, for ever larger stores: the
  first that does not fit fails with ``NoSpaceError`` at once, because it reserves its
  space first.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TinyFs",
    "died_of",
    "outcome",
    "started",
    "tiny_filesystem",
    "tiny_lines",
    "truncated_mapping",
    "why_truncated",
]


def died_of(returncode: int) -> str:
    """A child's return code in plain words."""
    if returncode >= 0:
        return f"exited normally with status {returncode}"
    sig = signal.Signals(-returncode)
    plain = {
        signal.SIGBUS: "a bus error: it touched a mapped page with no file data behind it",
        signal.SIGKILL: "SIGKILL: killed outright, with no chance to clean up",
        signal.SIGSEGV: "a segmentation fault: an address its mappings do not allow",
    }
    return f"was killed by {sig.name} (returncode {returncode}): {plain.get(sig, sig.name)}"


# Each child first asks the kernel to SIGKILL it when this process (the thread that started
# it) dies, PR_SET_PDEATHSIG, and exits at once if this process is already gone.
_ORPHANED = """
import ctypes, os, signal
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != int(os.environ["MMLAB_PARENT"]):
    os._exit(1)
"""


@contextmanager
def started(code: str, *args: str) -> Iterator[subprocess.Popen]:
    """A Python child running ``code`` (its stdout a pipe), SIGKILLed on leaving the ``with``
    if still alive, whatever ends it (an error, Ctrl-C), and when this process dies."""
    child = subprocess.Popen(
        [sys.executable, "-c", _ORPHANED + code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # killed anyway; nothing of it may reach the notebook
        env={**os.environ, "MMLAB_PARENT": str(os.getpid())},
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()


def _python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout
    )


# -- SIGBUS: a truncated file ------------------------------------------------------------------

_TRUNCATED = """
import mmap, os, sys
path = sys.argv[1]
with open(path, "r+b") as f:
    mm = mmap.mmap(f.fileno(), 3 * 4096)
    os.truncate(path, 4096)  # as another program would
    print("truncated", flush=True)
    mm[2 * 4096] = 1  # the third page: past the file's new end
    print("wrote past the end", flush=True)
"""


def truncated_mapping(folder: str | os.PathLike[str]) -> dict:
    """A child maps a 3-page file, truncates it to one page, writes to the third page."""
    path = Path(folder) / "truncated.bin"
    try:
        path.write_bytes(b"\0" * 3 * 4096)
        child = _python(_TRUNCATED, str(path))
    finally:
        path.unlink(missing_ok=True)
    return {
        "returncode": child.returncode,
        "said": child.stdout.splitlines(),
        "how": died_of(child.returncode),
    }


# -- SIGBUS: no blocks left, and the store's cure ------------------------------------------------

_FILL = """
import mmap, sys
path, size = sys.argv[1], int(sys.argv[2])
with open(path, "wb") as f:
    f.truncate(size)  # sparse: no blocks yet, whatever room the file system has
with open(path, "r+b") as f:
    mm = mmap.mmap(f.fileno(), size)
    for i in range(0, size, 4096):
        mm[i] = 1  # each new page needs a block now
print("filled", flush=True)
"""

_ON_TINY = """
import json, os, subprocess, sys
folder, size, fill = sys.argv[1], int(sys.argv[2]), sys.argv[3]
found = {}
child = subprocess.run([sys.executable, "-c", fill, folder + "/sparse.bin", str(4 * size)],
                       capture_output=True, text=True)
found["returncode"] = child.returncode
os.unlink(folder + "/sparse.bin")
from mmlab import NoSpaceError, RecordStore
capacity, path = 16, folder + "/store.mms"
while capacity < 2**24:  # double the store until it no longer fits: the first too big fails
    try:
        RecordStore.create(path, ("value",), capacity=capacity, overwrite=True).close()
        found["fits"] = [capacity, os.path.getsize(path)]
    except NoSpaceError as error:
        found["create"] = f"{capacity:,} records: NoSpaceError: {error}"
        break
    capacity *= 2
found["free"] = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
print(json.dumps(found))
"""


@dataclass(frozen=True)
class TinyFs:
    """The tiny file system's demo: how it was mounted, or why it could not be."""

    how: str | None  # how it was mounted; None: skipped
    skipped: str | None  # why there was no tiny file system
    returncode: int | None  # the sparse-file child's
    create: str | None  # what RecordStore.create said for the first store too big
    fits: tuple[int, int] | None = None  # the largest store created: records, bytes
    gone: str = ""  # what became of the mount
    size: int = 2**20  # the tmpfs's bytes (the sparse file: four times as many)

    @property
    def sigbus(self) -> bool:
        return self.returncode == -signal.SIGBUS


def _last_words(child: subprocess.CompletedProcess) -> str:
    return (child.stderr.strip() or f"returncode {child.returncode}").splitlines()[-1]


def _found(how: str, child: subprocess.CompletedProcess, gone: str, size: int) -> TinyFs:
    found = json.loads(child.stdout)
    fits = tuple(found["fits"]) if "fits" in found else None
    return TinyFs(how, None, found["returncode"], found.get("create"), fits, gone, size)


def _host_mount(size: int) -> TinyFs | str:
    """As root without unshare: a tmpfs in this mount namespace, unmounted after, checked."""
    folder = Path(tempfile.mkdtemp(prefix="mmlab_tiny_"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode:
        folder.rmdir()
        return f"mount failed: {mounted.stderr.strip()}"
    try:
        child = _python(_ON_TINY, str(folder), str(size), _FILL)
    except subprocess.TimeoutExpired as error:
        child = f"the demonstration took longer than {error.timeout:g} s there"
    finally:
        gone = "unmounted afterwards"
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
            lazy = subprocess.run(["umount", "-l", str(folder)], capture_output=True)
            gone = (
                "busy at umount, detached lazily (umount -l)"
                if lazy.returncode == 0
                else f"STILL MOUNTED on {folder}: umount failed"
            )
        if not gone.startswith("STILL"):
            shutil.rmtree(folder, ignore_errors=True)
    if isinstance(child, str):
        return child
    if child.returncode:
        return f"the demonstration failed there: {_last_words(child)}"
    return _found("mount as root", child, gone, size)


def _unshared(size: int, root: bool) -> TinyFs | str:
    if shutil.which("unshare") is None:
        return "no unshare command"
    folder = Path(tempfile.mkdtemp(prefix="mmlab_tiny_"))
    script = 'mount -t tmpfs -o size="$1" tmpfs "$0" && exec "$2" -c "$3" "$0" "$1" "$4"'
    flags = ["--mount", "--propagation", "private"] if root else ["--user", "--map-root-user",
                                                                   "--mount"]  # fmt: skip
    try:
        child = subprocess.run(
            ["unshare", *flags, "sh", "-c", script,
             str(folder), str(size), sys.executable, _ON_TINY, _FILL],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    except subprocess.TimeoutExpired as error:  # killed by run(); its namespace went with it
        return f"unshare {' '.join(flags)} took longer than {error.timeout:g} s"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if child.returncode:
        return f"unshare {' '.join(flags)} failed: {_last_words(child)}"
    how = (
        "unshare as root (a private mount namespace)"
        if root
        else "unshare (a private user and mount namespace)"
    )
    return _found(how, child, "it existed only in that namespace and vanished with it", size)


def tiny_filesystem(size: int = 2**20) -> TinyFs:
    """Fill a sparse file on a ``size``-byte tmpfs through a mapping, in a child; then
    create ever larger RecordStores there until one does not fit. The tmpfs lives in a
    private mount namespace (``unshare``), so it vanishes with the child whatever happens;
    as root without ``unshare``, it is mounted here and unmounted after. Else skipped."""
    tried = []
    root = os.geteuid() == 0
    found = _unshared(size, root)
    if isinstance(found, TinyFs):
        return found
    tried.append(found)
    if root:
        found = _host_mount(size)
        if isinstance(found, TinyFs):
            return found
        tried.append(f"as root, {found}")
    return TinyFs(
        None,
        "no small file system could be mounted here ("
        + "; ".join(tried)
        + "): mounting needs root, or unprivileged user namespaces (off in most containers "
        "and JupyterHubs, and restricted by AppArmor on Ubuntu 23.10 and later)",
        None,
        None,
        size=size,
    )


# -- what the notebook prints ---------------------------------------------------------------


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:g} {unit}"
    return f"{nbytes:,} bytes"


def tiny_lines(tiny: TinyFs) -> list[str]:
    """The tiny file system's demo in words (its sizes from ``tiny.size``), or why it was
    skipped."""
    if tiny.how is None:
        return [
            f"not shown here: {tiny.skipped}",
            "so you see the explanation above, not the signal",
        ]
    lines = [
        f"a {_size(tiny.size)} tmpfs, mounted by {tiny.how}; {tiny.gone}",
        f"filling a {_size(4 * tiny.size)} sparse file through a mapping: the child "
        f"{died_of(tiny.returncode)}"
        + ("; here: tmpfs could allocate no page beyond its size" if tiny.sigbus else ""),
    ]
    if tiny.fits:
        lines.append(
            f"RecordStore.create there: {tiny.fits[0]:,} records ({tiny.fits[1]:,} bytes, "
            "space reserved) fitted"
        )
    lines.append(
        "the next store, twice as many records (its file is less than twice the bytes: a "
        f"store's file has a fixed part besides its records): "
        f"{tiny.create or 'created too (no failure)'}"
    )
    return lines


def outcome(returncode: int) -> str:
    """A child's fate as one word, for a prediction: "SIGBUS", "SIGSEGV", "nothing", "error"."""
    if returncode < 0:
        return signal.Signals(-returncode).name
    return "nothing" if returncode == 0 else "error"


def why_truncated(found: dict) -> str:
    said = " and then ".join(found["said"]) or "nothing"
    if found["returncode"] == -signal.SIGBUS:
        return (
            f"the child printed {said!r} and died of SIGBUS: its mapping still covered three "
            "pages, so the write was allowed (no SIGSEGV), but the third page lay past the "
            "file's new end, with no file data to back it. There is no error to return from a "
            "store instruction, so the kernel sends the signal; Python cannot catch it as an "
            "exception, and the process dies"
        )
    return f"the child printed {said!r} and {found['how']}: not the SIGBUS Linux sends"
