"""Checking a distributed run's output: every value of the Parquet shards against the store.

``verify(out, store, field, factor)`` reads the shards with pyarrow (not Dask), one at a
time, and compares them with the store's zero-copy Arrow snapshot: ``field`` must be
``factor`` times the store's, every other field and the strings unchanged, bit for bit, in
order. ``mmlab.data.scale`` re-exports ``verify`` and ``Verification``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmlab.store.publish import natural_key

if TYPE_CHECKING:
    from mmlab.store.store import RecordStore

__all__ = ["Verification", "verify"]


@dataclass(repr=False)
class Verification:
    """What ``verify`` found: ``ok`` and, if not, the first problems found."""

    ok: bool
    records: int
    shards: int
    field: str
    factor: float
    other_fields: tuple[str, ...]
    problems: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        if self.ok:
            return (
                f"verified: {self.records:,} records in {self.shards:,} shard(s): "
                f"{self.field} = {self.factor:g} x the store's, bit for bit; smiles and "
                f"{len(self.other_fields)} other field(s) unchanged, in order"
            )
        return "verification FAILED: " + "; ".join(self.problems)

    __repr__ = __str__


def _shards(directory: Path) -> list[Path]:
    found = [
        p
        for p in Path(directory).iterdir()
        if p.suffix == ".parquet" and not p.name.startswith((".", "_")) and p.is_file()
    ]
    return sorted(found, key=natural_key)


def _same_bits(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Equal bit for bit, or both NaN (a NaN's payload may change across machines)."""
    got = np.ascontiguousarray(got, dtype=np.float64)
    want = np.ascontiguousarray(want, dtype=np.float64)
    same = got.view(np.uint64) == want.view(np.uint64)
    return same | (np.isnan(got) & np.isnan(want))


@contextlib.contextmanager
def _opened(store: RecordStore | str | os.PathLike[str]) -> Iterator[RecordStore]:
    from mmlab.store.store import RecordStore

    if isinstance(store, RecordStore):
        yield store
    else:
        with RecordStore.open(store) as opened:
            yield opened


def verify(
    out: str | os.PathLike[str],
    store: RecordStore | str | os.PathLike[str],
    field: str = "U0",
    factor: float = 2.0,
) -> Verification:
    """Check the Parquet shards in ``out`` against ``store`` (see ``_check``)."""
    return _check(out, store, field, factor)


def _check(
    out: str | os.PathLike[str],
    store: RecordStore | str | os.PathLike[str],
    field: str,
    factor: float,
) -> Verification:
    """Check the Parquet shards in ``out`` against ``store``, one shard at a time.

    ``field`` must equal ``factor`` times the store's, computed here in float64 (for a
    factor of 2 that is exact: a doubling never rounds); the strings and every other field
    must equal the store's, bit for bit (-0.0 stays -0.0, NaN stays NaN), in the store's
    order and column order. Reads the shards with pyarrow, not Dask.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    problems: list[str] = []
    with _opened(store) as opened:
        fields = opened.fields
        if field not in fields:
            raise KeyError(f"unknown field {field!r}; this store's fields are {list(fields)}")
        snapshot = opened.to_arrow()
        shards = _shards(Path(out))
        expected_columns = ["smiles", *fields]
        position = 0
        for shard in shards:
            part = pq.read_table(shard, partitioning=None)
            if part.column_names != expected_columns:
                problems.append(
                    f"{shard.name} has the columns {part.column_names}, not {expected_columns}"
                )
                break
            n = part.num_rows
            if position + n > len(opened):
                problems.append(f"the shards hold more than the store's {len(opened):,} records")
                break
            smiles = part.column("smiles").cast(pa.large_string())
            if not smiles.equals(snapshot.column("smiles").slice(position, n)):
                want = snapshot.column("smiles").slice(position, n).to_pylist()
                first = next(
                    i
                    for i, (a, b) in enumerate(zip(smiles.to_pylist(), want, strict=True))
                    if a != b
                )
                problems.append(f"record {position + first:,}: the SMILES differs")
            for name in fields:
                nulls = part.column(name).null_count
                if nulls:
                    problems.append(
                        f"{shard.name}: {name} holds {nulls:,} null(s) (missing values, as "
                        "pandas writes a NaN); the store holds none"
                    )
                got = part.column(name).to_numpy(zero_copy_only=False)
                # through the zero-copy snapshot, not opened.column(): a writable view
                # would mark the store as written (every later flush() would msync)
                want = snapshot.column(name).slice(position, n).to_numpy()
                if name == field:
                    with np.errstate(over="ignore", invalid="ignore"):  # inf, as on workers
                        want = np.multiply(want, factor)
                same = _same_bits(got, want)
                if not same.all():
                    first = int(np.argmin(same))
                    problems.append(
                        f"record {position + first:,}: {name} = {float(got[first])!r}, "
                        f"expected {float(want[first])!r}"
                        + (f" ({factor:g} x the store's)" if name == field else " (unchanged)")
                    )
            position += n
            if len(problems) >= 5:
                break
        if not problems and position != len(opened):
            problems.append(f"the shards hold {position:,} records, the store {len(opened):,}")
        others = tuple(name for name in fields if name != field)
    return Verification(
        ok=not problems,
        records=position,
        shards=len(shards),
        field=field,
        factor=factor,
        other_fields=others,
        problems=problems,
    )
