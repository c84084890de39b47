"""A memory-mapped record store: one UTF-8 string and a fixed set of float64 fields per record.

The whole store is one file, mapped into memory. Each field is its own contiguous float64
column and the strings are an int64 offsets array plus a byte heap, every section starting on
a page boundary. So ``store.column("U0")`` is a numpy view of the file with no copy, and
doubling U0 in place touches U0's pages and no others.

File layout (all little-endian)::

    header slot 0 | header slot 1 | offsets | field 0 | field 1 | ... | heap

Each header slot holds the magic, format version, a byte-order mark, the field names, the
record count, the capacity, the offset and size of every section and a CRC-32 of itself. A
commit writes the slot that is not current, so a writer killed while writing a header leaves
the other slot intact: the store always opens, holding the records of its last commit.

Durability: ``flush()`` first makes the record data durable (msync), then writes the header
count that publishes it. Nothing flushes per record. Growth writes the store into a new file
twice the size and renames it over the old one, so a crash during growth loses nothing and a
mapped file is never shrunk under a reader. Views taken before the growth are re-pointed at the
moved sections (see ``mmlab._remap``), so they stay valid and never show stale data.

Sharing: one writer at a time holds an advisory ``flock``; any number of readers map the same
file and see records the writer has flushed after they call ``refresh()``.
"""

from __future__ import annotations

import contextlib
import mmap
import operator
import os
import struct
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mmlab import _remap

__all__ = [
    "CorruptStoreError",
    "NotAStoreError",
    "ReadOnlyStoreError",
    "Record",
    "RecordStore",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
    "TruncatedStoreError",
    "UnsupportedVersionError",
]

MAGIC = b"MMLABRS\x00"
FORMAT_VERSION = 1
_BYTE_ORDER_MARK = 0xFEFF  # reads as 0xFFFE if the file was written big-endian
_PREFIX = struct.Struct("<8sHHI")  # magic, version, byte-order mark, slot size
_BODY = struct.Struct("<QQQQII")  # sequence, count, capacity, heap capacity, alignment, n fields
_SECTION = struct.Struct("<QQ")  # offset, size
_CRC = struct.Struct("<I")
_SLOT_UNIT = 4096
_MAX_SLOT = 1 << 20
_MAX_FIELD_NAME = 255
_DEFAULT_CAPACITY = 1024
_HEAP_BYTES_PER_RECORD = 32  # initial heap guess; QM9 SMILES average about 15 bytes
_GROWTH = 2
_BATCH = 65536
_FAST_OFFSETS = sys.byteorder == "little"
_new_tuple = tuple.__new__


class StoreError(Exception):
    """Base class of the record store's errors."""


class NotAStoreError(StoreError):
    """The file is not a record store."""


class CorruptStoreError(StoreError):
    """The file is a record store, but damaged."""


class TruncatedStoreError(CorruptStoreError):
    """The file is shorter than its header says."""


class UnsupportedVersionError(StoreError):
    """The store was written in a format version this mmlab cannot read."""


class StoreLockedError(StoreError):
    """Another writer has the store open."""


class ReadOnlyStoreError(StoreError):
    """A write was attempted through a store opened read-only."""


class StoreClosedError(StoreError, ValueError):
    """The store was used after ``close()``."""


class Record(NamedTuple):
    """One record: its string and its field values (a copy, in field order)."""

    smiles: str
    values: np.ndarray


