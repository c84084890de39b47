"""The fuzz test's worker: damage copies of seed stores, then use each one through the public API.

``test_fuzz.py`` runs this script in a subprocess, because the failure it hunts for (SIGBUS,
SIGSEGV, a hang) would take pytest down with it. Case ``n`` of fuzz seed ``s`` is a pure
function of ``(s, n)``: a ``random.Random`` seeded with both picks a seed store and a
mutation, so any case can be run again on its own::

    .venv/bin/python tests/torture/fuzz_worker.py --seed S --case N

Each case writes the mutant, opens it ``"r"`` and then ``"r+"``, reads every record three
ways and every column, calls ``refresh()``, and in ``"r+"`` appends a record and flushes. The
store may refuse or report damage only with a ``StoreError``, ``IndexError`` or ``KeyError``;
any other exception is recorded with its traceback. A write session must also leave the file
no worse: if the mutant opened, it still opens afterwards, with the appended record if the
flush succeeded.

The seed stores are built with the public API. Mutations reach past the header checksum by
recomputing it (``zlib.crc32`` of the slot minus its last 4 bytes, as
``mmlab.store.format.encode_slot`` writes it), so huge counts, capacities, alignments, sequence
numbers, section tables and field names get to the checks behind it.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import random
import struct
import sys
import tempfile
import traceback
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mmlab import RecordStore, StoreError
from mmlab.store import format as fmt

ACCEPTABLE = (StoreError, IndexError, KeyError)
APPENDED = "C1=CC=CC=C1→⚗"

# Where each header field sits in a slot (format.PREFIX, then format.BODY), and its width.
SLOT_FIELDS = {
    "version": (8, "<H"),
    "byte-order mark": (10, "<H"),
    "slot size": (12, "<I"),
    "sequence": (16, "<Q"),
    "count": (24, "<Q"),
    "capacity": (32, "<Q"),
    "heap capacity": (40, "<Q"),
    "alignment": (48, "<I"),
    "field count": (52, "<I"),
}
SECTIONS_AT = fmt.PREFIX.size + fmt.BODY.size

# Byte strings that are not UTF-8: a lone continuation byte, an overlong NUL, a surrogate,
# a code point past U+10FFFF, a sequence cut short, bytes that never occur.
INVALID_UTF8 = [b"\x80", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\xff"]


# -- seed stores ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Seed:
    """A store built with the public API: its bytes, and where its parts lie in them."""

    name: str
    data: bytes
    fields: tuple[str, ...]
    count: int
    sections: dict[str, tuple[int, int]]
    heap_used: int

    @property
    def slot_size(self) -> int:
        return fmt.slot_size_for(self.fields)

    @property
    def header_used(self) -> int:
        """How many bytes at the start of a slot hold fields and names, not zero padding."""
        names = sum(2 + len(name.encode()) for name in self.fields)
        return SECTIONS_AT + (len(self.fields) + 2) * fmt.SECTION.size + names

    def slot_field(self, slot: int, name: str) -> int:
        at, layout = SLOT_FIELDS[name]
        return struct.unpack_from(layout, self.data, slot * self.slot_size + at)[0]


def _smiles(i: int) -> str:
    """Strings of every UTF-8 length, the empty one included."""
    pieces = ["", "C", "N#N", "é", "C≡C", "🧪", "[Na+].[Cl-]", "e\u0301", "中文", "O=C=O"]
    return pieces[i % len(pieces)] * (1 + i % 3)


def _make_empty(path: Path) -> None:
    RecordStore.create(path, ["energy"], capacity=4).close()


def _make_unicode(path: Path) -> None:
    # Two flushes, so the slots hold different commits and a damaged one falls back.
    with RecordStore.create(path, ["μ", "α", "U₀"], capacity=16) as store:
        store.extend((_smiles(i), [i, -i, i / 3]) for i in range(4))
        store.flush()
        store.extend((_smiles(i), [i, -i, i / 3]) for i in range(4, 10))


def _make_grown(path: Path) -> None:
    # Tiny capacities, so the store grows (into new files) several times as it fills.
    with RecordStore.create(path, ["mu", "U0"], capacity=2, heap_capacity=8) as store:
        for start in range(0, 100, 25):
            store.extend((_smiles(i), [i * 0.5, -i]) for i in range(start, start + 25))
            store.flush()


def _make_wide(path: Path) -> None:
    # Long names fill half the header slot: names that decode longer than they are stored
    # (invalid UTF-8 becomes U+FFFD, three bytes) can then overflow it.
    names = [f"{k}" + "é" * 127 for k in range(6)] + ["a" * 255, "b"]
    with RecordStore.create(path, names, capacity=8) as store:
        store.extend((_smiles(i), [float(i)] * len(names)) for i in range(3))


SEED_MAKERS = {
    "empty": _make_empty,
    "unicode": _make_unicode,
    "grown": _make_grown,
    "wide": _make_wide,
}


def build_seeds(directory: Path) -> list[Seed]:
    directory.mkdir(parents=True, exist_ok=True)
    seeds = []
    for name, make in SEED_MAKERS.items():
        path = directory / f"{name}.mms"
        path.unlink(missing_ok=True)
        make(path)
        with RecordStore.open(path) as store:
            fields, count, sections = store.fields, len(store), store.sections
        data = path.read_bytes()
        offsets_at = sections["offsets"][0]
        (heap_used,) = struct.unpack_from("<q", data, offsets_at + 8 * count)
        seed = Seed(name, data, fields, count, sections, heap_used)
        # The offsets above are this test's reading of format.py: check it still holds.
        assert seed.slot_field(0, "slot size") == seed.slot_size, "format changed"
        assert count in (seed.slot_field(0, "count"), seed.slot_field(1, "count")), "format"
        seeds.append(seed)
    return seeds


# -- mutations -----------------------------------------------------------------------------


def _interesting(rng: random.Random, bits: int, current: int) -> int:
    """A value likely to break a check: an edge, a power of two near the limits, or noise."""
    edges = [0, 1, 2, 7, 8, 255, 4095, 4096, 4097, 65535, 65536, 2**20, 2**31 - 1, 2**31]
    edges += [2**32 - 1, 2**62, 2**62 + 1, 2**63 - 1, 2**63, 2**64 - 1]
    edges += [current - 1, current + 1, current * 2, current // 2, rng.getrandbits(bits)]
    return rng.choice([v for v in edges if 0 <= v < 2**bits])


def _fix_crc(data: bytearray, seed: Seed, slot: int) -> None:
    start, end = slot * seed.slot_size, (slot + 1) * seed.slot_size
    data[end - 4 : end] = fmt.CRC.pack(zlib.crc32(data[start : end - 4]))


def _pick_slots(rng: random.Random) -> tuple[int, ...]:
    return rng.choice([(0,), (1,), (0, 1)])


def _slot_position(rng: random.Random, seed: Seed, slot: int) -> int:
    # Mostly where the fields and names are; sometimes the padding and checksum.
    used = seed.header_used if rng.random() < 0.75 else seed.slot_size
    return slot * seed.slot_size + rng.randrange(used)


def _flip_bits(rng: random.Random, data: bytearray, seed: Seed, slots: tuple[int, ...]) -> str:
    where = []
    for slot in slots:
        for _ in range(rng.randint(1, 8)):
            at, bit = _slot_position(rng, seed, slot), rng.randrange(8)
            data[at] ^= 1 << bit
            where.append(f"{at}.{bit}")
    return f"slots {slots} bits {' '.join(where)}"


def _overwrite_bytes(
    rng: random.Random, data: bytearray, seed: Seed, slots: tuple[int, ...]
) -> str:
    where = []
    for slot in slots:
        for _ in range(rng.randint(1, 3)):
            at, n = _slot_position(rng, seed, slot), rng.randint(1, 16)
            fill = rng.choice([b"\x00" * n, b"\xff" * n, rng.randbytes(n)])
            data[at : at + n] = fill
            where.append(f"{at}:{fill.hex()}")
    return f"slots {slots} bytes {' '.join(where)}"


def header_bit_flips(rng: random.Random, data: bytearray, seed: Seed) -> str:
    return _flip_bits(rng, data, seed, _pick_slots(rng))


def header_byte_overwrites(rng: random.Random, data: bytearray, seed: Seed) -> str:
    return _overwrite_bytes(rng, data, seed, _pick_slots(rng))


def rechecksummed_bit_flips(rng: random.Random, data: bytearray, seed: Seed) -> str:
    slots = _pick_slots(rng)
    text = _flip_bits(rng, data, seed, slots)
    for slot in slots:
        _fix_crc(data, seed, slot)
    return text


def rechecksummed_byte_overwrites(rng: random.Random, data: bytearray, seed: Seed) -> str:
    slots = _pick_slots(rng)
    text = _overwrite_bytes(rng, data, seed, slots)
    for slot in slots:
        _fix_crc(data, seed, slot)
    return text


def rechecksummed_fields(rng: random.Random, data: bytearray, seed: Seed) -> str:
    """Set header fields, section table entries or name lengths to edge values."""
    slots, changes = _pick_slots(rng), []
    n_sections = len(seed.fields) + 2
    for slot in slots:
        base = slot * seed.slot_size
        for _ in range(rng.randint(1, 3)):
            target = rng.choice([*SLOT_FIELDS, "section table", "field-name length"])
            if target == "section table":
                k = rng.randrange(2 * n_sections)
                at, layout, label = base + SECTIONS_AT + 8 * k, "<Q", f"section word {k}"
            elif target == "field-name length":
                k = rng.randrange(len(seed.fields))
                at = base + SECTIONS_AT + n_sections * fmt.SECTION.size
                at += sum(2 + len(name.encode()) for name in seed.fields[:k])
                layout, label = "<H", f"length of name {k}"
            else:
                offset, layout = SLOT_FIELDS[target]
                at, label = base + offset, target
            (current,) = struct.unpack_from(layout, data, at)
            value = _interesting(rng, 8 * struct.calcsize(layout), current)
            struct.pack_into(layout, data, at, value)
            changes.append(f"slot {slot} {label} := {value}")
        _fix_crc(data, seed, slot)
    return ", ".join(changes)


def _encode_slot_raw(
    layout: fmt.Layout, names: list[bytes], sequence: int, count: int, slot_size: int
) -> bytes:
    """``format.encode_slot``, but with names as raw bytes (so they can be invalid UTF-8)."""
    parts = [
        fmt.PREFIX.pack(fmt.MAGIC, fmt.FORMAT_VERSION, fmt.BYTE_ORDER_MARK, slot_size),
        fmt.BODY.pack(
            sequence, count, layout.capacity, layout.heap_capacity, layout.alignment, len(names)
        ),
        *(fmt.SECTION.pack(offset, size) for offset, size in layout.sections()),
        *(struct.pack("<H", len(raw)) + raw for raw in names),
    ]
    body = b"".join(parts)[: slot_size - fmt.CRC.size].ljust(slot_size - fmt.CRC.size, b"\0")
    return body + fmt.CRC.pack(zlib.crc32(body))


def _mutated_names(rng: random.Random, names: list[bytes]) -> tuple[list[bytes], str]:
    how = rng.choice(["invalid UTF-8", "empty", "duplicate", "longest", "one fewer", "one more"])
    k = rng.randrange(len(names))
    if how == "invalid UTF-8":
        names[k] = rng.choice(INVALID_UTF8) * rng.randint(1, 255 // 4)
    elif how == "empty":
        names[k] = b""
    elif how == "duplicate":
        names[k] = names[k - 1]
    elif how == "longest":
        names[k] = b"\xff" * fmt.MAX_FIELD_NAME
    elif how == "one fewer":
        del names[k]
    else:
        names.append(b"extra")
    return names, f"names: {how} at {k}"


def reencoded_headers(rng: random.Random, data: bytearray, seed: Seed) -> str:
    """Whole slots that are consistent (checksum, section table) but claim something else."""
    slot_size = seed.slot_size
    capacity, heap_capacity = seed.slot_field(0, "capacity"), seed.slot_field(0, "heap capacity")
    alignment, count = seed.slot_field(0, "alignment"), seed.count
    sequence = max(seed.slot_field(0, "sequence"), seed.slot_field(1, "sequence"))
    names = [name.encode() for name in seed.fields]
    changes = []
    for _ in range(rng.randint(1, 3)):
        what = rng.choice(["capacity", "heap capacity", "alignment", "count", "sequence", "names"])
        if what == "capacity":
            capacity = rng.choice([0, 1, count, count + 1, len(data) // 8, capacity * 2])
        elif what == "heap capacity":
            heap_capacity = rng.choice([0, seed.heap_used - 1, seed.heap_used, 2**40, 2**63])
        elif what == "alignment":
            alignment = 1 << rng.randint(3, 20)
        elif what == "count":
            count = rng.choice([0, count - 1, count + 1, capacity, capacity + 1, 2**64 - 1])
        elif what == "sequence":
            sequence = rng.choice([0, sequence + 1, fmt.MAX_SEQUENCE, fmt.MAX_SEQUENCE + 1])
        else:
            names, how = _mutated_names(rng, names)
            changes.append(how)
            continue
        changes.append(f"{what} := {locals()[what.replace(' ', '_')]}")
    count, heap_capacity = max(count, 0), max(heap_capacity, 0)
    layout = fmt.Layout(slot_size, alignment, capacity, min(heap_capacity, 2**64 - 1), len(names))
    slots = _pick_slots(rng)
    slot = _encode_slot_raw(layout, names, sequence, min(count, 2**64 - 1), slot_size)
    for k in slots:
        data[k * slot_size : (k + 1) * slot_size] = slot
    return f"slots {slots} {', '.join(changes)}"
