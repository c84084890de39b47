"""The store's file operations: opening safely, locking, reserving space, publishing new files.

- **Opening** refuses anything but a regular file before it can block (a FIFO would hang).
- **Locking**: one writer at a time holds an advisory ``flock`` on the store's file. A process
  forked from a writer shares its open file, so it holds the lock too until it exits (or
  closes the descriptor): fork DataLoader workers from a process that only reads.
- **Reserving space**: files are sized with ``posix_fallocate``, not only ``ftruncate``. A
  sparse file gets its blocks on the first write through the mapping, and a full disk then
  kills the process with SIGBUS; a reserved file fails early, at the call that needed the
  space, with ``NoSpaceError``.
- **Publishing**: a new store file is built under a unique temporary name, locked, and only
  then linked or renamed to its path, so the path never holds a half-written store and two
  processes creating the same path get exactly one winner.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import sys
import time
from pathlib import Path

from mmlab.store.errors import NoSpaceError, NotAStoreError, StoreError, StoreLockedError

__all__ = [
    "fsync_dir",
    "new_temp",
    "open_regular",
    "pread",
    "publish",
    "remove_stale_temps",
    "reserve",
    "try_lock",
    "unlock",
]

_TEMP_KINDS = ("creating", "growing")
_TOKEN_BYTES = 6
_STALE_CREATE_SECONDS = 60  # an unlocked ".creating" file this old belongs to a dead process


def pread(fd: int, n: int, offset: int) -> bytes:
    """``os.pread``, or seek and read where the platform lacks it (Windows)."""
    if hasattr(os, "pread"):
        return os.pread(fd, n, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, n)


def open_regular(path: Path, writable: bool) -> int:
    """Open ``path`` for a store; a directory, FIFO, socket or device is refused at once."""
    nonblocking = getattr(os, "O_NONBLOCK", 0)  # a FIFO would block this open forever
    flags = (os.O_RDWR if writable else os.O_RDONLY) | nonblocking
    try:
        fd = os.open(path, flags)
    except IsADirectoryError:
        raise IsADirectoryError(f"{path} is a directory, not a store") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(f"{path} is a directory, not a store")
        raise NotAStoreError(f"{path} is not a regular file, so it cannot be a record store")
    if nonblocking:
        os.set_blocking(fd, True)
    return fd


def try_lock(fd: int) -> bool:
    """Take the writer's advisory lock; False if another writer has it."""
    try:
        import fcntl
    except ImportError:
        raise StoreError(
            f"writing a store needs POSIX advisory locks, which {sys.platform} lacks; "
            "open it with mode='r' to read it"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def unlock(fd: int) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def locked_error(path: Path) -> StoreLockedError:
    return StoreLockedError(
        f"{path} is open for writing elsewhere; one writer at a time "
        "(open it with mode='r' to read it meanwhile)"
    )


def _free_bytes(path: Path) -> int | None:
    try:
        st = os.statvfs(path.parent)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def _no_space(store: Path, size: int, how: str) -> NoSpaceError:
    free = _free_bytes(store)
    free_text = "an unknown number of" if free is None else f"{free:,}"
    return NoSpaceError(
        f"no space left on the disk of {store}: the store needs a file of {size:,} bytes, "
        f"{free_text} bytes are free ({how}); nothing was lost, free some space and retry"
    )


def reserve(fd: int, size: int, store: Path, *, fresh: bool) -> None:
    """Give the file ``size`` bytes with every block allocated, or raise ``NoSpaceError``.

    ``store`` is the store's path, for the error. ``fresh`` says the file holds nothing yet:
    where the filesystem cannot preallocate, the space is then reserved by writing zeros, and
    a failure gives back what was allocated. An existing file is never written here.
    """
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except AttributeError:
        reason = f"{sys.platform} has no posix_fallocate"
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            if fresh:
                os.ftruncate(fd, 0)  # a failed fallocate may have kept part of its blocks
            raise _no_space(store, size, "posix_fallocate") from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
        reason = f"this filesystem cannot preallocate ({os.strerror(exc.errno)})"
    if not fresh:
        return  # an existing store: its blocks were reserved when it was written
    zeros = bytes(1 << 20)
    try:
        for at in range(0, size, len(zeros)):
            os.pwrite(fd, zeros[: size - at], at)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            os.ftruncate(fd, 0)
            raise _no_space(store, size, f"{reason}, so zeros were written") from None
        raise


def new_temp(path: Path, kind: str) -> tuple[Path, int]:
    """A new, empty, locked file beside ``path`` under a name no other process uses."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(_TOKEN_BYTES)}.{kind}")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            continue
    try:
        if not try_lock(fd):
            raise StoreError(f"{tmp} was locked by another process as soon as it was created")
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return tmp, fd


def remove_stale_temps(path: Path) -> None:
    """Delete temporary files that writers killed mid-create or mid-growth left beside ``path``.

    Call it holding the store's writer lock: then no one else can be growing this store. A
    ``.creating`` file is stale when no process holds its lock and it is old.
    """
    ours = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{{2 * _TOKEN_BYTES}}}\.(\w+)")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        match = ours.fullmatch(name)
        kind = match and match.group(1)
        if kind not in _TEMP_KINDS:
            continue
        tmp = path.parent / name
        try:
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue
        try:
            old = time.time() - os.fstat(fd).st_mtime > _STALE_CREATE_SECONDS
            if try_lock(fd) and (kind == "growing" or old):
                tmp.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(fd)


def publish(tmp: Path, path: Path, *, overwrite: bool) -> None:
    """Put the complete, locked file ``tmp`` at ``path``; ``tmp`` is gone afterwards.

    Without ``overwrite`` an existing path raises ``FileExistsError`` (atomically: of two
    processes, exactly one wins). With it, an existing store is replaced only if no writer
    holds it (``StoreLockedError`` otherwise).
    """
    while True:
        try:
            os.link(tmp, path)  # fails atomically if the path exists
        except FileExistsError:
            if not overwrite:
                raise FileExistsError(f"{path} exists; pass overwrite=True to replace it") from None
        else:
            tmp.unlink()
            return
        try:
            old = open_regular(path, writable=False)
        except FileNotFoundError:
            continue  # removed meanwhile: link again
        except NotAStoreError:
            os.replace(tmp, path)  # not a regular file, so not a store someone writes
            return
        try:
            if not try_lock(old):
                raise locked_error(path)
            if os.fstat(old).st_ino != os.stat(path).st_ino:
                continue  # replaced while we locked it: look again
            os.replace(tmp, path)  # still holding the old file's lock
            return
        except FileNotFoundError:
            continue
        finally:
            os.close(old)


def fsync_dir(path: Path) -> None:
    """Make a rename or link in ``path``'s directory durable (a no-op where dirs cannot open)."""
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except (PermissionError, IsADirectoryError):
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