def _align_up(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


@dataclass(frozen=True)
class _Layout:
    """Where every section lives, derived from the header's sizes alone."""

    slot_size: int
    alignment: int
    capacity: int
    heap_capacity: int
    n_fields: int

    @cached_property
    def offsets_offset(self) -> int:
        return _align_up(2 * self.slot_size, self.alignment)

    @cached_property
    def offsets_size(self) -> int:
        return (self.capacity + 1) * 8

    @cached_property
    def column_size(self) -> int:
        return self.capacity * 8

    @cached_property
    def column_stride(self) -> int:
        return _align_up(self.column_size, self.alignment)

    @cached_property
    def first_column_offset(self) -> int:
        return _align_up(self.offsets_offset + self.offsets_size, self.alignment)

    @cached_property
    def heap_offset(self) -> int:
        return _align_up(
            self.first_column_offset + self.n_fields * self.column_stride, self.alignment
        )

    @cached_property
    def file_size(self) -> int:
        return _align_up(self.heap_offset + self.heap_capacity, self.alignment)

    def sections(self) -> list[tuple[int, int]]:
        """(offset, size) of the offsets array, the heap, then each column."""
        columns = [
            (self.first_column_offset + k * self.column_stride, self.column_size)
            for k in range(self.n_fields)
        ]
        return [
            (self.offsets_offset, self.offsets_size),
            (self.heap_offset, self.heap_capacity),
            *columns,
        ]

    def mapped_extents(self) -> list[tuple[int, int]]:
        """(offset, length) of each section rounded to whole pages: what a remap must cover."""
        starts = [off for off, _ in self.sections()]
        ends = [_align_up(off + size, self.alignment) for off, size in self.sections()]
        return [(s, e - s) for s, e in zip(starts, ends, strict=True)]


def _slot_size_for(fields: Sequence[str]) -> int:
    names = sum(2 + len(name.encode()) for name in fields)
    needed = _PREFIX.size + _BODY.size + (len(fields) + 2) * _SECTION.size + names + _CRC.size
    return _align_up(needed, _SLOT_UNIT)


def _encode_slot(layout: _Layout, fields: Sequence[str], sequence: int, count: int) -> bytes:
    parts = [
        _PREFIX.pack(MAGIC, FORMAT_VERSION, _BYTE_ORDER_MARK, layout.slot_size),
        _BODY.pack(
            sequence,
            count,
            layout.capacity,
            layout.heap_capacity,
            layout.alignment,
            layout.n_fields,
        ),
        *(_SECTION.pack(off, size) for off, size in layout.sections()),
    ]
    for name in fields:
        raw = name.encode()
        parts += [struct.pack("<H", len(raw)), raw]
    body = b"".join(parts).ljust(layout.slot_size - _CRC.size, b"\0")
    return body + _CRC.pack(zlib.crc32(body))


@dataclass(frozen=True)
class _Header:
    layout: _Layout
    fields: tuple[str, ...]
    sequence: int
    count: int


def _decode_slot(slot: bytes, file_size: int) -> _Header | None:
    """The header in one slot, or None if its checksum fails (a torn or damaged slot)."""
    body, (crc,) = slot[: -_CRC.size], _CRC.unpack(slot[-_CRC.size :])
    if zlib.crc32(body) != crc:
        return None
    sequence, count, capacity, heap_capacity, alignment, n_fields = _BODY.unpack_from(
        body, _PREFIX.size
    )
    pos = _PREFIX.size + _BODY.size
    if alignment < 8 or alignment & (alignment - 1) or alignment > _MAX_SLOT:
        raise CorruptStoreError(f"section alignment {alignment} is not a sensible power of two")
    if n_fields * (_SECTION.size + 2) > len(body) or capacity > file_size // 8:
        raise CorruptStoreError(
            f"header claims {n_fields} fields and capacity {capacity}, "
            f"impossible in a file of {file_size} bytes"
        )
    if count > capacity:
        raise CorruptStoreError(f"record count {count} exceeds capacity {capacity}")
    layout = _Layout(len(slot), alignment, capacity, heap_capacity, n_fields)
    stored = [_SECTION.unpack_from(body, pos + k * _SECTION.size) for k in range(n_fields + 2)]
    if stored != layout.sections():
        raise CorruptStoreError("section table does not match the sizes in the header")
    pos += (n_fields + 2) * _SECTION.size
    fields = []
    for _ in range(n_fields):
        if pos + 2 > len(body):
            raise CorruptStoreError("field names run past the header")
        (length,) = struct.unpack_from("<H", body, pos)
        raw = body[pos + 2 : pos + 2 + length]
        if len(raw) != length:
            raise CorruptStoreError("field names run past the header")
        fields.append(raw.decode("utf-8", errors="replace"))
        pos += 2 + length
    return _Header(layout, tuple(fields), sequence, count)


def _read_header(fd: int, path: Path) -> _Header:
    """Read and check the current header with pread, before anything is mapped."""
    file_size = os.fstat(fd).st_size
    prefix = os.pread(fd, _PREFIX.size, 0)
    if len(prefix) < _PREFIX.size or prefix[:8] != MAGIC:
        raise NotAStoreError(f"{path} is not an mmlab record store (no store header)")
    _, version, mark, slot_size = _PREFIX.unpack(prefix)
    if mark != _BYTE_ORDER_MARK:
        raise CorruptStoreError(
            f"{path}: byte-order mark is {mark:#06x}, not {_BYTE_ORDER_MARK:#06x}; "
            "stores are little-endian"
        )
    if version != FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"{path} uses store format version {version}; this mmlab reads version "
            f"{FORMAT_VERSION} (upgrade mmlab, or rebuild the store)"
        )
    if slot_size % _SLOT_UNIT or not _SLOT_UNIT <= slot_size <= _MAX_SLOT:
        raise CorruptStoreError(f"{path}: header slot size {slot_size} is invalid")
    if file_size < 2 * slot_size:
        raise TruncatedStoreError(
            f"{path} is truncated: {file_size} bytes, shorter than its own header"
        )
    slots = [os.pread(fd, slot_size, k * slot_size) for k in range(2)]
    headers = [h for h in (_decode_slot(s, file_size) for s in slots) if h is not None]
    if not headers:
        raise CorruptStoreError(f"{path}: both header copies fail their checksum")
    header = max(headers, key=lambda h: h.sequence)
    if header.layout.file_size > file_size:
        raise TruncatedStoreError(
            f"{path} is truncated: {file_size} bytes, but its sections need "
            f"{header.layout.file_size}"
        )
    return header


