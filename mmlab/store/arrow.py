"""The Arrow bridge: a store already is an Arrow table, so it leaves with no copy.

A store's strings are an int64 offsets array (one more than the records) plus a byte heap of
UTF-8: exactly Arrow's ``large_string`` layout. Each field is one contiguous float64 column:
exactly Arrow's ``float64`` layout. Neither has nulls, so neither needs a validity bitmap.
So ``store.to_arrow()`` builds a ``pyarrow.Table`` whose buffers *are* the store's mapped
sections: Arrow allocates nothing, no page of the heap or the fields is read (the offsets are,
once, to check them), and pandas, Polars, DuckDB, Hugging Face ``datasets`` or anything else
that speaks Arrow reads the file through the page cache, adding no private memory. The
buffers hold the mapping (a buffer export), so the table stays readable after the store is
closed and deleted; the mapping is unmapped when the last table over it dies.

A table is a snapshot of the records the store holds when it is made (``len(store)``):

- records appended later, flushed or not, are not in it (its length is fixed), and the
  offsets and bytes it holds never change: a store only appends;
- a value changed in place later (``store.column("U0")[:] *= 2``) *is* seen by the table: it
  reads the same pages. Through the store's growth too: like ``column()`` views, the table's
  memory is re-pointed at the bigger file (``mmlab.store.remap``), until the store is closed;
- the table is read-only: Arrow never writes through it.

``__arrow_c_stream__`` (the Arrow PyCapsule interface) lets ``pa.table(store)``,
``polars.DataFrame(store)`` and DuckDB read a store in place with no glue code.

The way out to files (``export_arrow``, ``export_parquet``, ``mmlab export``) writes an
uncompressed Arrow IPC file (the *file* format: random access, memory-mapped zero-copy by
``pa.ipc.open_file(pa.memory_map(path))`` and ``polars.read_ipc``), an IPC *stream* (what
Hugging Face ``datasets.Dataset.from_file`` maps: it reads the stream format only), or a
directory of Parquet shards ``part-00000.parquet``, ... (``pyarrow.dataset``, Dask, Spark, Ray
Data). Output is written under a hidden temporary name beside ``out`` and renamed into place
once complete, so an error or Ctrl-C leaves nothing half-written.

The way back, ``RecordStore.from_arrow``, takes a table, a record batch reader, anything with
``__arrow_c_stream__`` (a Polars or pandas DataFrame, a DuckDB result, another store) or a
path to one of those files or directories. The string column is the one named ``smiles``, or
the only string column; every other column must hold numbers (integers or floats, stored as
float64). Nulls are refused, not turned into NaN: NaN is a value a field can hold (and keeps,
bit for bit, with -0.0 and the infinities), a null is a value that is missing, and a store
has no way to say "missing". Fill them first, e.g. ``pc.fill_null(column, float("nan"))``.

pyarrow (``pip install mmlab[arrow]``) is imported here only: ``import mmlab`` never loads it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

try:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.ipc
except ImportError as exc:  # pragma: no cover - exercised with pyarrow hidden
    raise ImportError(
        "the Arrow bridge needs pyarrow, which is not installed: pip install mmlab[arrow] "
        "(or pip install 'pyarrow>=15')"
    ) from exc

from mmlab.store.errors import CorruptStoreError
from mmlab.store.publish import (
    DEFAULT_SHARD_ROWS,
    check_out,
    fsync,
    natural_key,
    publish,
    remove,
    temp_name,
)

if TYPE_CHECKING:
    from mmlab.store.store import RecordStore

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "DEFAULT_SHARD_ROWS",
    "STRING_COLUMN",
    "export_arrow",
    "export_parquet",
    "read_table",
    "table",
    "to_columns",
]

STRING_COLUMN = "smiles"  # the string's name, as in Record.smiles and store.smiles(i)
DEFAULT_BATCH_ROWS = 65_536  # records per record batch written (and per progress step)
_CHECK_BLOCK = 1 << 18  # offsets checked per numpy step: little temporary memory

Progress = Callable[[int], object]  # called with the records just written


# -- the store as a table, no copy -----------------------------------------------------------


def _native(view: np.ndarray) -> np.ndarray:
    """A read-only view of ``view`` in this machine's byte order: the same memory here
    (a store is little-endian), a copy only on a big-endian machine."""
    native = np.ascontiguousarray(view, dtype=view.dtype.newbyteorder("="))
    native = native.view()
    native.flags.writeable = False
    return native


def _check_offsets(offsets: np.ndarray, heap_size: int, path: Path) -> None:
    """Make sure no reader of the table can be sent outside the heap by a damaged file.

    Reads the offsets (8 bytes a record), never the heap or the fields. UTF-8 is not checked
    here (``table.validate(full=True)`` does): every string a store writes was encoded by it.
    """
    if len(offsets) and not 0 <= offsets[0] <= offsets[-1] <= heap_size:
        raise CorruptStoreError(
            f"{path}: string offsets span [{offsets[0]}, {offsets[-1]}), outside the heap "
            f"({heap_size} bytes)"
        )
    for start in range(0, len(offsets) - 1, _CHECK_BLOCK):
        block = offsets[start : start + _CHECK_BLOCK + 1]
        falls = block[1:] < block[:-1]
        if falls.any():
            i = start + int(falls.argmax())
            raise CorruptStoreError(f"{path}: the string of record {i} ends before it starts")


def table(
    offsets: np.ndarray,
    heap: np.ndarray,
    columns: np.ndarray,
    fields: Sequence[str],
    path: Path,
) -> pa.Table:
    """A ``pyarrow.Table`` over a store's sections, sharing their memory.

    ``offsets``: the n + 1 int64 string offsets; ``heap``: the whole heap section (only its
    first ``offsets[n]`` bytes are used); ``columns``: a ``(fields, n)`` float64 view, one row
    per field. They are numpy views of the store's mapping, which pin it: each Arrow buffer
    holds its view, so the table keeps the mapping alive. ``RecordStore.to_arrow`` calls this.
    """
    if STRING_COLUMN in fields:
        raise ValueError(
            f"this store has a field named {STRING_COLUMN!r}, the name of the table's string "
            "column: the table would have two columns of that name"
        )
    n = len(offsets) - 1
    _check_offsets(offsets, len(heap), path)
    offsets = _native(offsets)
    used = int(offsets[-1])
    strings = pa.Array.from_buffers(
        pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(_native(heap[:used]))]
    )
    arrays = [strings]
    for column in columns:
        arrays.append(pa.Array.from_buffers(pa.float64(), n, [None, pa.py_buffer(_native(column))]))
    schema = pa.schema(
        [pa.field(STRING_COLUMN, pa.large_string(), nullable=False)]
        + [pa.field(name, pa.float64(), nullable=False) for name in fields]
    )
    return pa.Table.from_arrays(arrays, schema=schema)


# -- tables in -----------------------------------------------------------------------------


def _read_path(path: Path) -> pa.Table:
    if path.is_dir():
        import pyarrow.dataset as ds
        import pyarrow.parquet as pq

        # The dataset's discovery skips hidden and "_" files (_SUCCESS, temporary names);
        # reading the shards in name order keeps the records in order.
        shards = sorted(
            (Path(f) for f in ds.dataset(path, format="parquet").files), key=natural_key
        )
        if not shards:
            raise ValueError(f"{path} holds no Parquet files")
        parts = [pq.read_table(shard, partitioning=None) for shard in shards]
        for shard, part in zip(shards[1:], parts[1:], strict=True):
            if not part.schema.equals(parts[0].schema):
                raise ValueError(
                    f"{shard} has the schema {part.schema.to_string(show_schema_metadata=False)}"
                    f", unlike {shards[0].name}'s "
                    f"{parts[0].schema.to_string(show_schema_metadata=False)}"
                )
        return pa.concat_tables(parts)
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic[:4] == b"PAR1":
        import pyarrow.parquet as pq

        return pq.read_table(path, partitioning=None)
    # Closed on return: the table's buffers keep the mapped region alive themselves.
    with pa.memory_map(str(path)) as source:
        if magic == b"ARROW1":
            return pa.ipc.open_file(source).read_all()
        try:
            return pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            raise ValueError(
                f"{path} is neither an Arrow IPC file or stream nor a Parquet file or directory"
            ) from None


def read_table(source: Any) -> pa.Table:
    """Any Arrow source as one table: a table, a record batch or reader, anything with
    ``__arrow_c_stream__``, or a path to an Arrow IPC file or stream, a Parquet file or a
    directory of Parquet shards (read in name order)."""
    if isinstance(source, pa.Table):
        return source
    if isinstance(source, pa.RecordBatch):
        return pa.Table.from_batches([source])
    if isinstance(source, pa.RecordBatchReader):
        return source.read_all()
    if isinstance(source, str | os.PathLike):
        return _read_path(Path(source))
    if hasattr(source, "__arrow_c_stream__"):
        return pa.RecordBatchReader.from_stream(source).read_all()
    raise TypeError(
        "from_arrow takes a pyarrow Table, RecordBatch or RecordBatchReader, an object with "
        "__arrow_c_stream__ (a Polars or pandas DataFrame, ...), or a path to an Arrow IPC "
        f"or Parquet file or a directory of Parquet shards; got {type(source).__name__}"
    )


def _is_string(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(kind))
    )


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def _string_column(table: pa.Table, string_column: str | None) -> str:
    names = table.column_names
    if string_column is None and STRING_COLUMN in names:
        string_column = STRING_COLUMN
    if string_column is not None:
        if string_column not in names:
            raise KeyError(f"no column {string_column!r}; the columns are {names}")
        kind = table.schema.field(string_column).type
        if not _is_string(kind):
            raise ValueError(f"column {string_column!r} holds {kind}, not strings")
        return string_column
    strings = [name for name in names if _is_string(table.schema.field(name).type)]
    if len(strings) == 1:
        return strings[0]
    if not strings:
        raise ValueError(
            f"no string column among {names}: a store needs one string per record (a column "
            f"named {STRING_COLUMN!r}, or the only string column)"
        )
    raise ValueError(
        f"several string columns {strings} and none named {STRING_COLUMN!r}: say which one "
        "holds the records' strings (string_column=...); the others must go"
    )


def _no_nulls(column: pa.ChunkedArray, name: str) -> None:
    if column.null_count:
        first = pc.index(column.is_null(), True).as_py()
        raise ValueError(
            f"column {name!r} has {column.null_count:,} null(s), the first at row {first}: a "
            "store has no nulls. Fill them first, e.g. pyarrow.compute.fill_null(column, "
            "float('nan')), or drop those rows"
        )


def to_columns(
    source: Any, string_column: str | None = None
) -> tuple[list[str], dict[str, np.ndarray]]:
    """An Arrow source (as ``read_table`` takes) as ``from_columns`` takes it: the strings as a
    list, and a dict field -> float64 array of every other column, in the table's order."""
    data = read_table(source)
    names = data.column_names
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"column names must be unique; repeated: {duplicated}")
    key = _string_column(data, string_column)
    fields = [name for name in names if name != key]
    bad = [
        f"{name} ({data.schema.field(name).type})"
        for name in fields
        if not _is_number(data.schema.field(name).type)
    ]
    if bad:
        raise ValueError(
            f"a store holds one string column ({key!r}) and float64 fields; these columns are "
            f"not numbers: {', '.join(bad)}. Drop them (table.drop_columns) or convert them"
        )
    strings = data.column(key)
    _no_nulls(strings, key)
    values = {}
    for name in fields:
        column = data.column(name)
        _no_nulls(column, name)
        try:
            values[name] = column.cast(pa.float64()).to_numpy()
        except pa.ArrowInvalid as exc:
            raise ValueError(f"column {name!r} cannot be stored as float64: {exc}") from None
    return strings.to_pylist(), values


