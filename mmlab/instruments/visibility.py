"""Whether the kernel shows this process a file's page cache, asked of the kernel itself.

The kernel does not show everyone every file's page cache: which pages of a shared file are
cached tells what other users read (a side channel). It answers only for files the process
could open for writing: files it owns or may write (root, with ``CAP_FOWNER``, qualifies
for all). For any other file ``mincore`` has reported *every page cached* since Linux 5.2,
and ``cachestat`` refuses with ``EPERM`` since Linux 6.14 (and in the 6.6 and 6.12 stable
kernels since early 2025). A dataset shared read-only on a JupyterHub is such a file.

So the page-cache instruments (``mmlab.pagecache``, ``mmlab.cachestat``) ask the kernel
whether it hides the file: one page far past the end of the file, which cannot be cached,
reported cached is the tell. Then they raise ``PageCacheHiddenError`` naming the cause and
the remedy instead of showing a made-up 100%; ``cache_hidden(path)`` asks without raising.
This module also holds what they share: libc's ``mmap`` and ``mincore``, and their errors.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import stat
import sys
from pathlib import Path

import numpy as np

__all__ = ["PAGE_SIZE", "PageCacheHiddenError", "UnsupportedPlatformError", "cache_hidden"]

PAGE_SIZE = mmap.PAGESIZE
_HIDDEN_SINCE = "Linux 5.2"  # mincore's "every page resident" for files one may not write


class UnsupportedPlatformError(OSError):
    """This system (OS, kernel or sandbox) lacks the system call an instrument needs."""


class PageCacheHiddenError(PermissionError):
    """The kernel hides this file's page cache from this process, which may not write it.

    Raised by ``residency`` (where ``mincore`` would report every page cached) and by
    ``cache_stats`` (where ``cachestat`` refuses with ``EPERM``). The message names the
    file's owner, this process's user and what to do.
    """


_libc = (
    ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if os.name == "posix"
    else None
)
if _libc is not None:
    _libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    _libc.mincore.restype = ctypes.c_int
    _libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,  # off_t on every 64-bit platform
    ]
    _libc.mmap.restype = ctypes.c_void_p
    _libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    _libc.munmap.restype = ctypes.c_int
    _libc.syscall.restype = ctypes.c_long  # for cachestat (mmlab.cachestat)
_MAP_FAILED = ctypes.c_void_p(-1).value
# Far enough past the end of any file that no page there can be cached: a large folio that
# straddles the end of a file spans a few MiB at most.
_PROBE_GAP = 2**30


def _open_file(path: Path) -> int:
    """Open a regular file read-only; anything else has no page cache of its own to show."""
    # O_NONBLOCK: opening a FIFO would otherwise wait for a writer, forever.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"not a regular file: {path}")
    return fd


def _mincore(fd: int, offset: int, length: int) -> np.ndarray:
    """mincore over a fresh shared read-only mapping of ``length`` bytes at ``offset``.

    A fresh mapping that is never touched: mincore then reports the page cache, not what
    this process happens to have faulted in. libc's mmap, not the mmap module, because the
    probe in ``_kernel_hides`` maps past the end of the file, which the module refuses.
    """
    address = _libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
    if address in (None, _MAP_FAILED):
        err = ctypes.get_errno()
        raise OSError(err, f"mmap failed: {os.strerror(err)}")
    try:
        vector = np.zeros(-(-length // PAGE_SIZE), dtype=np.uint8)
        if _libc.mincore(address, length, vector.ctypes.data) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mincore failed: {os.strerror(err)}")
    finally:
        _libc.munmap(address, length)
    return (vector & 1).astype(bool)


def _kernel_hides(fd: int) -> bool:
    """Whether mincore fakes "all resident" for this file: asked of the kernel, not guessed.

    Where the kernel hides a file's page cache it fills mincore's answer with ones without
    looking. A page a gigabyte past the end of the file is never cached, so one such page
    reported resident is the fake, whatever made the kernel decide (ownership, permission
    bits, ACLs, a read-only file system, user namespaces, a security module).
    """
    if not sys.platform.startswith("linux"):
        return False  # the rule and its fake answer are Linux's
    size = os.fstat(fd).st_size
    probe = (size // _PROBE_GAP + 2) * _PROBE_GAP
    return bool(_mincore(fd, probe, PAGE_SIZE)[0])


def _user(uid: int) -> str:
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _hidden_cause(fd: int) -> str:
    """Why the kernel hides this file from this process, in the terms of its rule."""
    owner, me = _user(os.fstat(fd).st_uid), _user(os.geteuid())
    if os.fstatvfs(fd).f_flag & os.ST_RDONLY:
        return (
            f"this process runs as {me}, the file belongs to {owner}, and it is on a "
            "read-only file system, so this process could not open it for writing"
        )
    return (
        f"this process runs as {me}, the file belongs to {owner}, and this process may not write it"
    )


def _remedy(path: Path) -> str:
    return (
        f"To measure its page cache, make a copy you own (cp {path} ~/) and read the copy "
        "in your experiment, or run as the file's owner."
    )


def cache_hidden(path: str | os.PathLike[str]) -> str | None:
    """Why the kernel hides the file's page cache from this process, or None if it does not.

    None means ``residency`` and ``cache_stats`` tell the truth about this file (as far as
    the system has them). Otherwise they raise ``PageCacheHiddenError``; the string says why.
    """
    if _libc is None:
        return None
    path = Path(path)
    fd = _open_file(path)
    try:
        return _hidden_cause(fd) if _kernel_hides(fd) else None
    finally:
        os.close(fd)
