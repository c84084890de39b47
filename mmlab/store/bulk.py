"""Records by the column: building and appending many records per numpy operation.

Data usually reaches a store as columns already: a list of SMILES beside a 2-D array, a
pandas or Arrow table. The store's own layout is columns too (an int64 offsets array, a byte
heap, one float64 array per field), so columns go in and come out without a Python step per
number:

- ``columns`` checks strings plus values (a 2-D array, or a mapping field -> 1-D array) and
  turns them into ``Columns``: every string encoded once and concatenated, the end offsets
  from one cumsum, and the values field by field (a transposed view of a 2-D input, or the
  mapping's arrays: no copy where they are float64). ``from_records`` does the same for the
  ``(smiles, values)`` pairs ``extend`` takes.
- ``write`` copies ``Columns`` into a store's sections: the heap in one copy, the offsets in
  one, and the values in one pass (in blocks of records that stay in cache). It writes data
  only; the header count that publishes it is the caller's (``flush()``), and ``new_file``
  writes a whole new store file, published at its path only once it is complete.

Gathering many records (``take``) is ``mmlab.store.gather``'s.
"""

from __future__ import annotations

import errno
import operator
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from mmlab.store import files
from mmlab.store.format import ALIGNMENT, Layout, encode_slot, slot_size_for

__all__ = [
    "ArrowLike",
    "Columns",
    "columns",
    "fields_of",
    "from_records",
    "new_file",
    "new_layout",
    "write",
]

_DEFAULT_CAPACITY = 1024
_HEAP_BYTES_PER_RECORD = 32  # initial heap guess; QM9 SMILES average about 15 bytes
_TRANSPOSE_BLOCK = 2048  # records per block when copying (n, fields) values field by field


class ArrowLike(Protocol):
    """A column that lists itself, as an Arrow array does (pyarrow is not imported here)."""

    def to_pylist(self) -> list: ...


class Columns(NamedTuple):
    """Records as a store writes them: string bytes, their end offsets, one array per field."""

    heap: bytes  # every string's UTF-8 bytes, one after the other
    ends: np.ndarray  # int64: string k is heap[ends[k - 1] : ends[k]] (from 0 for k = 0)
    # float64, field by field: a (fields, n) array (often the transposed view of an (n, fields)
    # one), or a tuple of one 1-D array of n values per field
    values: np.ndarray | tuple[np.ndarray, ...]

    @property
    def count(self) -> int:
        """How many records these columns hold."""
        return len(self.ends)


# -- columns in ----------------------------------------------------------------------------


def _has_keys(values: object) -> bool:
    # A dict, a pandas DataFrame, anything with keys() and [name]: a mapping of columns.
    return callable(getattr(values, "keys", None)) and not isinstance(values, np.ndarray)


def fields_of(values: Any, fields: Sequence[str] | None) -> Sequence[str]:
    """The field names for ``from_columns``: ``fields``, else the keys of a mapping."""
    if fields is not None:
        return fields
    if _has_keys(values):
        return list(values.keys())
    raise TypeError("a 2-D values array has no field names: pass fields=[...], one per column")


def _as_strings(smiles: Any) -> list:
    if isinstance(smiles, str | bytes):
        raise TypeError("smiles must be a sequence of strings, not one string")
    if hasattr(smiles, "to_pylist"):  # an Arrow array or chunked array, without importing pyarrow
        return smiles.to_pylist()
    if isinstance(smiles, np.ndarray):
        if smiles.ndim != 1:
            raise ValueError(f"smiles must be one-dimensional, got shape {smiles.shape}")
        return smiles.tolist()
    return smiles if isinstance(smiles, list) else list(smiles)


def _encode(strings: list) -> tuple[bytes, np.ndarray]:
    """All strings' UTF-8 bytes joined, and where each one ends."""
    try:
        joined = "".join(strings)
    except TypeError:
        k, bad = next((k, s) for k, s in enumerate(strings) if not isinstance(s, str))
        raise TypeError(f"string {k} must be str, got {bad!r:.80}") from None
    if strings and "\x00" not in joined:
        # UTF-8 has a zero byte only for U+0000: with none in the strings, a NUL put between
        # them marks where each one ends, found in one numpy pass (no len() per string).
        try:
            marked = np.frombuffer("\x00".join(strings).encode(), dtype=np.uint8)
        except UnicodeEncodeError:
            pass  # a lone surrogate: raised below with the message append gives
        else:
            cuts = np.flatnonzero(marked == 0)
            ends = np.empty(len(strings), dtype=np.int64)
            ends[:-1] = cuts - np.arange(len(cuts))
            ends[-1] = len(marked) - len(cuts)
            return joined.encode(), ends
    # A lone surrogate raises UnicodeEncodeError here, as it does in append.
    return _joined([s.encode("utf-8") for s in strings])


