"""The on-disk format: layouts, header slots, and a store that either slot can open."""

from __future__ import annotations

import itertools
import struct
import zlib

import pytest
from conftest import FIELDS

from mmlab import CorruptStoreError, NotAStoreError, RecordStore, UnsupportedVersionError
from mmlab.store.format import (
    ALIGNMENT,
    BODY,
    MAX_SEQUENCE,
    PREFIX,
    Layout,
    encode_slot,
    read_header,
    slot_size_for,
)


def _file(slots: list[bytes], layout: Layout) -> bytes:
    data = bytearray(layout.file_size)
    for k, slot in enumerate(slots):
        data[k * layout.slot_size : (k + 1) * layout.slot_size] = slot
    return bytes(data)


def _header_of(data: bytes):
    return read_header(lambda at, n: data[at : at + n], len(data), "test.mms")


LAYOUT = Layout(slot_size_for(FIELDS), ALIGNMENT, capacity=10, heap_capacity=320, n_fields=3)


def test_sections_are_aligned_and_disjoint():
    spans = sorted(LAYOUT.sections())
    assert all(offset % ALIGNMENT == 0 for offset, _ in spans)
    assert all(a + size <= b for (a, size), (b, _) in itertools.pairwise(spans))
    assert spans[-1][0] + spans[-1][1] <= LAYOUT.file_size


def test_a_layout_holds_smaller_ones_only():
    bigger = Layout(LAYOUT.slot_size, ALIGNMENT, 20, 640, 3)
    assert bigger.holds(LAYOUT) and not LAYOUT.holds(bigger)
    assert not Layout(LAYOUT.slot_size, ALIGNMENT, 20, 640, 2).holds(LAYOUT)


def test_the_newest_valid_slot_wins():
    data = _file([encode_slot(LAYOUT, FIELDS, 8, 7), encode_slot(LAYOUT, FIELDS, 9, 4)], LAYOUT)
    header = _header_of(data)
    assert (header.sequence, header.count, header.fields) == (9, 4, FIELDS)


@pytest.mark.parametrize("byte", range(PREFIX.size))
def test_slot_one_opens_the_store_when_slot_zero_lost_any_prefix_byte(byte):
    older, newer = encode_slot(LAYOUT, FIELDS, 2, 3), encode_slot(LAYOUT, FIELDS, 3, 5)
    damaged = bytearray(newer)
    damaged[byte] ^= 0x10  # magic, version, byte-order mark or slot size
    header = _header_of(_file([bytes(damaged), older], LAYOUT))
    assert (header.sequence, header.count) == (2, 3)


def _with_body(slot: bytes, **changes: int) -> bytes:
    """The slot with some body fields changed and its checksum made valid again."""
    names = ["sequence", "count", "capacity", "heap_capacity", "alignment", "n_fields"]
    values = dict(zip(names, BODY.unpack_from(slot, PREFIX.size), strict=True)) | changes
    body = bytearray(slot[:-4])
    BODY.pack_into(body, PREFIX.size, *(values[name] for name in names))
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def test_an_impossible_sequence_number_is_damage_not_a_crash():
    good = encode_slot(LAYOUT, FIELDS, 4, 1)
    huge = _with_body(good, sequence=2**64 - 1)
    assert _header_of(_file([huge, good], LAYOUT)).sequence == 4
    with pytest.raises(CorruptStoreError, match="sequence number"):
        _header_of(_file([huge, huge], LAYOUT))


def test_unknown_version_in_both_slots():
    slot = bytearray(encode_slot(LAYOUT, FIELDS, 1, 0))
    struct.pack_into("<H", slot, 8, 2)
    with pytest.raises(UnsupportedVersionError, match="version 2"):
        _header_of(_file([bytes(slot), bytes(slot)], LAYOUT))


def test_no_magic_anywhere_is_not_a_store():
    with pytest.raises(NotAStoreError):
        _header_of(bytes(LAYOUT.file_size))


def test_a_store_whose_slot_zero_prefix_is_damaged_opens_and_repairs(filled):
    with RecordStore.open(filled, "r+") as store:
        store.append("CC", [1, 2, 3])  # a second commit, into slot 1
    with open(filled, "r+b") as f:
        f.write(b"\xff" * PREFIX.size)
    with RecordStore.open(filled, "r+") as store:
        assert len(store) == 101
        store.append("N", [1, 2, 3])  # this commit rewrites slot 0
    with open(filled, "rb") as f:
        assert f.read(8) == b"MMLABRS\0"
    with RecordStore.open(filled) as store:
        assert len(store) == 102


def test_flush_after_a_huge_sequence_number_cannot_overflow(filled):
    with RecordStore.open(filled, "r+") as store:
        slot_size = store._layout.slot_size
    data = bytearray(filled.read_bytes())
    for at in (0, slot_size):
        data[at : at + slot_size] = _with_body(data[at : at + slot_size], sequence=2**64 - 1)
    filled.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError, match="sequence number"):
        RecordStore.open(filled, "r+")


def test_a_store_at_the_last_sequence_number_reads_but_refuses_a_writer(filled):
    with RecordStore.open(filled, "r+") as store:
        slot_size, newest = store._layout.slot_size, store._sequence % 2
    data = bytearray(filled.read_bytes())
    for k, sequence in ((newest, MAX_SEQUENCE), (1 - newest, MAX_SEQUENCE - 1)):
        at = k * slot_size
        data[at : at + slot_size] = _with_body(data[at : at + slot_size], sequence=sequence)
    filled.write_bytes(bytes(data))
    with RecordStore.open(filled) as store:
        assert len(store) == 100
    with pytest.raises(CorruptStoreError, match="cannot commit"):
        RecordStore.open(filled, "r+")


@pytest.mark.parametrize("name", [b"\xff" * 10, b"", b"mu"])
def test_field_names_a_store_could_not_write_back_are_damage(name):
    fields = ("mu", "x")  # the second name is replaced by ``name``
    slot = bytearray(encode_slot(Layout(LAYOUT.slot_size, ALIGNMENT, 10, 320, 2), fields, 1, 0))
    at = PREFIX.size + BODY.size + 4 * 16 + 2 + len("mu")
    raw = struct.pack("<H", len(name)) + name
    slot[at : at + len(raw)] = raw
    slot[-4:] = struct.pack("<I", zlib.crc32(slot[:-4]))
    layout = Layout(LAYOUT.slot_size, ALIGNMENT, 10, 320, 2)
    with pytest.raises(CorruptStoreError, match="field name"):
        _header_of(_file([bytes(slot), bytes(slot)], layout))
