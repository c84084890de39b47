"""Publishing an output file or directory whole: written under a temporary name, then renamed.

What ``mmlab.store.arrow``'s exports and ``mmlab.data.scale``'s distributed run share:

- ``temp_name(out, kind)``: a hidden name beside ``out`` (so a rename publishes it, and
  dataset discovery, which skips hidden names, never reads it half-written);
- ``check_out(out, overwrite, store_path)``: refuse, before anything is written, an ``out``
  that must not be replaced;
- ``publish(tmp, out, overwrite)``: put the complete ``tmp`` at ``out``, durably;
- ``remove(path)``: drop a file or directory, if there;
- ``fsync(path)``: make a file's (or a directory's entries') data durable;
- ``natural_key(path)``: sort shard names by their numbers (part-2 before part-10).

A store file itself is published by ``mmlab.store.files.publish``, which also respects the
store's writer lock; this module is for exported files and directories, which have no lock.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from mmlab.store.files import fsync_dir

__all__ = [
    "DEFAULT_SHARD_ROWS",
    "check_out",
    "fsync",
    "natural_key",
    "publish",
    "remove",
    "temp_name",
]

# Records per Parquet shard an export writes: ``mmlab.store.arrow.DEFAULT_SHARD_ROWS``, kept
# here, where no pyarrow is imported, so that ``mmlab export --help`` can show it.
DEFAULT_SHARD_ROWS = 65_536


def temp_name(out: Path, kind: str) -> Path:
    """A hidden, unique name beside ``out`` (same directory, so a rename publishes it)."""
    return out.with_name(f".{out.name}.{secrets.token_hex(6)}.{kind}")


def remove(path: Path) -> None:
    """Remove a file or a directory tree at ``path``; nothing there is not an error."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def fsync(path: Path) -> None:
    """fsync the file (or directory) at ``path``: its data, or its entries, reach the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def natural_key(path: Path) -> list[Any]:
    """A sort key in which numbers compare as numbers: part-2 before part-10, any padding."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(path))]


def check_out(out: Path, overwrite: bool, store_path: Path) -> None:
    """Refuse, before writing anything, an ``out`` we must not replace: an existing one
    without ``overwrite``, the store itself, or a directory holding more than Parquet shards."""
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out.parent} does not exist (or is not a directory)")
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    with contextlib.suppress(OSError):
        if os.path.samefile(out, store_path):
            raise ValueError(f"{out} is the store being exported: refusing to replace it")
    if out.is_dir() and not out.is_symlink():
        others = sorted(
            entry.name
            for entry in out.iterdir()
            if not entry.name.startswith((".", "_"))
            and not (entry.name.endswith(".parquet") and entry.is_file())
        )
        if others:
            raise ValueError(
                f"refusing to replace the directory {out}: it holds more than Parquet shards "
                f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})"
            )


def publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Put the complete ``tmp`` (a file or a directory) at ``out``, durably.

    A file replaces a file atomically (readers see the old one or the new one). Replacing
    a directory (or a file by a directory) takes two renames: the old ``out`` is moved to a
    hidden ``.<out>.<hex>.replaced`` beside it, then ``tmp`` is renamed to ``out``, then the
    old one is removed. An error in the second rename puts the old one back, but a crash
    (power loss, SIGKILL) between the two renames leaves no ``out`` and the old data in that
    hidden ``.replaced`` directory: rename it back by hand. (Linux's
    ``renameat2(RENAME_EXCHANGE)`` would swap them atomically; Python's ``os`` has no
    binding for it, and not every file system supports it.)
    """
    exists = out.exists() or out.is_symlink()
    if exists and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    if not exists and tmp.is_file():
        try:
            os.link(tmp, out)  # fails atomically if out appeared meanwhile
        except FileExistsError:
            raise FileExistsError(f"{out} appeared while it was being written") from None
        except OSError:  # a file system without hard links
            os.rename(tmp, out)
        else:
            tmp.unlink()
    elif not exists:
        os.rename(tmp, out)
    elif tmp.is_file() and not out.is_dir():
        os.replace(tmp, out)  # atomic: readers see the old file or the new one
    else:  # a directory involved: move the old one aside, put the new one, drop the old
        old = temp_name(out, "replaced")
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)
            raise
        remove(old)
    fsync_dir(out)
