"""A memory-mapped record store: one UTF-8 string and a fixed set of float64 fields per record.

The whole store is one file, mapped into memory. Each field is its own contiguous float64
column and the strings are an int64 offsets array plus a byte heap, every section starting on
a 64 KiB boundary (``mmlab.store.format``). So ``store.column("U0")`` is a numpy view of the
file with no copy, and doubling U0 in place touches U0's pages and no others.

Durability: ``flush()`` first makes the record data durable (msync), then writes the header
count that publishes it; nothing flushes per record, and nothing else publishes records (not
even growth). A writer killed at any instant leaves a store that opens and holds exactly the
records of its last flush. Space is reserved when the file is created or grown, so a full disk
is a ``NoSpaceError`` at that call, never a SIGBUS later.

Growth writes the store into a new file twice the size and renames it over the old one, so a
crash during growth loses nothing and a mapped file is never shrunk under a reader. Views taken
before any number of growths are re-pointed at the moved sections (``mmlab.store.mapping``),
so they stay live. After ``close()`` the views you still hold keep the data they map, but no
longer follow later growths.

Sharing: one writer at a time holds an advisory ``flock`` (a process forked from a writer shares
it until it exits); any number of readers map the same file and see what the writer has
flushed after they call ``refresh()``. Mode ``"c"`` is a private copy-on-write snapshot:
``refresh()`` follows the writer while you have changed nothing, and raises once you have.

Many records at once (``mmlab.store.bulk``): ``RecordStore.from_columns`` builds a store and
``extend_columns`` appends to one from columns (a list of strings, a 2-D array or a mapping of
field -> array), and ``take(indices)`` reads a batch as a list of strings and an ``(n, fields)``
array: no Python step per number, several times faster than a record at a time.

SIGBUS: if someone truncates a store file by hand under a live mapping, reading records
(``store[i]``, ``take``, ``smiles()``, iteration), reading or writing a column, appending, and
flushing after an append touch the missing pages and can be killed by SIGBUS; no library can
prevent that. ``len``, ``refresh()``, ``repr`` and ``close()`` never touch the mapping's pages.
"""

from __future__ import annotations

import contextlib
import mmap
import operator
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from mmlab.store import bulk, files, gather, remap
from mmlab.store.errors import (
    CorruptStoreError,
    ReadOnlyStoreError,
    StoreClosedError,
    StoreError,
    StoreReplacedError,
)
from mmlab.store.format import Header, check_fields, encode_slot, next_sequence
from mmlab.store.mapping import MappedFile, read_header_of

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Record", "RecordStore"]

_BATCH = 65536
_new_tuple = tuple.__new__


class Record(NamedTuple):
    """One record: its string and its field values (a copy, in field order)."""

    smiles: str
    values: np.ndarray


