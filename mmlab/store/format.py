"""The on-disk format of a record store: where each section lives, and the two header slots.

File layout (all little-endian)::

    header slot 0 | header slot 1 | offsets | field 0 | field 1 | ... | heap

Each header slot holds the magic, format version, a byte-order mark, the slot size, a commit
sequence number, the record count, the capacity, the offset and size of every section, the
field names and a CRC-32 of itself. A commit writes the slot that is not current, so a writer
killed while writing a header leaves the other slot intact. Either slot can open the store on
its own: if slot 0 is damaged, even in its first bytes, slot 1 is found and used.

Every section starts on a multiple of ``ALIGNMENT`` (64 KiB), which is a multiple of every
common page size (4 KiB on x86, 16 KiB on Apple silicon, 64 KiB on some ARM servers), so a
store written on one machine can be mapped section by section on any other.

Everything here is a pure function of bytes: reading a header takes a ``read_at(offset, n)``
callable, so the format is tested without a file.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

from mmlab.store.errors import (
    CorruptStoreError,
    NotAStoreError,
    StoreError,
    TruncatedStoreError,
    UnsupportedVersionError,
)

__all__ = [
    "ALIGNMENT",
    "FORMAT_VERSION",
    "MAGIC",
    "Header",
    "Layout",
    "align_up",
    "check_fields",
    "encode_slot",
    "next_sequence",
    "read_header",
    "slot_size_for",
]

MAGIC = b"MMLABRS\x00"
FORMAT_VERSION = 1
ALIGNMENT = max(1 << 16, mmap.PAGESIZE)
BYTE_ORDER_MARK = 0xFEFF  # reads as 0xFFFE if the file was written big-endian
PREFIX = struct.Struct("<8sHHI")  # magic, version, byte-order mark, slot size
BODY = struct.Struct("<QQQQII")  # sequence, count, capacity, heap capacity, alignment, n fields
SECTION = struct.Struct("<QQ")  # offset, size
CRC = struct.Struct("<I")
SLOT_UNIT = 4096
MAX_SLOT = 1 << 20
# One commit per flush never gets near this; a larger number is damage, and refusing it keeps
# the next commit's sequence inside the header's 64-bit field.
MAX_SEQUENCE = 1 << 62
MAX_FIELD_NAME = 255


def align_up(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


@dataclass(frozen=True)
class Layout:
    """Where every section lives, derived from the header's sizes alone."""

    slot_size: int
    alignment: int
    capacity: int
    heap_capacity: int
    n_fields: int

    @cached_property
    def offsets_offset(self) -> int:
        return align_up(2 * self.slot_size, self.alignment)

    @cached_property
    def offsets_size(self) -> int:
        return (self.capacity + 1) * 8

    @cached_property
    def column_size(self) -> int:
        return self.capacity * 8

    @cached_property
    def column_stride(self) -> int:
        return align_up(self.column_size, self.alignment)

    @cached_property
    def first_column_offset(self) -> int:
        return align_up(self.offsets_offset + self.offsets_size, self.alignment)

    @cached_property
    def heap_offset(self) -> int:
        return align_up(
            self.first_column_offset + self.n_fields * self.column_stride, self.alignment
        )

    @cached_property
    def file_size(self) -> int:
        return align_up(self.heap_offset + self.heap_capacity, self.alignment)

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
        """(offset, length) of each section rounded up to its alignment: what a remap covers."""
        return [(off, align_up(size, self.alignment)) for off, size in self.sections()]

    def holds(self, other: Layout) -> bool:
        """Whether every section of ``other`` fits in the same section of this layout."""
        return (
            self.n_fields == other.n_fields
            and self.capacity >= other.capacity
            and self.heap_capacity >= other.heap_capacity
        )


@dataclass(frozen=True)
class Header:
    layout: Layout
    fields: tuple[str, ...]
    sequence: int
    count: int


def check_fields(fields: Sequence[str]) -> tuple[str, ...]:
    """The field names as a tuple, or a clear error for names a store cannot hold."""
    if isinstance(fields, str):
        raise TypeError("fields must be a sequence of names, not one string")
    fields = tuple(fields)
    for name in fields:
        if not isinstance(name, str) or not name:
            raise ValueError(f"field names must be non-empty strings, got {name!r}")
        if len(name.encode()) > MAX_FIELD_NAME:
            raise ValueError(f"field name {name[:20]!r}... is longer than {MAX_FIELD_NAME} bytes")
    if len(set(fields)) != len(fields):
        raise ValueError(f"field names must be unique: {fields}")
    return fields


def slot_size_for(fields: Sequence[str]) -> int:
    names = sum(2 + len(name.encode()) for name in fields)
    needed = PREFIX.size + BODY.size + (len(fields) + 2) * SECTION.size + names + CRC.size
    return align_up(needed, SLOT_UNIT)


def encode_slot(layout: Layout, fields: Sequence[str], sequence: int, count: int) -> bytes:
    """One header slot's bytes, checksum included."""
    parts = [
        PREFIX.pack(MAGIC, FORMAT_VERSION, BYTE_ORDER_MARK, layout.slot_size),
        BODY.pack(
            sequence,
            count,
            layout.capacity,
            layout.heap_capacity,
            layout.alignment,
            layout.n_fields,
        ),
        *(SECTION.pack(off, size) for off, size in layout.sections()),
    ]
    for name in fields:
        raw = name.encode()
        parts += [struct.pack("<H", len(raw)), raw]
    body = b"".join(parts)
    if len(body) > layout.slot_size - CRC.size:
        raise StoreError(f"the header needs {len(body)} bytes, more than its slot's")
    body = body.ljust(layout.slot_size - CRC.size, b"\0")
    return body + CRC.pack(zlib.crc32(body))


