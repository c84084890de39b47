"""The blog example's file layout, byte for byte, with its defects fixed and documented.

The blog preallocates a sparse 100 MB file, maps it, and writes each record as a native
``I`` (the string's length), the UTF-8 bytes, then a native ``d`` (the property), calling
``flush()`` after every record. It then scans the file record by record to double each value.
``mmlab.blog`` runs the blog's own program as written; this module is the same layout done
with care.

Two defects are fixed here, and both are kept measurable:

* The scan stops at the real end of the data. The blog's ``while mmapped_file.tell() <
  filesize`` loop runs on through the zero-filled tail, reading millions of empty "records"
  of length 0 and value 0.0, and with a 100 MB file it fails at the very end on a short read
  (``struct.error``), because the tail is not a whole number of 12-byte empty records. Here
  a zero length marks the end of the data: the layout has no header, so an empty string
  cannot be stored.
* Flushing after every record is the ``flush_every`` parameter, not a given. ``flush()`` is
  an ``msync(MS_SYNC)`` over the whole mapping, which writes the page and waits for storage;
  one per record is what makes the blog's loop slow. ``flush_every=None`` flushes once at the
  end, which is just as durable for a program that checks its result after the loop.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["BLOG_SIZE", "data_size", "double_in_place", "scan", "write"]

BLOG_SIZE = 100 * 1024 * 1024  # the blog's preallocated file size
_LENGTH = struct.Struct("I")  # native, as in the blog
_VALUE = struct.Struct("d")


def _flush_due(flush_every: int | None, written: int) -> bool:
    return flush_every is not None and written % flush_every == 0


def _check_flush_every(flush_every: int | None) -> None:
    if flush_every is not None and flush_every < 1:
        raise ValueError(f"flush_every must be a positive count or None, got {flush_every}")


def data_size(records: Iterable[tuple[str, float]]) -> int:
    """Bytes the records take in this layout, with the zero length that ends the data."""
    return (
        sum(_LENGTH.size + len(s.encode("utf-8")) + _VALUE.size for s, _ in records) + _LENGTH.size
    )


def write(
    path: str | os.PathLike[str],
    records: Iterable[tuple[str, float]],
    size: int = BLOG_SIZE,
    flush_every: int | None = 1,
) -> int:
    """Write ``(smiles, value)`` records in the blog's layout; returns the bytes of data written.

    ``flush_every=1`` is the blog's flush after every record; ``None`` flushes once at the end.
    """
    _check_flush_every(flush_every)
    with open(path, "wb") as f:
        f.truncate(size)  # a sparse file of zeros, as the blog's seek(size - 1) + write(b"\x00")
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), size) as mm:
        offset = 0
        for n, (smiles, value) in enumerate(records, start=1):
            raw = smiles.encode("utf-8")
            if not raw:
                raise ValueError(f"record {n - 1}: empty string (length 0 marks the end)")
            end = offset + _LENGTH.size + len(raw) + _VALUE.size
            if end > size:
                raise ValueError(
                    f"record {n - 1} does not fit: the data needs more than size={size} bytes"
                )
            _LENGTH.pack_into(mm, offset, len(raw))
            mm[offset + _LENGTH.size : end - _VALUE.size] = raw
            _VALUE.pack_into(mm, end - _VALUE.size, value)
            offset = end
            if _flush_due(flush_every, n):
                mm.flush()
        mm.flush()
    return offset


def _records(mm: mmap.mmap, path: object) -> Iterator[tuple[int, str]]:
    """Yield (offset of the value, string) up to the real end of the data."""
    offset, size = 0, len(mm)
    while offset + _LENGTH.size <= size:
        (length,) = _LENGTH.unpack_from(mm, offset)
        if length == 0:
            return
        value_at = offset + _LENGTH.size + length
        if value_at + _VALUE.size > size:
            raise ValueError(
                f"{path}: record at byte {offset} claims {length} bytes, past the end of the file"
            )
        yield value_at, mm[offset + _LENGTH.size : value_at].decode("utf-8")
        offset = value_at + _VALUE.size


def scan(path: str | os.PathLike[str]) -> list[tuple[str, float]]:
    """Read every ``(smiles, value)`` record, stopping at the real end of the data."""
    if Path(path).stat().st_size == 0:
        return []
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        return [(s, _VALUE.unpack_from(mm, at)[0]) for at, s in _records(mm, path)]


def double_in_place(path: str | os.PathLike[str], flush_every: int | None = 1) -> int:
    """Double every value in place, as the blog does; returns the number of records.

    ``flush_every=1`` is the blog's flush after every record; ``None`` flushes once at the end.
    """
    _check_flush_every(flush_every)
    if Path(path).stat().st_size == 0:
        return 0
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        n = 0
        for n, (at, _) in enumerate(_records(mm, path), start=1):
            _VALUE.pack_into(mm, at, 2 * _VALUE.unpack_from(mm, at)[0])
            if _flush_due(flush_every, n):
                mm.flush()
        mm.flush()
    return n