def _lock(fd: int) -> bool:
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


def _unlock(fd: int) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def _mapped(
    mm: mmap.mmap, dtype: str, offset: int, shape: tuple[int, ...], row_stride: int = 0
) -> np.ndarray:
    """A numpy view of part of a mapping that pins it: the mapping cannot close under it.

    ``np.ndarray(buffer=mm)`` does not hold a buffer export, so ``mm.close()`` would succeed
    and leave the array pointing at unmapped memory; ``np.frombuffer`` holds one.
    """
    itemsize = np.dtype(dtype).itemsize
    if len(shape) == 1:
        return np.frombuffer(mm, dtype, count=shape[0], offset=offset)
    rows, columns = shape
    span = ((rows - 1) * row_stride // itemsize + columns) if rows else 0
    flat = np.frombuffer(mm, dtype, count=span, offset=offset)
    return np.lib.stride_tricks.as_strided(
        flat, shape, (row_stride, itemsize), writeable=flat.flags.writeable
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_fields(fields: Sequence[str]) -> tuple[str, ...]:
    if isinstance(fields, str):
        raise TypeError("fields must be a sequence of names, not one string")
    fields = tuple(fields)
    for name in fields:
        if not isinstance(name, str) or not name:
            raise ValueError(f"field names must be non-empty strings, got {name!r}")
        if len(name.encode()) > _MAX_FIELD_NAME:
            raise ValueError(f"field name {name[:20]!r}... is longer than {_MAX_FIELD_NAME} bytes")
    if len(set(fields)) != len(fields):
        raise ValueError(f"field names must be unique: {fields}")
    return fields


def _write_new_file(
    path: Path, layout: _Layout, fields: tuple[str, ...], sequence: int, count: int
) -> tuple[int, mmap.mmap]:
    """Create a locked, sized, mapped file holding a valid header and no data yet."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _lock(fd)
        os.ftruncate(fd, layout.file_size)
        mm = mmap.mmap(fd, layout.file_size, access=mmap.ACCESS_WRITE)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    slot = _encode_slot(layout, fields, sequence, count)
    mm[: len(slot)] = slot
    mm[len(slot) : 2 * len(slot)] = slot
    return fd, mm


class RecordStore:
    """A file of records (a string plus named float64 fields), memory-mapped.

    Open one with ``RecordStore.create`` or ``RecordStore.open``; use it as a context manager.
    """

    def __init__(self, path: Path, mode: str, fd: int, header: _Header) -> None:
        self._path = path
        self._mode = mode
        self._fd = fd
        self._retired: list[mmap.mmap] = []
        self._closed = True  # until attached: a failed open must not be closed again by __del__
        self._attach(header)
        self._closed = False

    # -- opening and closing ------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        fields: Sequence[str],
        capacity: int | None = None,
        *,
        heap_capacity: int | None = None,
        overwrite: bool = False,
    ) -> RecordStore:
        """Create an empty store for records with these float64 fields; open it read-write."""
        fields = _check_fields(fields)
        capacity = _DEFAULT_CAPACITY if capacity is None else operator.index(capacity)
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if heap_capacity is None:
            heap_capacity = capacity * _HEAP_BYTES_PER_RECORD
        path = Path(path).absolute()
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        layout = _Layout(
            _slot_size_for(fields), mmap.PAGESIZE, capacity, heap_capacity, len(fields)
        )
        # Built under a temporary name and renamed: a crash mid-create leaves no half store.
        tmp = path.with_name(f".{path.name}.creating")
        fd, mm = _write_new_file(tmp, layout, fields, sequence=1, count=0)
        mm.flush()
        mm.close()
        try:
            os.fsync(fd)
            if overwrite:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)  # fails atomically if the path appeared meanwhile
                tmp.unlink()
            _fsync_dir(path)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return cls(path, "r+", fd, _read_header(fd, path))

    @classmethod
    def open(cls, path: str | os.PathLike[str], mode: str = "r") -> RecordStore:
        """Open a store: ``"r"`` read-only, ``"r+"`` read-write, ``"c"`` copy-on-write."""
        if mode not in ("r", "r+", "c"):
            raise ValueError(f"mode must be 'r', 'r+' or 'c', got {mode!r}")
        path = Path(path).absolute()
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory, not a store")
        while True:
            fd = os.open(path, os.O_RDWR if mode == "r+" else os.O_RDONLY)
            if mode != "r+":
                break
            if not _lock(fd):
                os.close(fd)
                raise StoreLockedError(
                    f"{path} is open for writing elsewhere; one writer at a time "
                    "(open it with mode='r' to read it meanwhile)"
                )
            # The writer may have grown the store into a new file while we waited.
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                path.with_name(f".{path.name}.growing").unlink(missing_ok=True)
                break
            os.close(fd)
        try:
            return cls(path, mode, fd, _read_header(fd, path))
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        """Flush (if writable) and unmap. Views you still hold keep their mapping alive."""
        if self._closed:
            return
        try:
            if self._mode == "r+":
                self.flush()
        finally:
            self._closed = True
            self._detach()
            if self._mode == "r+":
                _unlock(self._fd)
            os.close(self._fd)

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Like a file object: records appended but never flushed are still published.
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):
                self.close()

    # -- mapping --------------------------------------------------------------------------

    def _attach(self, header: _Header) -> None:
        """Map the file and build the views the accessors use."""
        layout = header.layout
        access = {"r": mmap.ACCESS_READ, "r+": mmap.ACCESS_WRITE, "c": mmap.ACCESS_COPY}
        self._mm = mmap.mmap(self._fd, layout.file_size, access=access[self._mode])
        self._layout = layout
        self._fields = header.fields
        self._field_index = {name: k for k, name in enumerate(header.fields)}
        self._sequence = header.sequence
        self._count = self._committed = header.count
        self._offsets = _mapped(self._mm, "<i8", layout.offsets_offset, (layout.capacity + 1,))
        self._matrix = _mapped(
            self._mm,
            "<f8",
            layout.first_column_offset,
            (layout.n_fields, layout.capacity),
            layout.column_stride,
        )
        self._heap = _mapped(self._mm, "u1", layout.heap_offset, (layout.heap_capacity,))
        self._rows = self._matrix.T  # record i's values: indexing a row beats a column slice
        self._heap_base, self._heap_capacity = layout.heap_offset, layout.heap_capacity
        # A memoryview indexes faster than numpy for one scalar: the random-get hot path.
        self._offsets_fast = self._offsets.data.cast("B").cast("q") if _FAST_OFFSETS else None
        self._heap_used = self._checked_offset(header.count)

    def _detach(self) -> mmap.mmap | None:
        """Drop our own views and unmap; returns the mapping if user views keep it alive."""
        if self._offsets_fast is not None:
            self._offsets_fast.release()
        old = self._mm
        del self._offsets, self._matrix, self._rows, self._heap, self._offsets_fast
        del self._mm
        try:
            old.close()
        except BufferError:
            self._retired.append(old)
            return old
        return None

    def _replace_mapping(self, fd: int, header: _Header) -> None:
        """Switch to another file (after growth), carrying user views over to it."""
        old_layout = self._layout
        old = self._detach()
        self._fd = fd
        self._attach(header)
        if old is None:
            return
        base = _remap.address_of(old)
        new_extents = header.layout.mapped_extents()
        for (old_off, length), (new_off, _) in zip(
            old_layout.mapped_extents(), new_extents, strict=True
        ):
            _remap.map_over(base + old_off, length, fd, new_off, writable=self._mode == "r+")

    # -- reading --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self._path} is closed")

    def _checked_offset(self, i: int) -> int:
        # pread, not the mapping: opening a store touches none of its mapped pages.
        raw = os.pread(self._fd, 8, self._layout.offsets_offset + 8 * i)
        (offset,) = struct.unpack("<q", raw)
        if not 0 <= offset <= self._layout.heap_capacity:
            raise CorruptStoreError(
                f"{self._path}: string offset {offset} of record {i} lies outside the heap "
                f"({self._layout.heap_capacity} bytes)"
            )
        return offset

    def _index(self, index: int) -> int:
        if index.__class__ is not int:
            index = operator.index(index)
        i = index + self._count if index < 0 else index
        if not 0 <= i < self._count:
            raise IndexError(
                f"record index {index} out of range for a store of {self._count} records"
            )
        return i

    def _smiles_at(self, i: int) -> str:
        offsets = self._offsets_fast if self._offsets_fast is not None else self._offsets
        start, end = int(offsets[i]), int(offsets[i + 1])
        if not 0 <= start <= end <= self._heap_capacity:
            raise CorruptStoreError(
                f"{self._path}: string of record {i} spans [{start}, {end}), outside the heap"
            )
        base = self._heap_base
        try:
            return self._mm[base + start : base + end].decode()
        except UnicodeDecodeError as exc:
            raise CorruptStoreError(f"{self._path}: string of record {i} is not UTF-8") from exc

    def smiles(self, index: int) -> str:
        """The string of record ``index``."""
        self._check_open()
        return self._smiles_at(self._index(index))

    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        if self._closed:
            self._check_open()
        if isinstance(index, slice):
            return [self._record(i) for i in range(*index.indices(self._count))]
        # The random-get hot path: _index, _smiles_at and _record inlined, as each call
        # costs about a tenth of a get. Keep the checks in step with those methods.
        if index.__class__ is not int:
            index = operator.index(index)
        n = self._count
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(f"record index {index} out of range for a store of {n} records")
        offsets = self._offsets_fast if self._offsets_fast is not None else self._offsets
        start, end = int(offsets[i]), int(offsets[i + 1])
        if not 0 <= start <= end <= self._heap_capacity:
            return self._record(i)  # raises the corruption error
        try:
            smiles = self._mm[self._heap_base + start : self._heap_base + end].decode()
        except UnicodeDecodeError:
            return self._record(i)  # raises the corruption error
        return _new_tuple(Record, (smiles, self._rows[i].copy()))

    def _record(self, i: int) -> Record:
        # tuple.__new__ skips NamedTuple's Python-level __new__.
        return _new_tuple(Record, (self._smiles_at(i), self._rows[i].copy()))

    def __iter__(self) -> Iterator[Record]:
        self._check_open()
        for i in range(self._count):
            yield self._record(i)

    def __len__(self) -> int:
        return self._count

    def column(self, name: str) -> np.ndarray:
        """A zero-copy view of one field for all records; writable unless opened ``"r"``."""
        self._check_open()
        try:
            k = self._field_index[name]
        except KeyError:
            raise KeyError(
                f"unknown field {name!r}; this store's fields are {list(self._fields)}"
            ) from None
        return self._matrix[k, : self._count]

    @property
    def fields(self) -> tuple[str, ...]:
        """The field names, in order."""
        return self._fields

    @property
    def path(self) -> Path:
        return self._path

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def capacity(self) -> int:
        """How many records fit before the file must grow."""
        return self._layout.capacity

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def nbytes(self) -> int:
        """The file's size in bytes."""
        return self._layout.file_size

    @property
    def sections(self) -> dict[str, tuple[int, int]]:
        """Each section's (offset, size) in the file: "offsets", "heap", then the fields."""
        names = ["offsets", "heap", *self._fields]
        return dict(zip(names, self._layout.sections(), strict=True))

    def advise(self, hint: str) -> None:
        """Tell the kernel how this store's mapping will be read: "random", "sequential",
        "willneed" or "normal" (``madvise``). "random" turns readahead off, so a page fault
        reads just its page: touching one field then brings in that field's pages only.
        """
        self._check_open()
        advice = {
            "normal": "MADV_NORMAL",
            "random": "MADV_RANDOM",
            "sequential": "MADV_SEQUENTIAL",
            "willneed": "MADV_WILLNEED",
        }
        if hint not in advice:
            raise ValueError(f"hint must be one of {sorted(advice)}, got {hint!r}")
        if not hasattr(mmap, advice[hint]):
            raise OSError(f"madvise({advice[hint]}) is not available on {sys.platform}")
        self._mm.madvise(getattr(mmap, advice[hint]))

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"mode={self._mode!r}"
        fields = ", ".join(self._fields)
        return (
            f"<RecordStore {str(self._path)!r} {state} count={self._count} "
            f"capacity={self._layout.capacity} fields=[{fields}] "
            f"size={self._layout.file_size:,} bytes>"
        )

    # -- writing --------------------------------------------------------------------------

    def _check_writable(self) -> None:
        self._check_open()
        if self._mode == "r":
            raise ReadOnlyStoreError(
                f"{self._path} is open read-only; open it with mode='r+' to write"
            )

    def append(self, smiles: str, values: Sequence[float] | np.ndarray) -> None:
        """Add one record. For many records, ``extend`` is much faster."""
        self.extend([(smiles, values)])

    def extend(self, records: Iterable[tuple[str, Sequence[float] | np.ndarray]]) -> int:
        """Add many ``(smiles, values)`` records, in batches; returns how many were added.

        All or nothing: if any record is rejected, none of this call's records are added.
        """
        self._check_writable()
        count, heap_used = self._count, self._heap_used
        added = 0
        iterator = iter(records)
        try:
            while batch := list(islice(iterator, _BATCH)):
                self._append_batch(batch, first_index=added)
                added += len(batch)
        except BaseException:
            # Data past the count is invisible: forgetting it undoes the earlier batches.
            self._count, self._heap_used = count, heap_used
            raise
        return added

    def _append_batch(self, batch: list, first_index: int) -> None:
        encoded = []
        for k, item in enumerate(batch):
            try:
                smiles, _ = item
            except (TypeError, ValueError):
                raise TypeError(
                    f"record {first_index + k} must be a (smiles, values) pair, got {item!r:.80}"
                ) from None
            if not isinstance(smiles, str):
                raise TypeError(f"record {first_index + k}: smiles must be str, got {smiles!r:.80}")
            encoded.append(smiles.encode("utf-8"))
        values = self._values_matrix([values for _, values in batch], first_index)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        n, heap_needed = len(batch), int(lengths.sum())
        self._reserve(self._count + n, self._heap_used + heap_needed)
        start, used = self._count, self._heap_used
        # Data first; the header count that publishes it is written only by flush().
        self._heap[used : used + heap_needed] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self._offsets[start + 1 : start + n + 1] = used + np.cumsum(lengths)
        self._matrix[:, start : start + n] = values.T
        self._count += n
        self._heap_used += heap_needed

    def _values_matrix(self, rows: list, first_index: int) -> np.ndarray:
        width = len(self._fields)
        try:
            values = np.asarray(rows, dtype=np.float64)
        except (ValueError, TypeError):
            values = None  # ragged or non-numeric: find the row to blame below
        if values is not None and values.shape == (len(rows), width):
            return values
        checked = []
        for k, row in enumerate(rows):
            try:
                row = np.asarray(row, dtype=np.float64)
            except (ValueError, TypeError) as exc:
                raise ValueError(
                    f"record {first_index + k}: values must be numbers ({exc})"
                ) from None
            if row.shape != (width,):
                raise ValueError(
                    f"record {first_index + k} has {row.size} values; "
                    f"this store has {width} fields {list(self._fields)}"
                )
            checked.append(row)
        return np.stack(checked) if checked else np.empty((0, width))

    def _reserve(self, records: int, heap_bytes: int) -> None:
        layout = self._layout
        if records <= layout.capacity and heap_bytes <= layout.heap_capacity:
            return
        if self._mode == "c":
            raise StoreError(
                f"a copy-on-write store cannot grow past its capacity ({layout.capacity} "
                "records); open it with mode='r+' to append more"
            )

        def grown(needed: int, current: int) -> int:
            return current if needed <= current else max(needed, current * _GROWTH)

        self._grow(grown(records, layout.capacity), grown(heap_bytes, layout.heap_capacity))

    def _grow(self, capacity: int, heap_capacity: int) -> None:
        """Copy the store into a bigger file, rename it into place and remap."""
        old = self._layout
        layout = _Layout(old.slot_size, old.alignment, capacity, heap_capacity, old.n_fields)
        tmp = self._path.with_name(f".{self._path.name}.growing")
        sequence = self._sequence + 1
        fd, mm = _write_new_file(tmp, layout, self._fields, sequence, self._count)
        try:
            n, used = self._count, self._heap_used
            _mapped(mm, "<i8", layout.offsets_offset, (n + 1,))[:] = self._offsets[: n + 1]
            _mapped(mm, "u1", layout.heap_offset, (used,))[:] = self._heap[:used]
            _mapped(
                mm, "<f8", layout.first_column_offset, (layout.n_fields, n), layout.column_stride
            )[:] = self._matrix[:, :n]
            mm.flush()
            mm.close()
            os.fsync(fd)
            os.replace(tmp, self._path)
            _fsync_dir(self._path)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        old_fd = self._fd
        self._replace_mapping(fd, _read_header(fd, self._path))
        _unlock(old_fd)
        os.close(old_fd)

    def flush(self) -> None:
        """Make appended records and in-place changes durable, then publish the new count."""
        self._check_open()
        if self._mode != "r+":
            return
        self._mm.flush()
        if self._count == self._committed:
            return
        self._sequence += 1
        slot = _encode_slot(self._layout, self._fields, self._sequence, self._count)
        at = (self._sequence % 2) * self._layout.slot_size
        self._mm[at : at + len(slot)] = slot
        self._mm.flush(0, 2 * self._layout.slot_size)
        self._committed = self._count

    def refresh(self) -> int:
        """Show records a writer has flushed since this reader opened; returns the new count."""
        self._check_open()
        if self._mode == "r+":
            return self._count
        if os.stat(self._path).st_ino != os.fstat(self._fd).st_ino:
            if self._mode == "c":
                raise StoreError(
                    f"{self._path} was rebuilt by its writer; reopen it to see the new records "
                    "(a copy-on-write store keeps its private changes until then)"
                )
            fd = os.open(self._path, os.O_RDONLY)
            try:
                header = _read_header(fd, self._path)
            except BaseException:
                os.close(fd)
                raise
            old_fd = self._fd
            self._replace_mapping(fd, header)
            os.close(old_fd)
            return self._count
        header = _read_header(self._fd, self._path)
        if header.layout != self._layout:
            raise CorruptStoreError(f"{self._path} changed layout without being replaced")
        self._heap_used = self._checked_offset(header.count)
        self._count = self._committed = header.count
        self._sequence = header.sequence
        return self._count
