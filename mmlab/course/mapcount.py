"""The limits on how many mappings a process may hold, hit for real in a child process.

Every mapping is a *VMA* (virtual memory area): the kernel's record of one range of
addresses with one set of permissions and one backing (a file at an offset, or anonymous
memory). The kernel looks VMAs up on every page fault, copies them on ``fork`` and frees them
on ``exit``, and a process may hold at most ``vm.max_map_count`` of them: past it, any call
that needs one more VMA (``mmap``, or ``mprotect`` splitting one VMA in two) fails with
ENOMEM.

Python's ``mmap.mmap`` does more than the ``mmap`` system call: it ``fstat``s the file and
keeps a duplicate of its file descriptor (``dup``) for as long as the mapping lives, so every
file mapping also takes an open-file slot, and ``RLIMIT_NOFILE`` (``ulimit -n``) can stop a
program (EMFILE) before ``vm.max_map_count`` does.

What each mapping costs is ``mmlab.mapcost``.

* ``held(path, n)``: hold ``n`` one-page Python mappings and count VMAs and open files.
* ``reserve(nbytes)``: whether one mapping of that much address space alone is accepted;
  ``first_refusal`` says which limit one-page Python mappings should meet first.
* ``fill_vmas()`` and ``fill_python_mmaps(path)`` run in a child process until the kernel
  refuses: one large anonymous mapping whose alternate pages are ``mprotect``-ed (each one
  splits a VMA) until ENOMEM, and one-page Python mappings of a file until EMFILE or ENOMEM.
  A child, because a process at its limit cannot even allocate memory to report it.

``python -m mmlab.course.mapcount vmas|python PATH [CAP]`` is the child's side (JSON out).
"""

from __future__ import annotations

import ctypes
import errno
import json
import math
import mmap
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_CAP",
    "Counts",
    "Refusal",
    "address_space_limit",
    "address_space_top",
    "count_fds",
    "count_vmas",
    "describe_limits",
    "describe_refusal",
    "fill_python_mmaps",
    "fill_vmas",
    "first_refusal",
    "held",
    "reserve",
    "why_counts",
    "why_refusal",
]

PAGE = mmap.PAGESIZE
DEFAULT_CAP = 1_100_000  # stop before this many VMAs: above the 1,048,576 some distributions allow
_PROT_NONE, _PROT_READ = 0, 1
_MAP_SHARED, _MAP_PRIVATE, _MAP_ANONYMOUS, _MAP_NORESERVE = 0x01, 0x02, 0x20, 0x4000
_FAILED = ctypes.c_void_p(-1).value