class RecordStore(MappedFile):
    """A file of records (a string plus named float64 fields), memory-mapped.

    Open one with ``RecordStore.create`` or ``RecordStore.open``; use it as a context manager.
    """

    def __init__(self, path: Path, mode: str, fd: int, header: Header) -> None:
        self._path = path
        self._mode = mode
        self._fd = fd
        self._followers = remap.Followers()
        # column() handed out a writable view: mode "c" (where the OS cannot say whether it
        # was written) and flush() (which syncs the data only when something can have changed)
        # The public ways to change the data, and why flush() sees each one:
        # - append, extend, extend_columns: they move the count, so flush() msyncs anyway;
        # - column() views (and arrays made from them): they set this flag, for good;
        # - from_columns: writes and fsyncs its own new file before this store exists;
        # - to_arrow() buffers are read-only, and growth (_reserve) copies only committed
        #   or counted data, which the count or this flag already covers.
        # A new way to write the mapped data without moving the count MUST set this flag;
        # tests/test_store_durable.py writes through every path and checks flush() syncs.
        self._may_have_written = False
        self._closed = True  # until attached: a failed open must not be closed again by __del__
        try:
            self._attach(header)
        except BaseException:
            if hasattr(self, "_offsets"):  # mapped, then found damage: unmap now, not at GC
                self._detach()
            raise
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
        """Create an empty store for records with these float64 fields; open it read-write.

        ``overwrite=True`` replaces an existing store unless a writer has it open
        (``StoreLockedError``). Of several processes creating one path at once, exactly one
        wins; without ``overwrite`` the others get ``FileExistsError``.
        """
        fields = check_fields(fields)
        layout = bulk.new_layout(fields, capacity, heap_capacity, None)
        return cls._attach_new(path, bulk.new_file(path, layout, fields, None, overwrite))

    @classmethod
    def from_columns(
        cls,
        path: str | os.PathLike[str],
        smiles: Sequence[str] | np.ndarray | bulk.ArrowLike,
        values: np.ndarray | Mapping[str, np.ndarray],
        fields: Sequence[str] | None = None,
        *,
        capacity: int | None = None,
        heap_capacity: int | None = None,
        overwrite: bool = False,
    ) -> RecordStore:
        """Create a store holding these records, given as columns; open it read-write.

        The fast way to build a store from columns: each string is encoded once and the
        numbers are copied with no Python step per record. ``smiles``: a sequence of ``str``, a 1-D
        numpy array of them, or an Arrow string array (anything with ``to_pylist()``).
        ``values``: an ``(n, len(fields))`` array, or a mapping field -> 1-D array of ``n``
        numbers (``fields`` then defaults to its keys). NaN and -0.0 are kept bit for bit.

        The file is written whole under a temporary name, then put at ``path`` (``overwrite``
        as in ``create``). ``capacity`` defaults to the records given, the heap to room for
        them or for ``capacity`` records as in ``create``; appending past either grows it.
        """
        fields = check_fields(bulk.fields_of(values, fields))
        data = bulk.columns(smiles, values, fields)
        layout = bulk.new_layout(fields, capacity, heap_capacity, data)
        return cls._attach_new(path, bulk.new_file(path, layout, fields, data, overwrite))

    @classmethod
    def _attach_new(cls, path: str | os.PathLike[str], fd: int) -> RecordStore:
        path = Path(path).absolute()
        try:
            return cls(path, "r+", fd, read_header_of(fd, path))
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str], mode: str = "r") -> RecordStore:
        """Open a store: ``"r"`` read-only, ``"r+"`` read-write, ``"c"`` copy-on-write."""
        if mode not in ("r", "r+", "c"):
            raise ValueError(f"mode must be 'r', 'r+' or 'c', got {mode!r}")
        path = Path(path).absolute()
        while True:
            fd = files.open_regular(path, writable=mode == "r+")
            try:
                if mode != "r+":
                    break
                if not files.try_lock(fd):
                    raise files.locked_error(path)
                # The writer may have grown the store into a new file while we waited.
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        try:
            header = read_header_of(fd, path)
            if mode == "r+":
                next_sequence(header.sequence)  # a writer must be able to commit
                files.reserve(fd, header.layout.file_size, path, fresh=False)
                files.remove_stale_temps(path)
            return cls(path, mode, fd, header)
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
            self._followers.forget()
            if self._mode == "r+":
                files.unlock(self._fd)
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

    # -- reading --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self._path} is closed")

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
        # The random-get hot path: _index, _smiles_at and _record inlined, as each call
        # costs about a tenth of a get. Keep the checks in step with those methods.
        if index.__class__ is not int:
            if isinstance(index, slice):
                return [self._record(i) for i in range(*index.indices(self._count))]
            index = operator.index(index)
        n = self._count
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(f"record index {index} out of range for a store of {n} records")
        offsets = self._offsets_fast  # a memoryview of Python ints (little-endian machines)
        if offsets is None:
            start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        else:
            start, end = offsets[i], offsets[i + 1]
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

    def take(self, indices: Iterable[int] | np.ndarray) -> tuple[list[str], np.ndarray]:
        """Many records at once: their strings, and their values as an ``(n, fields)`` array.

        ``indices`` is any sequence or array of ints (negative ones count from the end, as in
        ``store[i]``; an index out of range is an ``IndexError`` naming it). The same records
        as ``[store[i] for i in indices]``, several times faster: the values are gathered by
        one numpy operation, the string offsets by another, and each string is one slice of
        the heap. This is what a DataLoader's batch should use.
        """
        self._check_open()
        rows = gather.positions(indices, self._count)
        strings = gather.strings_at(self._offsets, self._heap, self._mm, self._heap_base, rows)
        if strings is None:  # a bad offset or bad UTF-8: find the record, and say which
            for i in rows.tolist():
                self._smiles_at(i)
            raise CorruptStoreError(f"{self._path}: string offsets changed while being read")
        return strings, self._rows[rows]

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
        if self._mode != "r":
            self._may_have_written = True  # from now on, every flush must msync
        return self._matrix[k, : self._count]

    def to_arrow(self) -> pa.Table:
        """The records as a ``pyarrow.Table`` over the mapped file, with no copy.

        Column ``smiles`` (``large_string``: the offsets and heap as they lie) then one
        float64 column per field (the field's section). A snapshot of ``len(self)`` records
        that sees later in-place changes and keeps the mapping alive after ``close()``
        (``mmlab.store.arrow``). Needs pyarrow (``pip install mmlab[arrow]``).
        """
        self._check_open()
        from mmlab.store import arrow

        n = self._count
        columns = self._matrix[:, :n]
        return arrow.table(self._offsets[: n + 1], self._heap, columns, self._fields, self._path)

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> Any:
        """The Arrow PyCapsule stream of ``to_arrow()``: ``pa.table(store)``,
        ``polars.DataFrame(store)`` and DuckDB read the store in place."""
        return self.to_arrow().__arrow_c_stream__(requested_schema)

    @classmethod
    def from_arrow(
        cls,
        path: str | os.PathLike[str],
        source: Any,
        *,
        string_column: str | None = None,
        overwrite: bool = False,
    ) -> RecordStore:
        """Create a store from an Arrow table, reader, ``__arrow_c_stream__`` object, or a
        path to an Arrow IPC file or stream, a Parquet file or directory of shards.

        The column ``smiles`` (or ``string_column``, or the only string column) gives the
        strings; every other column must hold numbers, stored as float64 fields. Nulls are
        refused (fill them with NaN first). Built by ``from_columns``; opened read-write.
        """
        from mmlab.store import arrow

        smiles, values = arrow.to_columns(source, string_column)
        return cls.from_columns(path, smiles, values, list(values), overwrite=overwrite)

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
                self._append_columns(bulk.from_records(batch, self._fields, added))
                added += len(batch)
        except BaseException:
            # Data past the count is invisible: forgetting it undoes the earlier batches.
            self._count, self._heap_used = count, heap_used
            raise
        return added

    def extend_columns(
        self,
        smiles: Sequence[str] | np.ndarray | bulk.ArrowLike,
        values: np.ndarray | Mapping[str, np.ndarray],
    ) -> int:
        """Add many records given as columns; returns how many were added.

        ``smiles`` and ``values`` as in ``from_columns``; a mapping must name exactly this
        store's fields. Much faster than ``extend`` for data held as columns: the strings are
        encoded once, the numbers copied with no Python step per record. The file grows at
        most once.
        All or nothing, and like ``extend`` the records are published by the next
        ``flush()`` (or ``close()``): a writer killed before then leaves its last flush.
        """
        self._check_writable()
        data = bulk.columns(smiles, values, self._fields)
        self._append_columns(data)
        return data.count

    def _append_columns(self, data: bulk.Columns) -> None:
        n, heap_needed = data.count, len(data.heap)
        if not n:
            return
        self._reserve(self._count + n, self._heap_used + heap_needed)
        # Data first; the header count that publishes it is written only by flush().
        bulk.write(self._offsets, self._heap, self._matrix, self._count, self._heap_used, data)
        self._count, self._heap_used = self._count + n, self._heap_used + heap_needed

    def flush(self) -> None:
        """Make appended records and in-place changes durable, then publish the new count."""
        self._check_open()
        if self._mode != "r+":
            return
        if self._count == self._committed:
            # Nothing to publish. Only a column() view can have changed the mapped data since
            # the last flush (appends change the count): without one, there is nothing to sync
            # (from_columns has synced its new file, whose store closes in microseconds).
            if self._may_have_written:
                self._mm.flush()
            return
        self._mm.flush()
        self._sequence = next_sequence(self._sequence)
        slot = encode_slot(self._layout, self._fields, self._sequence, self._count)
        at = (self._sequence % 2) * self._layout.slot_size
        self._mm[at : at + len(slot)] = slot
        self._mm.flush(0, 2 * self._layout.slot_size)
        self._committed = self._count

    def refresh(self) -> int:
        """Show records a writer has flushed since this reader opened; returns the new count.

        Views taken earlier follow the store into the bigger file a writer's growth made. If
        the path now holds a different store, ``StoreReplacedError`` is raised and this store
        stays as it was. In mode ``"c"`` this raises once you have changed anything, since
        your private pages would hide the writer's new data; open the store again instead.
        """
        self._check_open()
        if self._mode == "r+":
            return self._count
        if self._mode == "c" and self._private_changes():
            raise StoreError(
                f"{self._path} is open copy-on-write and you have changed it: refreshing would "
                "mix your private pages with the writer's new data. Open it again to see the "
                "writer's records (your changes are dropped)"
            )
        try:
            replaced = os.stat(self._path).st_ino != os.fstat(self._fd).st_ino
        except FileNotFoundError:
            raise StoreReplacedError(f"{self._path} no longer exists") from None
        if replaced:
            self._follow_replacement()
            return self._count
        header = read_header_of(self._fd, self._path, seen=self._sequence)
        if header.layout != self._layout or header.fields != self._fields:
            raise CorruptStoreError(f"{self._path} changed layout without being replaced")
        self._heap_used = self._checked_offset(header.count)
        self._count = self._committed = header.count
        self._sequence = header.sequence
        return self._count
