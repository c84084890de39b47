"""How a store holds its file: one mapping, the numpy views over it, and moves to a new file.

A store maps its whole file once and reads and writes through views of that mapping. When the
file is replaced by a bigger copy (the writer's growth, or a reader's ``refresh()`` after one),
the store maps the new file, and every old mapping that a user's view still holds is re-pointed
at the new file's sections (``remap.Followers``), so those views stay live. Views can follow
only a true growth, with page-aligned sections: anything else raises a clear error and leaves
the store as it was.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from mmlab.store import files, remap
from mmlab.store.errors import (
    CorruptStoreError,
    StoreError,
    StoreReplacedError,
    TruncatedStoreError,
)
from mmlab.store.format import ALIGNMENT, Header, Layout, encode_slot, next_sequence, read_header

__all__ = ["MappedFile", "mapped_array", "read_header_of", "write_new_file"]

_ACCESS = {"r": mmap.ACCESS_READ, "r+": mmap.ACCESS_WRITE, "c": mmap.ACCESS_COPY}
_FAST_OFFSETS = sys.byteorder == "little"
_HEADER_READS = 50  # attempts to read a header that a writer is committing meanwhile
_GROWTH = 2  # each growth doubles the capacity that ran out


def _read_and_keep(fd: int, reads: list[bytes], at: int, n: int) -> bytes:
    reads.append(files.pread(fd, n, at))
    return reads[-1]


def read_header_of(fd: int, path: Path, *, seen: int = 0) -> Header:
    """Read and check a store file's current header with pread, before anything is mapped.

    A live writer may commit between our reads of the two slots, or while we read one, so a
    header that fails its checksum, or is older than the commit ``seen`` already, is read
    again. Only the same bytes read twice make it an error: then it is damage, not a race.
    """
    size = os.fstat(fd).st_size
    last: list[bytes] | None = None
    for attempt in range(_HEADER_READS):
        reads: list[bytes] = []
        try:
            header = read_header(partial(_read_and_keep, fd, reads), size, path)
            if header.sequence >= seen:
                return header
            problem: StoreError = CorruptStoreError(
                f"{path}: its newest commit went back from {seen} to {header.sequence}"
            )
        except TruncatedStoreError:
            raise  # a writer never changes the size of the file it writes
        except CorruptStoreError as exc:
            problem = exc
        if reads == last:
            break
        last = reads
        time.sleep(attempt * 1e-4)  # let a writer that was descheduled mid-commit finish
    raise problem


def mapped_array(
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


def write_new_file(
    fd: int, store: Path, layout: Layout, fields: tuple[str, ...], sequence: int, count: int
) -> mmap.mmap:
    """Reserve a new file's space, map it and write both header slots; the caller closes it.

    ``store`` is the path the file is for, named in a ``NoSpaceError``.
    """
    files.reserve(fd, layout.file_size, store, fresh=True)
    mm = mmap.mmap(fd, layout.file_size, access=mmap.ACCESS_WRITE)
    slot = encode_slot(layout, fields, sequence, count)
    mm[: len(slot)] = slot
    mm[len(slot) : 2 * len(slot)] = slot
    return mm


class MappedFile:
    """The mapping side of ``RecordStore``: its file, mapping, views and moves between files."""

    _path: Path
    _mode: str
    _fd: int
    _count: int
    _heap_used: int

    def _attach(self, header: Header) -> None:
        """Take the header's state, map the file and build the views the accessors use."""
        self._layout = header.layout
        self._fields = header.fields
        self._field_index = {name: k for k, name in enumerate(header.fields)}
        self._sequence = header.sequence
        self._count = self._committed = header.count
        self._mm = mmap.mmap(self._fd, header.layout.file_size, access=_ACCESS[self._mode])
        self._build_views()
        self._heap_used = self._checked_offset(header.count)

    def _build_views(self) -> None:
        layout, mm = self._layout, self._mm
        self._offsets = mapped_array(mm, "<i8", layout.offsets_offset, (layout.capacity + 1,))
        self._matrix = mapped_array(
            mm,
            "<f8",
            layout.first_column_offset,
            (layout.n_fields, layout.capacity),
            layout.column_stride,
        )
        self._heap = mapped_array(mm, "u1", layout.heap_offset, (layout.heap_capacity,))
        self._rows = self._matrix.T  # record i's values: indexing a row beats a column slice
        self._heap_base, self._heap_capacity = layout.heap_offset, layout.heap_capacity
        # A memoryview indexes faster than numpy for one scalar: the random-get hot path.
        self._offsets_fast = self._offsets.data.cast("B").cast("q") if _FAST_OFFSETS else None

    def _detach(self) -> mmap.mmap | None:
        """Drop our own views and unmap; returns the mapping if user views keep it alive."""
        if self._offsets_fast is not None:
            self._offsets_fast.release()
        old = self._mm
        del self._offsets, self._matrix, self._rows, self._heap, self._offsets_fast, self._mm
        try:
            old.close()
        except BufferError:
            return old
        return None

    def _checked_offset(self, i: int) -> int:
        # pread, not the mapping: opening a store touches none of its mapped pages.
        raw = files.pread(self._fd, 8, self._layout.offsets_offset + 8 * i)
        offset = int.from_bytes(raw, "little", signed=True)
        if len(raw) != 8 or not 0 <= offset <= self._layout.heap_capacity:
            raise CorruptStoreError(
                f"{self._path}: string offset {offset} of record {i} lies outside the heap "
                f"({self._layout.heap_capacity} bytes)"
            )
        return offset

    # -- moving to another file -----------------------------------------------------------

    def _views_held(self) -> bool:
        """Whether any user view holds one of our mappings. Renews the current mapping."""
        if self._followers.alive():
            return True
        old = self._detach()
        if old is not None:
            self._mm = old
        else:
            self._mm = mmap.mmap(self._fd, self._layout.file_size, access=_ACCESS[self._mode])
        self._build_views()
        return old is not None

    def _check_views_can_follow(self, new: Layout) -> None:
        """Raise, changing nothing, if views held now could not follow into ``new``."""
        layouts = [self._layout] + [layout for _, layout in self._followers.alive()]
        page = mmap.PAGESIZE
        if remap.supported() and all(
            layout.alignment % page == 0 and new.holds(layout) for layout in layouts
        ):
            return
        if self._views_held():
            why = (
                "views cannot be re-pointed on this platform"
                if not remap.supported()
                else f"its sections are aligned to {min(x.alignment for x in layouts):,} "
                f"bytes, less than this machine's {page:,}-byte pages"
            )
            raise StoreError(
                f"{self._path}: the store must move to a new file, but the views you hold "
                f"(from column()) could not follow it: {why}. Release them (del) and retry; "
                "the move re-aligns the store so that views follow it from then on"
            )

    def _switch(self, fd: int, header: Header | None = None) -> None:
        """Map ``fd`` (a bigger copy of the store, whose header is ``header`` or is read from
        it) and re-point every held view at it.

        If that fails the store is closed: the file on disk is complete, reopen it.
        """
        old_layout = self._layout
        old = self._detach()
        if old is not None:
            self._followers.retire(old, old_layout)
        self._fd = fd
        try:
            self._attach(header or read_header_of(fd, self._path))
            self._followers.repoint(
                fd, self._layout, writable=self._mode != "r", private=self._mode == "c"
            )
        except BaseException as exc:
            self._closed = True
            if hasattr(self, "_offsets"):  # mapped: the mapping holds a descriptor of its own
                self._detach()
            self._followers.forget()
            os.close(fd)
            raise StoreError(
                f"{self._path} moved to a bigger file that could not be mapped again ({exc}); "
                "everything flushed is in the file: open the store again"
            ) from exc

    def _replacement(self, header: Header) -> str | None:
        """Why the store now at our path is not a growth of ours (None if it is one)."""
        old, new = self._layout, header.layout
        if header.fields != self._fields:
            return f"its fields are {list(header.fields)}, not {list(self._fields)}"
        if new.slot_size != old.slot_size or not new.holds(old):
            return f"it is not a bigger copy (capacity {new.capacity:,}, was {old.capacity:,})"
        if header.count < self._committed:
            return f"it holds {header.count:,} records, fewer than the {self._committed:,} seen"
        return None

    def _private_changes(self) -> bool:
        """Whether a copy-on-write store has changes of its own (conservative if unknown)."""
        if self._count != self._committed:
            return True
        sizes = [
            remap.private_bytes(remap.address_of(self._mm), len(self._mm)),
            self._followers.private_bytes(),
        ]
        if None in sizes:
            return self._may_have_written
        return sum(sizes) > 0

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
        """Copy the store into a bigger file, rename it into place and remap.

        The new file's header publishes only what ``flush()`` committed; the records appended
        since are copied too, and stay the writer's own until its next flush.
        """
        old = self._layout
        alignment = max(old.alignment, ALIGNMENT)
        layout = Layout(old.slot_size, alignment, capacity, heap_capacity, old.n_fields)
        self._check_views_can_follow(layout)
        n, used = self._count, self._heap_used
        tmp, fd = files.new_temp(self._path, "growing")
        try:
            sequence = next_sequence(self._sequence)
            mm = write_new_file(fd, self._path, layout, self._fields, sequence, self._committed)
            try:
                mapped_array(mm, "<i8", layout.offsets_offset, (n + 1,))[:] = self._offsets[: n + 1]
                mapped_array(mm, "u1", layout.heap_offset, (used,))[:] = self._heap[:used]
                mapped_array(
                    mm, "<f8", layout.first_column_offset, (old.n_fields, n), layout.column_stride
                )[:] = self._matrix[:, :n]
                mm.flush()
            finally:
                with contextlib.suppress(BufferError):  # never hide the error that got us here
                    mm.close()
            os.fsync(fd)
            os.replace(tmp, self._path)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        old_fd = self._fd
        try:
            self._switch(fd)
            self._count, self._heap_used = n, used
        finally:
            files.unlock(old_fd)
            os.close(old_fd)
        files.fsync_dir(self._path)

    def _follow_replacement(self) -> None:
        fd = files.open_regular(self._path, writable=False)
        try:
            header = read_header_of(fd, self._path)
            why = self._replacement(header)
            if why is not None:
                raise StoreReplacedError(
                    f"{self._path} was replaced by a different store ({why}); "
                    "open it again to read the new one"
                )
            self._check_views_can_follow(header.layout)
        except BaseException:
            os.close(fd)
            raise
        old_fd = self._fd
        try:
            self._switch(fd, header)
        finally:
            os.close(old_fd)