def encode_strings(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The strings in a store's layout: int64 offsets (n + 1, from 0) and the uint8 heap of
    their UTF-8 bytes. Also what other formats built from the same columns use."""
    joined, ends = _encode(list(strings))
    offsets = np.zeros(len(ends) + 1, dtype=np.int64)
    offsets[1:] = ends
    return offsets, np.frombuffer(joined, dtype=np.uint8)


def _joined(encoded: list[bytes]) -> tuple[bytes, np.ndarray]:
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    return b"".join(encoded), np.cumsum(lengths)


def _float_column(column: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(column, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"field {name!r}: values must be numbers ({exc})") from None


def _value_columns(
    values: Any, fields: tuple[str, ...], n: int
) -> np.ndarray | tuple[np.ndarray, ...]:
    width = len(fields)
    if _has_keys(values):
        names = list(values.keys())
        unknown = [name for name in names if name not in fields]
        missing = [name for name in fields if name not in names]
        if unknown or missing:
            problem = f"unknown field(s) {unknown}" if unknown else f"no values for {missing}"
            raise KeyError(f"{problem}; the values must name exactly the fields {list(fields)}")
        result = []
        for name in fields:
            column = _float_column(values[name], name)
            if column.shape != (n,):
                raise ValueError(
                    f"field {name!r} has values of shape {column.shape}; "
                    f"it needs {n} values, one per string"
                )
            result.append(column)
        return tuple(result)
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"values must be numbers ({exc})") from None
    if n == 0 and array.size == 0:
        array = array.reshape(0, width)
    if array.shape != (n, width):
        raise ValueError(
            f"values have shape {array.shape}, not ({n}, {width}): one row per string "
            f"({n} strings), one column per field {list(fields)}"
        )
    return array.T


def columns(smiles: Any, values: Any, fields: tuple[str, ...]) -> Columns:
    """Check and convert column-wise input; no Python work per number.

    ``smiles``: a sequence of ``str``, a 1-D numpy array of them, or anything with
    ``to_pylist()`` (an Arrow string array). ``values``: an ``(n, len(fields))`` array, or a
    mapping naming exactly ``fields``, each a 1-D array of ``n`` numbers.
    """
    strings = _as_strings(smiles)
    value_columns = _value_columns(values, fields, len(strings))
    heap, ends = _encode(strings)
    return Columns(heap, ends, value_columns)


def from_records(batch: list, fields: tuple[str, ...], first_index: int) -> Columns:
    """``(smiles, values)`` pairs as ``Columns``; errors name the record at fault."""
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
    matrix = _values_matrix([values for _, values in batch], fields, first_index)
    heap, ends = _joined(encoded)
    return Columns(heap, ends, matrix.T)


def _values_matrix(rows: list, fields: tuple[str, ...], first_index: int) -> np.ndarray:
    width = len(fields)
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
            raise ValueError(f"record {first_index + k}: values must be numbers ({exc})") from None
        if row.shape != (width,):
            raise ValueError(
                f"record {first_index + k} has {row.size} values; "
                f"this store has {width} fields {list(fields)}"
            )
        checked.append(row)
    return np.stack(checked) if checked else np.empty((0, width))


# -- writing ---------------------------------------------------------------------------------


def write(
    offsets: np.ndarray,
    heap: np.ndarray,
    matrix: np.ndarray,
    start: int,
    heap_start: int,
    data: Columns,
) -> None:
    """Copy ``data`` into the sections after record ``start`` and heap byte ``heap_start``.

    The sections must have room (the caller reserved it); one copy per section and per field.
    """
    n = data.count
    heap[heap_start : heap_start + len(data.heap)] = np.frombuffer(data.heap, dtype=np.uint8)
    offsets[start + 1 : start + n + 1] = heap_start + data.ends
    _copy_values(matrix[:, start : start + n], data.values)


def _copy_values(dest: np.ndarray, values: np.ndarray | tuple[np.ndarray, ...]) -> None:
    """``dest[k] = values[k]`` for each field k of a ``(fields, n)`` destination.

    The values of an (n, fields) array lie across the rows a field needs, so they are copied
    in blocks of records that stay in cache: 4x faster than one transposing copy.
    """
    if isinstance(values, np.ndarray):
        n = values.shape[1]
        for a in range(0, n, _TRANSPOSE_BLOCK):
            dest[:, a : a + _TRANSPOSE_BLOCK] = values[:, a : a + _TRANSPOSE_BLOCK]
    else:
        for k, column in enumerate(values):
            dest[k] = column


def new_layout(
    fields: tuple[str, ...],
    capacity: int | None,
    heap_capacity: int | None,
    data: Columns | None,
) -> Layout:
    """The layout of a new store for ``fields``, to hold ``data`` if given.

    ``capacity`` defaults to the records of ``data``, or 1,024 without; the heap to room for
    the strings of ``data`` or for ``capacity`` records of a guessed length, the larger.
    """
    count, heap_bytes = (0, 0) if data is None else (data.count, len(data.heap))
    if capacity is None:
        capacity = _DEFAULT_CAPACITY if data is None else max(count, 1)
    capacity = operator.index(capacity)
    if capacity < max(count, 1):
        raise ValueError(f"capacity must be at least {max(count, 1)}, got {capacity}")
    if heap_capacity is None:
        heap_capacity = max(heap_bytes, capacity * _HEAP_BYTES_PER_RECORD)
    elif heap_capacity < heap_bytes:
        raise ValueError(f"heap_capacity {heap_capacity} is less than the {heap_bytes} bytes given")
    return Layout(slot_size_for(fields), ALIGNMENT, capacity, heap_capacity, len(fields))


def new_file(
    path: str | os.PathLike[str],
    layout: Layout,
    fields: tuple[str, ...],
    data: Columns | None,
    overwrite: bool,
) -> int:
    """Write a new store file holding ``data`` (or nothing) and put it at ``path``.

    Returns its descriptor, locked. The file is built under a unique temporary name and
    published whole, durable first (fsync): ``path`` never holds half a store. So its header
    may count the records before they are written: no one opens the file until it is done.
    """
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    count = 0 if data is None else data.count
    tmp, fd = files.new_temp(path, "creating")
    try:
        # As mapping.write_new_file does, but with pwrite: mapping the new file only to write
        # its two header slots costs about 2 ms for QM9's 25 MB, pwrite a few µs.
        files.reserve(fd, layout.file_size, path, fresh=True)
        slot = encode_slot(layout, fields, 1, count)
        _pwrite_all(fd, slot + slot, 0)
        if data is not None:
            _write_new(fd, layout, data)
        os.fsync(fd)
        files.publish(tmp, path, overwrite=overwrite)
        files.fsync_dir(path)
        files.remove_stale_temps(path)
        return fd
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise


def _write_new(fd: int, layout: Layout, data: Columns) -> None:
    """Write ``data`` as the first records of a new file (whose offsets[0] is 0 already).

    With ``pwrite``, not through a mapping: a new file's pages would each fault on their
    first write, which costs more than the copy itself.
    """
    _pwrite_all(fd, np.asarray(data.ends, dtype="<i8"), layout.offsets_offset + 8)
    _pwrite_all(fd, data.heap, layout.heap_offset)
    if isinstance(data.values, np.ndarray) and not data.values.flags.c_contiguous:
        fields = np.empty(data.values.shape, dtype="<f8")
        _copy_values(fields, data.values)
    else:
        fields = data.values
    for k, column in enumerate(fields):
        column = np.ascontiguousarray(column, dtype="<f8")
        _pwrite_all(fd, column, layout.first_column_offset + k * layout.column_stride)


def _pwrite_all(fd: int, data: bytes | np.ndarray, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        if written == 0:  # never for a regular file, but a 0 would loop forever
            raise OSError(errno.EIO, f"pwrite wrote nothing at offset {offset}")
        view, offset = view[written:], offset + written
