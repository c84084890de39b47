"""flush() makes every public write durable: no dirty page of the file is left after it.

``RecordStore.flush()`` skips the msync when the count has not moved and no writable
``column()`` view was handed out (``_may_have_written``). This test writes through every
public write path, then flushes, and asks the kernel (``cachestat``) whether any page of the
file is still dirty. Where cachestat is missing or the file system keeps pages dirty after
an fsync (tmpfs), it skips and says why.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import FIELDS, smiles_of, value_row

from mmlab import RecordStore
from mmlab.instruments import cachestat


def _dirty(path) -> int:
    return cachestat.cache_stats(path).dirty


@pytest.fixture
def durable_dir(tmp_path):
    probe = tmp_path / "probe"
    probe.write_bytes(b"x" * 65536)
    try:
        fd = os.open(probe, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if _dirty(probe) != 0:
            pytest.skip(f"{tmp_path}'s file system keeps pages dirty after fsync (tmpfs?)")
    except (cachestat.UnsupportedPlatformError, cachestat.PageCacheHiddenError) as exc:
        pytest.skip(f"cachestat unavailable: {exc}")
    except OSError as exc:
        pytest.skip(f"cachestat unavailable: {exc}")
    return tmp_path


def _append(store):
    store.append(smiles_of(0), value_row(0))


def _extend(store):
    store.extend((smiles_of(i), value_row(i)) for i in range(5))


def _extend_columns(store):
    store.extend_columns(["C", "CC", "CCC"], np.arange(9.0).reshape(3, 3))


def _column(store):
    store.column("U0")[:] *= 2  # no count change: the flag must make flush() msync


def _column_after_flush(store):
    view = store.column("mu")
    store.flush()
    view[:] += 1  # a view kept across a flush, written later


WRITES = {
    "append": _append,
    "extend": _extend,
    "extend_columns": _extend_columns,
    "column": _column,
    "column_after_flush": _column_after_flush,
}


@pytest.mark.parametrize("write", WRITES)
def test_every_write_path_is_durable_after_flush(durable_dir, write):
    path = durable_dir / "s.mms"
    with RecordStore.create(path, FIELDS, capacity=64) as store:
        store.extend((smiles_of(i), value_row(i)) for i in range(8))
        store.flush()
    with RecordStore.open(path, "r+") as store:
        WRITES[write](store)
        expected = {name: store.column(name).copy() for name in FIELDS}
        count = len(store)
        store.flush()
        assert _dirty(path) == 0, f"{write}: dirty pages left after flush()"
    with RecordStore.open(path) as reopened:
        assert len(reopened) == count
        for name in FIELDS:
            np.testing.assert_array_equal(reopened.column(name), expected[name])


def test_from_columns_is_durable(durable_dir):
    path = durable_dir / "s.mms"
    values = np.arange(12.0).reshape(4, 3)
    with RecordStore.from_columns(path, ["C", "CC", "CCC", "CCCC"], values, FIELDS) as store:
        store.flush()
        assert _dirty(path) == 0
    with RecordStore.open(path) as reopened:
        np.testing.assert_array_equal(reopened.column("U0"), values[:, 2])