def next_sequence(sequence: int) -> int:
    """The sequence number of the commit after ``sequence``; an error if none may follow."""
    if sequence >= MAX_SEQUENCE:
        raise CorruptStoreError(
            f"commit sequence number {sequence} is impossibly large: the store cannot commit"
        )
    return sequence + 1


def _decode_body(slot: bytes, file_size: int) -> Header:
    """The header in one slot whose checksum holds, checked for sizes the file can hold."""
    body = slot[: -CRC.size]
    sequence, count, capacity, heap_capacity, alignment, n_fields = BODY.unpack_from(
        body, PREFIX.size
    )
    if alignment < 8 or alignment & (alignment - 1) or alignment > MAX_SLOT:
        raise CorruptStoreError(f"section alignment {alignment} is not a sensible power of two")
    if n_fields * (SECTION.size + 2) > len(body) or capacity > file_size // 8:
        raise CorruptStoreError(
            f"header claims {n_fields} fields and capacity {capacity}, "
            f"impossible in a file of {file_size} bytes"
        )
    if count > capacity:
        raise CorruptStoreError(f"record count {count} exceeds capacity {capacity}")
    if sequence > MAX_SEQUENCE:
        raise CorruptStoreError(f"commit sequence number {sequence} is impossibly large")
    layout = Layout(len(slot), alignment, capacity, heap_capacity, n_fields)
    pos = PREFIX.size + BODY.size
    stored = [SECTION.unpack_from(body, pos + k * SECTION.size) for k in range(n_fields + 2)]
    if stored != layout.sections():
        raise CorruptStoreError("section table does not match the sizes in the header")
    pos += (n_fields + 2) * SECTION.size
    fields = []
    for _ in range(n_fields):
        if pos + 2 > len(body):
            raise CorruptStoreError("field names run past the header")
        (length,) = struct.unpack_from("<H", body, pos)
        raw = body[pos + 2 : pos + 2 + length]
        if len(raw) != length:
            raise CorruptStoreError("field names run past the header")
        try:
            fields.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise CorruptStoreError(f"field name {raw[:20]!r} is not UTF-8") from None
        pos += 2 + length
    try:
        return Header(layout, check_fields(fields), sequence, count)
    except ValueError as exc:
        raise CorruptStoreError(f"field names in the header are invalid: {exc}") from None


def _read_slot(read_at: Callable[[int, int], bytes], at: int, file_size: int) -> Header:
    """Decode the slot at ``at``; raises a ``StoreError`` saying what is wrong with it."""
    prefix = read_at(at, PREFIX.size)
    if len(prefix) < PREFIX.size or prefix[:8] != MAGIC:
        raise NotAStoreError("no store header")
    _, version, mark, slot_size = PREFIX.unpack(prefix)
    if version != FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"store format version {version}; this mmlab reads version {FORMAT_VERSION} "
            "(upgrade mmlab, or rebuild the store)"
        )
    if mark != BYTE_ORDER_MARK:
        raise CorruptStoreError(
            f"byte-order mark is {mark:#06x}, not {BYTE_ORDER_MARK:#06x}; stores are little-endian"
        )
    if slot_size % SLOT_UNIT or not SLOT_UNIT <= slot_size <= MAX_SLOT or at not in (0, slot_size):
        raise CorruptStoreError(f"header slot size {slot_size} is invalid")
    if at + slot_size > file_size:
        raise TruncatedStoreError(f"{file_size} bytes, shorter than its own header")
    slot = read_at(at, slot_size)
    if zlib.crc32(slot[: -CRC.size]) != CRC.unpack(slot[-CRC.size :])[0]:
        raise CorruptStoreError("checksum fails (a torn or damaged header)")
    return _decode_body(slot, file_size)


# When several slots fail, the most telling reason is reported.
_RANK = [UnsupportedVersionError, TruncatedStoreError, CorruptStoreError, NotAStoreError]


def read_header(read_at: Callable[[int, int], bytes], file_size: int, name: object) -> Header:
    """The newest valid header of a store of ``file_size`` bytes.

    ``read_at(offset, n)`` returns up to ``n`` bytes at ``offset``. Slot 1 starts at the slot
    size that slot 0 states; if slot 0 is too damaged to state it, slot 1 is searched for at
    every possible slot size.
    """
    headers: list[Header] = []
    errors: dict[int, StoreError] = {}

    def try_slot(at: int) -> None:
        try:
            headers.append(_read_slot(read_at, at, file_size))
        except StoreError as exc:
            errors[at] = exc

    try_slot(0)
    if headers:
        try_slot(headers[0].layout.slot_size)
    else:
        for at in range(SLOT_UNIT, min(MAX_SLOT, file_size - PREFIX.size) + 1, SLOT_UNIT):
            prefix = read_at(at, PREFIX.size)
            if prefix[:8] == MAGIC and PREFIX.unpack(prefix)[3] == at:
                try_slot(at)
                break
    if not headers:
        worst = min(errors.values(), key=lambda e: _RANK.index(type(e)))
        if isinstance(worst, NotAStoreError):
            raise NotAStoreError(f"{name} is not an mmlab record store (no store header)")
        reasons = "; ".join(f"header slot at {at}: {exc}" for at, exc in errors.items())
        raise type(worst)(f"{name}: no usable header ({reasons})")
    header = max(headers, key=lambda h: h.sequence)
    if header.layout.file_size > file_size:
        raise TruncatedStoreError(
            f"{name} is truncated: {file_size} bytes, but its sections need "
            f"{header.layout.file_size}"
        )
    return header
