"""The page table, read: which virtual pages of a mapping this process has mapped right now.

A mapping (``mmap``) only reserves a range of virtual addresses, a *VMA*. The CPU translates
an address through the *page table*: one *page table entry* (PTE) per virtual page, which
either points at a physical page (the page is *present*) or is empty. A PTE is filled by a
page fault, on first touch; for a file mapping it then points at the file's page in the
page cache, and the kernel may fill the neighbouring PTEs in the same fault (fault-around,
or a whole large folio).

``/proc/self/pagemap`` shows the PTEs: 8 bytes per virtual page of this process, found at
offset ``(address // page size) * 8`` (Documentation/admin-guide/mm/pagemap.rst):

* bit 63: the page is present in RAM (mapped);
* bit 62: the page is swapped out;
* bit 61: the page is file-backed or shared anonymous;
* bits 0 to 54: the physical frame number, shown as 0 without ``CAP_SYS_ADMIN`` (since Linux
  4.2); the present bit is shown to everyone.

``present(buffer)`` answers one bool per page of a buffer (an ``mmap.mmap``, a numpy array,
anything with the buffer protocol) or of an ``(address, length)`` range, in one read;
``entries(...)`` returns the raw 64-bit entries. Where pagemap cannot be read they raise
``OSError`` saying why: an instrument never guesses.

``vma(buffer)`` reads the VMA holding a buffer's first byte from ``/proc/self/smaps``: its
``/proc/self/maps`` line and counters in bytes (``Rss``, ``Shared_Dirty``, ``Private_Dirty``,
``AnonHugePages``, ...). A VMA may be larger than the buffer: the kernel merges adjacent
anonymous mappings with the same permissions into one.
"""

from __future__ import annotations

import mmap
import os

import numpy as np

__all__ = [
    "FILE_OR_SHARED",
    "PAGE_SIZE",
    "PFN_MASK",
    "PRESENT",
    "SWAPPED",
    "address_of",
    "entries",
    "present",
    "vma",
]

PAGE_SIZE = mmap.PAGESIZE
PRESENT = np.uint64(1 << 63)
SWAPPED = np.uint64(1 << 62)
FILE_OR_SHARED = np.uint64(1 << 61)
PFN_MASK = np.uint64((1 << 55) - 1)

_PAGEMAP = "/proc/self/pagemap"


def address_of(buffer: object) -> tuple[int, int]:
    """``(address, length in bytes)`` of a buffer: an ``mmap.mmap``, numpy array or memoryview.

    The buffer must be contiguous; an ``mmap.mmap`` must be open (Python exports its memory
    through the buffer protocol, which is how its address is found).
    """
    if isinstance(buffer, np.ndarray):
        if not buffer.flags.c_contiguous:
            raise ValueError("the array must be contiguous to be one range of virtual pages")
        return int(buffer.__array_interface__["data"][0]), int(buffer.nbytes)
    view = memoryview(buffer)  # type: ignore[arg-type]
    try:
        if not view.contiguous:
            raise ValueError("the buffer must be contiguous to be one range of virtual pages")
        if view.nbytes == 0:
            return 0, 0
        # numpy points into the buffer without copying (read-only ones too, unlike ctypes)
        return int(np.frombuffer(view, np.uint8).__array_interface__["data"][0]), view.nbytes
    finally:
        view.release()


def _range(target: object, length: int | None) -> tuple[int, int]:
    if isinstance(target, int):
        if length is None:
            raise TypeError("give the length of the range that starts at the address")
        return target, length
    address, nbytes = address_of(target)
    return address, nbytes if length is None else min(length, nbytes)


def entries(target: object, length: int | None = None) -> np.ndarray:
    """The raw pagemap entries (``uint64``), one per virtual page of ``target``.

    ``target`` is a buffer (its whole length, or its first ``length`` bytes) or an address
    (then ``length`` is required). Pages are counted from the page holding the first byte.
    """
    address, nbytes = _range(target, length)
    if nbytes <= 0:
        return np.zeros(0, dtype=np.uint64)
    first = address // PAGE_SIZE
    pages = (address + nbytes - 1) // PAGE_SIZE - first + 1
    try:
        fd = os.open(_PAGEMAP, os.O_RDONLY)
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"cannot read {_PAGEMAP} ({exc.strerror}): this kernel or container does not show "
            "this process its page table, so which pages are mapped is unknown",
        ) from None
    try:
        raw = os.pread(fd, pages * 8, first * 8)
    except OSError as exc:
        raise OSError(exc.errno, f"reading {_PAGEMAP} failed: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) != pages * 8:
        raise OSError(
            f"{_PAGEMAP} gave {len(raw) // 8} of {pages} entries: the range is not all mapped"
        )
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


def present(target: object, length: int | None = None) -> np.ndarray:
    """One bool per virtual page of ``target``: True where its PTE maps a page in RAM."""
    return (entries(target, length) & PRESENT) != 0


def vma(target: object) -> dict:
    """The VMA holding ``target``'s first byte (a buffer or an address), from smaps.

    ``{"line": the /proc/self/maps line, "start": ..., "end": ..., field: bytes, ...}``.
    """
    address = target if isinstance(target, int) else address_of(target)[0]
    try:
        with open("/proc/self/smaps") as f:
            text = f.read()
    except OSError as exc:
        raise OSError(exc.errno, f"cannot read /proc/self/smaps: {exc.strerror}") from None
    found: dict | None = None
    for line in text.splitlines():
        head = line.split(maxsplit=1)[0]
        if "-" in head and not head.endswith(":"):  # a VMA's first line: start-end perms ...
            if found is not None:
                break
            start, end = (int(x, 16) for x in head.split("-"))
            if start <= address < end:
                found = {"line": line, "start": start, "end": end}
        elif found is not None and line.endswith(" kB"):
            key, value = line.split(":")
            found[key] = int(value.split()[0]) * 1024
    if found is None:
        raise OSError(f"no VMA of this process holds the address {address:#x}")
    return found
