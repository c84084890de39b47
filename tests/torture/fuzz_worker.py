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
import warnings
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mmlab import RecordStore, StoreError
from mmlab.store import format as fmt

ACCEPTABLE = (StoreError, IndexError, KeyError)
APPENDED = "C1=CC=CC=C1→⚗"
PROGRESS_SIZE = 1024  # bytes: the progress file is rewritten in place, always this long

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
    # Fourteen names of 254 bytes fill 3,910 of the slot's 4,096 bytes: a name that decodes
    # longer than it is stored (each invalid UTF-8 byte becomes U+FFFD, three bytes) then
    # no longer fits when the header is written again.
    names = [f"{k:02}" + "é" * 126 for k in range(14)]
    with RecordStore.create(path, names, capacity=8) as store:
        store.extend((_smiles(i), [i + k / 16 for k in range(len(names))]) for i in range(3))


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
        # SLOT_FIELDS is this test's reading of format.py: check that it still holds.
        changed = "the header layout changed: update SLOT_FIELDS from format.py"
        assert seed.slot_field(0, "slot size") == seed.slot_size, changed
        assert count in (seed.slot_field(0, "count"), seed.slot_field(1, "count")), changed
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
    if not names:
        return [b"extra"], "names: one more"
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
    claims = {
        "capacity": seed.slot_field(0, "capacity"),
        "heap capacity": seed.slot_field(0, "heap capacity"),
        "alignment": seed.slot_field(0, "alignment"),
        "count": seed.count,
        "sequence": max(seed.slot_field(0, "sequence"), seed.slot_field(1, "sequence")),
    }
    # Evaluated when picked, so that a count can follow a capacity changed just before.
    pickers: dict[str, Callable[[], int]] = {
        "capacity": lambda: rng.choice(
            [0, 1, seed.count, seed.count + 1, len(data) // 8, 2 * claims["capacity"]]
        ),
        "heap capacity": lambda: rng.choice(
            [0, max(seed.heap_used - 1, 0), seed.heap_used, 2**40, 2**63]
        ),
        "alignment": lambda: 1 << rng.randint(3, 20),
        "count": lambda: rng.choice(
            [0, seed.count + 1, claims["capacity"], claims["capacity"] + 1, 2**64 - 1]
        ),
        "sequence": lambda: rng.choice(
            [0, claims["sequence"] + 1, fmt.MAX_SEQUENCE, fmt.MAX_SEQUENCE + 1, 2**64 - 1]
        ),
    }
    names, changes = [name.encode() for name in seed.fields], []
    for _ in range(rng.randint(1, 3)):
        what = rng.choice([*pickers, "names"])
        if what == "names":
            names, how = _mutated_names(rng, names)
            changes.append(how)
        else:
            claims[what] = min(pickers[what](), 2**64 - 1)  # what the header's field holds
            changes.append(f"{what} := {claims[what]}")
    layout = fmt.Layout(
        seed.slot_size, claims["alignment"], claims["capacity"], claims["heap capacity"], len(names)
    )
    slot = _encode_slot_raw(layout, names, claims["sequence"], claims["count"], seed.slot_size)
    slots = _pick_slots(rng)
    for k in slots:
        data[k * seed.slot_size : (k + 1) * seed.slot_size] = slot
    return f"slots {slots} {', '.join(changes)}"


def offsets_damage(rng: random.Random, data: bytearray, seed: Seed) -> str:
    """String offsets that are negative, past the heap, out of order, or bit-flipped."""
    offsets_at, size = seed.sections["offsets"]
    heap_capacity = seed.sections["heap"][1]
    changes = []
    for _ in range(rng.randint(1, 3)):
        # Mostly the entries in use (count + 1 of them), sometimes any entry.
        entries = seed.count + 1 if rng.random() < 0.8 else size // 8
        k = rng.randrange(entries)
        at = offsets_at + 8 * k
        (current,) = struct.unpack_from("<q", data, at)
        how = rng.choice(["value", "swap", "bit flip"])
        if how == "swap" and k + 1 < size // 8:
            data[at : at + 16] = data[at + 8 : at + 16] + data[at : at + 8]
            changes.append(f"swap {k} and {k + 1}")
            continue
        if how == "bit flip":
            value = current ^ (1 << rng.randrange(64))
        else:
            edges = [-1, -(2**63), current - 1, current + 1, heap_capacity, heap_capacity + 1]
            value = rng.choice([*edges, 2**63 - 1, 2**31, rng.getrandbits(63)])
        value = (value + 2**63) % 2**64 - 2**63  # wrapped into int64, as the file holds it
        struct.pack_into("<q", data, at, value)
        changes.append(f"offset {k} := {value}")
    return ", ".join(changes)


def heap_damage(rng: random.Random, data: bytearray, seed: Seed) -> str:
    """Invalid UTF-8 or flipped bits in the strings."""
    heap_at = seed.sections["heap"][0]
    changes = []
    for _ in range(rng.randint(1, 3)):
        at = heap_at + rng.randrange(max(seed.heap_used, 1))
        if rng.random() < 0.5:
            raw = rng.choice(INVALID_UTF8)
            data[at : at + len(raw)] = raw
            changes.append(f"{at}:{raw.hex()}")
        else:
            bit = rng.randrange(8)
            data[at] ^= 1 << bit
            changes.append(f"bit {at}.{bit}")
    return ", ".join(changes)


def truncations(rng: random.Random, data: bytearray, seed: Seed) -> str:
    """Cut the file anywhere: in a header, at or near a section boundary, or near its end."""
    boundaries = [at + d for at, _ in seed.sections.values() for d in (-8, -1, 0, 1, 8)]
    length = rng.choice(
        [
            rng.randrange(len(data)),
            rng.randrange(2 * seed.slot_size + fmt.PREFIX.size),
            rng.choice(boundaries),
            len(data) - rng.randint(1, 4096),
        ]
    )
    original = len(data)
    del data[length:]
    return f"to {length} of {original} bytes"


def garbage_tails(rng: random.Random, data: bytearray, seed: Seed) -> str:
    """Bytes past the end: noise, zeros, or copies of a header slot (a second magic)."""
    n = rng.choice([1, 7, 4096, 65536, rng.randint(1, 1 << 18)])
    kind = rng.choice(["random", "zeros", "header copies"])
    if kind == "random":
        tail = rng.randbytes(n)
    elif kind == "zeros":
        tail = bytes(n)
    else:
        tail = (data[: seed.slot_size] * (n // seed.slot_size + 1))[:n]
    data += tail
    return f"{n} bytes of {kind}"


MUTATIONS: dict[str, Callable[[random.Random, bytearray, Seed], str]] = {
    "header bit flips": header_bit_flips,
    "header byte overwrites": header_byte_overwrites,
    "re-checksummed bit flips": rechecksummed_bit_flips,
    "re-checksummed byte overwrites": rechecksummed_byte_overwrites,
    "re-checksummed field values": rechecksummed_fields,
    "re-encoded headers": reencoded_headers,
    "offsets damage": offsets_damage,
    "heap damage": heap_damage,
    "truncations": truncations,
    "garbage tails": garbage_tails,
}


def stacked(rng: random.Random, data: bytearray, seed: Seed) -> str:
    """Two or three mutations at once: a damaged header over damaged strings, say."""
    steps = []
    kinds = rng.sample(sorted(set(MUTATIONS) - {"stacked"}), rng.randint(2, 3))
    # Those that change the file's length go last: the others write at fixed offsets.
    kinds.sort(key=lambda kind: kind in ("truncations", "garbage tails"))
    for kind in kinds:
        steps.append(f"{kind} ({MUTATIONS[kind](rng, data, seed)})")
    return "; ".join(steps)


MUTATIONS["stacked"] = stacked


def mutant(fuzz_seed: int, case: int, seeds: list[Seed]) -> tuple[str, bytes, str]:
    """Case ``case``'s mutation kind, bytes and description: a function of its arguments."""
    rng = random.Random(f"{fuzz_seed}:{case}")
    seed = rng.choice(seeds)
    kind = rng.choice(sorted(MUTATIONS))
    data = bytearray(seed.data)
    text = MUTATIONS[kind](rng, data, seed)
    return kind, bytes(data), f"{kind} of seed store {seed.name!r}: {text}"


# -- using a mutant ------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one case did: how each open went, the store's errors, and anything unacceptable."""

    opened: dict[str, str] = field(default_factory=dict)  # mode: "opened", or the error's type
    errors: Counter[str] = field(default_factory=Counter)  # acceptable errors after opening
    bad: list[str] = field(default_factory=list)  # tracebacks of unacceptable exceptions
    lost: list[str] = field(default_factory=list)  # writes the store lost

    def attempt(self, what: str, call: Callable[..., object], *args: object) -> bool:
        """Call ``call(*args)``; True if it returned, False if it raised (and record that)."""
        try:
            call(*args)
        except ACCEPTABLE as exc:
            self.errors[type(exc).__name__] += 1
            return False
        except Exception:
            self.bad.append(f"{what}:\n{traceback.format_exc()}")
            return False
        return True


def _open(path: Path, mode: str, outcome: Outcome) -> RecordStore | None:
    try:
        store = RecordStore.open(path, mode)
    except ACCEPTABLE as exc:
        outcome.opened[mode] = type(exc).__name__
        return None
    except Exception as exc:
        outcome.opened[mode] = type(exc).__name__
        outcome.bad.append(f"RecordStore.open(path, {mode!r}):\n{traceback.format_exc()}")
        return None
    outcome.opened[mode] = "opened"
    return store


def _read_everything(store: RecordStore, outcome: Outcome) -> None:
    for i in range(len(store)):
        outcome.attempt(f"store[{i}]", store.__getitem__, i)
        outcome.attempt(f"store.smiles({i})", store.smiles, i)
    outcome.attempt("list(store)", list, store)
    for name in store.fields:
        # tobytes() reads every value, so a column mapped past the file's end would fault.
        outcome.attempt(f"column({name!r})", lambda name=name: store.column(name).tobytes())
    outcome.attempt("refresh()", store.refresh)
    outcome.attempt("repr(store)", repr, store)


def _read_session(path: Path, outcome: Outcome) -> None:
    store = _open(path, "r", outcome)
    if store is not None:
        _read_everything(store, outcome)
        outcome.attempt("close()", store.close)


def _write_session(path: Path, outcome: Outcome) -> None:
    """Read everything, append a record and flush; then check that the file kept it."""
    store = _open(path, "r+", outcome)
    if store is None:
        return
    _read_everything(store, outcome)
    values = [0.25] * len(store.fields)
    wrote = outcome.attempt("append()", store.append, APPENDED, values)
    wrote = outcome.attempt("flush()", store.flush) and wrote
    expected = len(store)
    wrote = outcome.attempt("close()", store.close) and wrote
    try:
        again = RecordStore.open(path)
    except ACCEPTABLE as exc:
        outcome.lost.append(f"it opened for writing, but not after the write session: {exc!r}")
        return
    except Exception:
        outcome.bad.append(f"reopening after the write session:\n{traceback.format_exc()}")
        return
    with again:
        if wrote and not _holds_appended(again, expected):
            outcome.lost.append(
                f"append() and flush() succeeded, but the store reopens with {len(again)} "
                f"records (expected {expected}), the last not the one appended"
            )


def _holds_appended(store: RecordStore, expected: int) -> bool:
    """Whether ``store`` has ``expected`` records, the last one the record the test appended."""
    if len(store) != expected:
        return False
    try:
        return store.smiles(-1) == APPENDED
    except ACCEPTABLE:
        return False


def run_case(data: bytes, workdir: Path) -> Outcome:
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.iterdir():  # a growth's temporary files, if one failed midway
        stale.unlink()
    path = workdir / "case.mms"
    path.write_bytes(data)
    outcome = Outcome()
    _read_session(path, outcome)
    _write_session(path, outcome)
    return outcome


# -- running a range of cases ------------------------------------------------------------


def work(fuzz_seed: int, cases: range, workdir: Path, progress: Path, results: Path) -> None:
    """Run ``cases``, telling the parent each case before it starts and each outcome after.

    Both go straight to the files with ``os.write`` (no buffer), so when this process dies the
    parent still learns which case killed it and every outcome before that.
    """
    seeds = build_seeds(workdir / "seeds")
    progress_fd = os.open(progress, os.O_WRONLY | os.O_CREAT, 0o644)
    results_fd = os.open(results, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for case in cases:
        kind, data, description = mutant(fuzz_seed, case, seeds)
        # One fixed-size write, so the parent never reads half an old and half a new line.
        line = f"{case} {description}"[:PROGRESS_SIZE].ljust(PROGRESS_SIZE)
        os.pwrite(progress_fd, line.encode("ascii", "replace"), 0)
        outcome = run_case(data, workdir / "case")
        record = {
            "case": case,
            "kind": kind,
            "opened": outcome.opened,
            "errors": outcome.errors,
            "bad": outcome.bad,
            "lost": outcome.lost,
        }
        if outcome.bad or outcome.lost:
            record["mutation"] = description
        os.write(results_fd, (json.dumps(record) + "\n").encode())
    os.close(progress_fd)
    os.close(results_fd)


def replay(fuzz_seed: int, case: int, workdir: Path) -> int:
    """Run one case and say what happened; the mutant stays in ``workdir`` to look at."""
    _, data, description = mutant(fuzz_seed, case, build_seeds(workdir / "seeds"))
    print(f"case {case} of fuzz seed {fuzz_seed}: {description}")
    outcome = run_case(data, workdir / "case")
    print(f"opened: {outcome.opened}; store errors after opening: {dict(outcome.errors)}")
    for text in outcome.bad + outcome.lost:
        print(f"\nFAILURE: {text}")
    print(f"\nthe mutant: {workdir / 'case' / 'case.mms'} (after the write session)")
    return 1 if outcome.bad or outcome.lost else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, required=True, help="the fuzz seed")
    parser.add_argument("--case", type=int, help="replay this one case and report it")
    parser.add_argument("--first", type=int, help="first case of the range to run")
    parser.add_argument("--stop", type=int, help="end of the range (exclusive)")
    parser.add_argument("--dir", type=Path, help="scratch directory (default: a new one)")
    parser.add_argument("--progress", type=Path, help="file naming the case in progress")
    parser.add_argument("--results", type=Path, help="file to append outcomes to, as JSON")
    args = parser.parse_args(argv)
    # On SIGSEGV, SIGBUS or the parent's SIGABRT for a hang, print where Python was to
    # stderr: the parent shows it.
    faulthandler.enable()
    warnings.simplefilter("error")  # as the test suite's filterwarnings = error
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="mmlab-fuzz-"))
    if args.case is not None:
        return replay(args.seed, args.case, workdir)
    work(args.seed, range(args.first, args.stop), workdir, args.progress, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