def _libc() -> ctypes.CDLL:
    if not sys.platform.startswith("linux"):
        raise OSError(errno.ENOSYS, f"mmlab.mapcount calls Linux's libc; this is {sys.platform}")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int]
    libc.mmap.argtypes += [ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


def count_vmas() -> int:
    """This process's VMAs: the lines of ``/proc/self/maps``, less ``[vsyscall]`` (a fixed
    page every process sees, which the kernel does not count against the limit)."""
    lines = Path("/proc/self/maps").read_text().splitlines()
    return sum(not line.endswith("[vsyscall]") for line in lines)


def address_space_top() -> int:
    """An estimate of the address space the kernel gives this process: its highest mapped
    address (the stack sits near the top) rounded up to a power of two, 2**47 (128 TiB) on
    most x86-64; 5-level paging and arm64's 39- or 48-bit layouts differ."""
    ends = [
        int(line.split("-", 1)[1].split()[0], 16)
        for line in Path("/proc/self/maps").read_text().splitlines()
        if not line.endswith("[vsyscall]")
    ]
    return 1 << (max(ends) - 1).bit_length()


def reserve(nbytes: int) -> bool:
    """Whether one mapping of ``nbytes`` of address space alone (``PROT_NONE``, no memory
    reserved) is accepted; it is unmapped at once."""
    libc = _libc()
    flags = _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_NORESERVE
    address = libc.mmap(None, nbytes, _PROT_NONE, flags, -1, 0)
    if address == _FAILED:
        return False
    libc.munmap(address, nbytes)
    return True


def address_space_limit() -> int | None:
    """This process's ``RLIMIT_AS`` (``ulimit -v``) in bytes, or ``None`` if unlimited."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def first_refusal(
    max_map_count: int | None, nofile_soft: int | str | None, cap: int = DEFAULT_CAP
) -> str | None:
    """Which error one-page ``mmap.mmap`` calls should meet first: ``"EMFILE"`` if the
    open-file soft limit is the lower, ``"ENOMEM"`` if ``vm.max_map_count`` is, ``None`` if
    both are at or above ``cap``, where the child stops first; ``"unknown"`` if
    ``vm.max_map_count`` is. (The limits, not the room left: a child starts with a few
    hundred VMAs and a few descriptors, which decides only when the two limits are that close.)"""
    files = nofile_soft if isinstance(nofile_soft, int) else math.inf
    if max_map_count is None:
        return "unknown" if files < cap else None
    if min(files, max_map_count) >= cap:
        return None
    return "EMFILE" if files < max_map_count else "ENOMEM"


def describe_limits(
    max_map_count: int | None, nofile_soft: int | str | None, top: int, accepted: bool
) -> str:
    """This process's address space ``top`` (``address_space_top``), whether one ``PROT_NONE``
    mapping of a quarter of it was ``accepted`` (``reserve``), and the two limits, in words."""
    files = f"{nofile_soft:,}" if isinstance(nofile_soft, int) else str(nofile_soft)
    vmas = "unknown here" if max_map_count is None else f"{max_map_count:,} VMAs"
    capped = address_space_limit()
    why = (
        ""
        if accepted
        else f" (RLIMIT_AS, ulimit -v, caps it at {capped / 2**30:,.1f} GiB)"
        if capped
        else " (RLIMIT_AS is unlimited: the kernel's overcommit rules refused it)"
    )
    return (
        f"address space of this process: about {top / 2**40:g} TiB (an estimate: its highest "
        f"mapped address, rounded up to a power of two); one PROT_NONE mapping of "
        f"{top / 4 / 2**40:g} TiB was {'accepted' if accepted else 'refused'}{why}\n"
        f"vm.max_map_count: {vmas}; RLIMIT_NOFILE soft limit: {files} open files; the children "
        f"below stop at {DEFAULT_CAP:,} calls"
    )


def describe_refusal(first: str | None, cap: int = DEFAULT_CAP) -> str:
    """What ``first_refusal`` predicts, in words."""
    if first is None:
        return f"neither limit is reached below {cap:,} calls, where the child stops"
    if first == "unknown":
        return "vm.max_map_count is unknown here, so the limits cannot say: the child finds out"
    why = {"EMFILE": "the open-file limit", "ENOMEM": "vm.max_map_count"}[first]
    return f"one-page mmap.mmap calls should meet {first} first ({why} is lower)"


def count_fds() -> int:
    """This process's open file descriptors."""
    return len(os.listdir("/proc/self/fd"))


@dataclass(frozen=True)
class Counts:
    """VMAs and open files before and while ``n`` one-page mappings were held."""

    n: int
    vmas_before: int
    vmas_during: int
    fds_before: int
    fds_during: int

    def per_mapping(self, kind: str) -> float:
        """How much ``"vmas"`` or ``"fds"`` grew per mapping held."""
        before, during = getattr(self, f"{kind}_before"), getattr(self, f"{kind}_during")
        return (during - before) / self.n

    def __str__(self) -> str:
        return (
            f"  VMAs (lines of /proc/self/maps): {self.vmas_before:,} -> {self.vmas_during:,}, "
            f"{self.per_mapping('vmas'):.2f} per mapping\n"
            f"  open file descriptors:           {self.fds_before:,} -> {self.fds_during:,}, "
            f"{self.per_mapping('fds'):.2f} per mapping"
        )


def why_counts(counts: Counts, kind: str) -> str:
    """Why each held one-page ``mmap.mmap`` added what it did to ``kind`` (``"vmas"`` or
    ``"fds"``), from this run's counts and this Python."""
    each = counts.per_mapping(kind)
    python = f"Python {sys.version_info.major}.{sys.version_info.minor}"
    if kind == "vmas":
        why = (
            "each is a VMA of its own, since all map the file's first page: no two "
            "neighbours are contiguous in the file, so the kernel merges none"
            if each > 0.95
            else "fewer than one each: the kernel merged some neighbouring mappings"
        )
        return f"{counts.n:,} mappings added {each:.2f} VMA each: {why}."
    why = (
        f"each mmap.mmap keeps a duplicate of the file's descriptor while it lives ({python}; "
        "3.13's trackfd=False keeps none)"
        if each > 0.95
        else f"this mmap.mmap ({python}) kept no duplicate descriptor for most of them"
    )
    return f"{counts.n:,} mappings added {each:.2f} open file descriptor each: {why}."


def why_refusal(files: Refusal) -> str:
    """Why the child's one-page ``mmap.mmap`` calls stopped where they did: which of the two
    limits (as the child had them) was lower, and what each call holds."""
    limit, soft = files.max_map_count, files.nofile_soft
    limits = f"vm.max_map_count {limit:,} VMAs, RLIMIT_NOFILE soft limit {soft:,} files"
    holds = "each call holds one VMA and one duplicated file descriptor"
    if files.error == "EMFILE":
        lower = (
            f"the open-file limit is the lower, so dup failed after {files.calls:,} calls "
            f"(the child had {soft - files.calls:,} descriptors open before them)"
        )
    elif files.error == "ENOMEM":
        lower = (
            f"vm.max_map_count is the lower: the child held {files.vmas:,} VMAs when the "
            "kernel refused one more"
        )
        if soft < limit:  # the limits said EMFILE: the VMAs it started with decided
            lower = (
                f"the open-file limit is lower, but the child started with "
                f"{files.vmas_before:,} VMAs, so it held {files.vmas:,} when the kernel "
                "refused one more, before running out of descriptors"
            )
    elif files.error is None:
        lower = f"both are at or above {files.cap:,}, where the child stopped"
    else:
        lower = f"the call failed with {files.error}, which neither limit explains"
    return f"{limits}; {holds}: {lower}."


@contextmanager
def held(path: str | os.PathLike[str], n: int):
    """Hold ``n`` one-page mappings of ``path``; yields ``Counts``.

    Every mapping is of the file's first page: the kernel merges a new mapping into the VMA
    next to it when both map the same file at contiguous offsets with the same permissions,
    so mappings of consecutive pages placed side by side could count as one VMA.
    """
    vmas, fds = count_vmas(), count_fds()
    with open(path, "rb") as f:
        maps = [mmap.mmap(f.fileno(), PAGE, access=mmap.ACCESS_READ) for _ in range(n)]
    try:
        yield Counts(n, vmas, count_vmas(), fds, count_fds())
    finally:
        for m in maps:
            m.close()


@dataclass(frozen=True)
class Refusal:
    """What a child process reached before the kernel refused one more VMA or file.

    ``error`` is the errno's name (``"ENOMEM"``, ``"EMFILE"``), or ``None`` if the child
    stopped at ``cap`` first; ``vmas`` counts the child's ``/proc/self/maps`` lines then.
    """

    what: str
    calls: int
    error: str | None
    vmas_before: int
    vmas: int
    max_map_count: int
    nofile_soft: int
    seconds: float
    cap: int

    @property
    def end(self) -> str:
        """How the child stopped: ``"refused with ENOMEM"`` or ``"stopped at the cap of N"``."""
        return f"refused with {self.error}" if self.error else f"stopped at the cap of {self.cap:,}"

    def __str__(self) -> str:
        return (
            f"{self.what}: {self.calls:,} calls in {self.seconds * 1e3:,.0f} ms, then {self.end}; "
            f"the child then held {self.vmas:,} VMAs (from {self.vmas_before:,}); vm.max_map_count "
            f"{self.max_map_count:,}, RLIMIT_NOFILE (soft) {self.nofile_soft:,}"
        )


def _run_child(*args: str, timeout: float = 120.0) -> Refusal:
    done = subprocess.run(
        [sys.executable, "-m", "mmlab.course.mapcount", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the child ({' '.join(args)}) failed: {done.stderr.strip()[-2000:]}")
    return Refusal(**json.loads(done.stdout))


def fill_vmas(cap: int = DEFAULT_CAP) -> Refusal:
    """In a child: split one anonymous mapping with ``mprotect`` until ENOMEM (or ``cap``)."""
    return _run_child("vmas", str(cap))


def fill_python_mmaps(path: str | os.PathLike[str], cap: int = DEFAULT_CAP) -> Refusal:
    """In a child: one-page ``mmap.mmap`` of ``path`` until refused (EMFILE or ENOMEM)."""
    return _run_child("python", os.fspath(path), str(cap))


class _MapsCounter:
    """Counts ``/proc/self/maps`` lines through one chunk allocated beforehand: at the VMA
    limit Python cannot allocate (its allocator needs new mappings), so nothing here may.
    Reading in chunks keeps the buffer small however many VMAs there are."""

    def __init__(self, chunk: int = 1 << 20) -> None:
        self.buffer = bytearray(chunk)
        self.view = memoryview(self.buffer)

    def __call__(self) -> int:
        fd, lines, kept = os.open("/proc/self/maps", os.O_RDONLY), 0, 0
        try:
            # a read may end mid-line: each chunk starts with the last 16 bytes of the one
            # before, so "[vsyscall]" (the last line) is seen whole at the very end
            while got := os.readv(fd, [self.view[kept:]]):
                lines += self.buffer.count(b"\n", kept, kept + got)
                end = kept + got
                kept = min(end, 16)
                self.view[:kept] = self.view[end - kept : end]
        finally:
            os.close(fd)
        # [vsyscall] is a fixed page the kernel shows in maps but does not count as a VMA
        return lines - self.buffer.count(b"[vsyscall]", 0, kept)


def _limits() -> tuple[int, int]:
    import resource

    limit = int(Path("/proc/sys/vm/max_map_count").read_text())
    return limit, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _child_vmas(cap: int) -> dict:
    libc, counter = _libc(), _MapsCounter()
    limit, nofile = _limits()
    before = counter()
    pairs = min(limit, cap) // 2 + 16  # each split page adds two VMAs: enough to pass the limit
    length = 2 * pairs * PAGE  # address space only: PROT_NONE, never touched
    address = libc.mmap(
        None, length, _PROT_NONE, _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_NORESERVE, -1, 0
    )
    if address == _FAILED:
        raise OSError(ctypes.get_errno(), "could not map the address space to split")
    calls, error, start = 0, None, time.perf_counter()
    while calls < pairs and before + 1 + 2 * (calls + 1) <= cap:  # the region is one VMA
        if libc.mprotect(address + (2 * calls + 1) * PAGE, PAGE, _PROT_READ) != 0:
            error = errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
            break
        calls += 1
    seconds, vmas = time.perf_counter() - start, counter()
    libc.munmap(address, length)  # all of it at once: needs no split, so it cannot fail here
    what = "mprotect of alternate pages of one anonymous mapping"
    return dict(what=what, calls=calls, error=error, vmas_before=before, vmas=vmas,
                max_map_count=limit, nofile_soft=nofile, seconds=seconds, cap=cap)  # fmt: skip


def _child_python(path: str, cap: int) -> dict:
    counter = _MapsCounter()
    limit, nofile = _limits()
    before, maps, error = counter(), [], None
    start = time.perf_counter()
    with open(path, "rb") as f:
        maps.extend(None for _ in range(cap))  # the list's room, allocated before any limit
        for i in range(cap):
            try:
                maps[i] = mmap.mmap(f.fileno(), PAGE, access=mmap.ACCESS_READ)
            except OSError as exc:
                error = errno.errorcode.get(exc.errno, str(exc.errno))
                break
            except MemoryError:  # Python's own allocator hit the VMA limit first
                error = "ENOMEM"
                break
        else:
            i = cap
    seconds, vmas = time.perf_counter() - start, counter()
    for m in maps[:i]:
        m.close()
    what = "one-page mmap.mmap of a file, each kept open"
    return dict(what=what, calls=i, error=error, vmas_before=before, vmas=vmas,
                max_map_count=limit, nofile_soft=nofile, seconds=seconds, cap=cap)  # fmt: skip


if __name__ == "__main__":
    kind, *rest = sys.argv[1:]
    if kind == "vmas":
        found = _child_vmas(int(rest[0]) if rest else DEFAULT_CAP)
    else:
        found = _child_python(rest[0], int(rest[1]) if len(rest) > 1 else DEFAULT_CAP)
    print(json.dumps(found))