# -- files out -----------------------------------------------------------------------------


def _export(
    store: RecordStore | str | os.PathLike[str],
    out: str | os.PathLike[str],
    overwrite: bool,
    kind: str,
    write: Callable[[pa.Table, Path], None],
) -> Path:
    from mmlab.store.store import RecordStore

    out = Path(out).absolute()
    owned = not isinstance(store, RecordStore)
    opened = RecordStore.open(store) if owned else store
    try:
        check_out(out, overwrite, opened.path)
        snapshot = opened.to_arrow()
    finally:
        if owned:
            opened.close()  # the table keeps the mapping
    tmp = temp_name(out, kind)
    try:
        write(snapshot, tmp)
        publish(tmp, out, overwrite)
    except BaseException:  # Ctrl-C included: leave nothing half-written
        remove(tmp)
        raise
    return out


def export_arrow(
    store: RecordStore | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    stream: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write a store (or the store at a path) as one uncompressed Arrow IPC file at ``out``.

    The IPC *file* format by default: ``pa.ipc.open_file(pa.memory_map(out))`` and
    ``polars.read_ipc(out)`` map it with no copy. ``stream=True`` writes the IPC *stream*
    format, which Hugging Face ``datasets.Dataset.from_file(out)`` maps (it reads streams
    only) and ``pa.ipc.open_stream`` / ``polars.read_ipc_stream`` read. Records go in batches
    of ``batch_rows``; ``progress(k)`` is called after each batch of k records. An existing
    ``out`` is an error unless ``overwrite``. Returns ``out``, complete, or leaves nothing.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")

    def write(snapshot: pa.Table, tmp: Path) -> None:
        new = pa.ipc.new_stream if stream else pa.ipc.new_file
        with pa.OSFile(str(tmp), "wb") as sink, new(sink, snapshot.schema) as writer:
            for batch in snapshot.to_batches(max_chunksize=batch_rows):
                writer.write_batch(batch)
                if progress is not None:
                    progress(batch.num_rows)
        fsync(tmp)

    return _export(store, out, overwrite, "exporting", write)


def export_parquet(
    store: RecordStore | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    compression: str | None = "snappy",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write a store (or the store at a path) as a directory of Parquet shards at ``out``.

    ``part-00000.parquet``, ``part-00001.parquet``, ... of ``shard_rows`` records each (the
    last one fewer; an empty store gives one empty shard, which keeps the schema), each
    shard in row groups of at most ``batch_rows``: what ``pyarrow.dataset.dataset(out)``,
    ``dask.dataframe.read_parquet``, Spark and Ray Data read in parallel, a shard per task.
    Values are kept bit for bit (NaN, -0.0, infinities). ``progress`` and ``overwrite`` as in
    ``export_arrow``; replacing a directory is refused if it holds more than Parquet files.
    """
    import pyarrow.parquet as pq

    if shard_rows < 1 or batch_rows < 1:
        raise ValueError(
            f"shard_rows and batch_rows must be at least 1: {shard_rows}, {batch_rows}"
        )

    def write(snapshot: pa.Table, tmp: Path) -> None:
        n = snapshot.num_rows
        shards = max(1, -(-n // shard_rows))
        width = max(5, len(str(shards - 1)))
        tmp.mkdir()
        for k in range(shards):
            part = snapshot.slice(k * shard_rows, shard_rows)
            path = tmp / f"part-{k:0{width}d}.parquet"
            with pq.ParquetWriter(path, snapshot.schema, compression=compression) as writer:
                for batch in part.to_batches(max_chunksize=min(shard_rows, batch_rows)):
                    writer.write_batch(batch)
                    if progress is not None:
                        progress(batch.num_rows)
            fsync(path)
        fsync(tmp)

    return _export(store, out, overwrite, "exporting", write)
