"""Records by the column: from_columns, extend_columns and take, against the per-record paths."""

from __future__ import annotations

import math
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import FIELDS, smiles_of, value_row
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmlab import (
    CorruptStoreError,
    NoSpaceError,
    ReadOnlyStoreError,
    RecordStore,
    StoreClosedError,
    StoreLockedError,
)
from mmlab.store import bulk


def columns_of(n: int, start: int = 0) -> tuple[list[str], np.ndarray]:
    """The fixtures' records ``start .. start + n`` as columns."""
    smiles = [smiles_of(i) for i in range(start, start + n)]
    values = np.array([value_row(i) for i in range(start, start + n)]).reshape(n, len(FIELDS))
    return smiles, values


def contents(store: RecordStore) -> tuple[list[str], np.ndarray]:
    """Every record, read one at a time (the oracle)."""
    records = list(store)
    values = np.array([r.values for r in records]).reshape(len(records), len(store.fields))
    return [r.smiles for r in records], values


def assert_bits_equal(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype == np.float64 and got.shape == want.shape
    np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))


class FakeArrowStrings:
    """Duck-types an Arrow string array: the store never imports pyarrow."""

    def __init__(self, items: list[str]) -> None:
        self.items = items

    def to_pylist(self) -> list[str]:
        return list(self.items)


def dies_in_child(fn) -> None:
    """Run ``fn`` in a forked child that exits abruptly (os._exit) inside it, as a kill would."""
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        finally:
            os._exit(3)  # reached only if fn did not die first
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "the child did not die mid-call"


def die(*args, **kwargs) -> None:
    os._exit(0)


# -- from_columns --------------------------------------------------------------------------


def test_from_columns_equals_extend(store_path, filled):
    smiles, values = columns_of(100)
    with RecordStore.from_columns(store_path.with_name("c.mms"), smiles, values, FIELDS) as store:
        assert store.mode == "r+" and len(store) == 100 and store.capacity == 100
    with RecordStore.open(store_path.with_name("c.mms")) as ours, RecordStore.open(filled) as ref:
        got, want = contents(ours), contents(ref)
        assert got[0] == want[0]
        assert_bits_equal(got[1], want[1])


@pytest.mark.parametrize(
    "make_smiles",
    [
        list,
        tuple,
        lambda s: np.array(s),  # a numpy array of str
        lambda s: np.array(s, dtype=object),
        FakeArrowStrings,
        lambda s: (x for x in s),  # any iterable
    ],
    ids=["list", "tuple", "numpy-str", "numpy-object", "arrow-like", "generator"],
)
def test_from_columns_takes_strings_in_many_forms(store_path, make_smiles):
    smiles, values = columns_of(20)
    RecordStore.from_columns(store_path, make_smiles(smiles), values, FIELDS).close()
    with RecordStore.open(store_path) as store:
        assert [r.smiles for r in store] == smiles


def test_from_columns_takes_a_mapping_and_its_keys_name_the_fields(store_path):
    smiles, values = columns_of(10)
    mapping = {"U0": values[:, 2], "mu": values[:, 0].tolist(), "alpha": values[:, 1]}
    with RecordStore.from_columns(store_path, smiles, mapping) as store:
        assert store.fields == ("U0", "mu", "alpha")  # the mapping's order
        np.testing.assert_array_equal(store.column("alpha"), values[:, 1])
    # with fields given, they set the order and the mapping must name exactly them
    with RecordStore.from_columns(store_path, smiles, mapping, FIELDS, overwrite=True) as store:
        assert store.fields == FIELDS
        assert_bits_equal(contents(store)[1], values)


def test_nan_negative_zero_infinities_and_unicode_keep_every_bit(store_path):
    smiles = ["", "é", "日本語", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "C\x00N", "C" * 1000]
    values = np.array(
        [
            [-0.0, math.nan, -math.inf],
            [math.inf, 0.0, -math.nan],
            [5e-324, -1.7976931348623157e308, 1.0],
            [struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_DEAD_BEEF))[0], 2.0, 3.0],
            [1.0, 2.0, 3.0],
            [4.0, 5.0, 6.0],
        ]
    )
    with RecordStore.from_columns(store_path, smiles, values, FIELDS) as store:
        store.extend_columns(smiles, values)
    with RecordStore.open(store_path) as store:
        got_smiles, got_values = contents(store)
        assert got_smiles == smiles * 2
        assert_bits_equal(got_values, np.concatenate([values, values]))
        taken_smiles, taken = store.take(range(len(store)))
        assert taken_smiles == smiles * 2
        assert_bits_equal(taken, got_values)


def test_empty_input(store_path):
    with RecordStore.from_columns(store_path, [], np.empty((0, 3)), FIELDS) as store:
        assert len(store) == 0 and store.capacity == 1
        assert store.extend_columns([], []) == 0
        assert store.extend_columns([], {f: [] for f in FIELDS}) == 0
        smiles, values = store.take([])
        assert smiles == [] and values.shape == (0, 3)
        assert store.extend_columns(["C"], [[1, 2, 3]]) == 1  # and it grows from there
    with RecordStore.open(store_path) as store:
        assert store[0].smiles == "C"


def test_from_columns_sizes_the_file_to_the_records(store_path):
    smiles, values = columns_of(5000)
    with RecordStore.from_columns(store_path, smiles, values, FIELDS) as store:
        assert store.capacity == 5000
        assert store.sections["heap"][1] == 5000 * 32  # create's heap guess per record
    long = ["C" * 150] * 10
    with RecordStore.from_columns(
        store_path, long, np.zeros((10, 3)), FIELDS, capacity=64, overwrite=True
    ) as store:
        assert store.capacity == 64 and store.sections["heap"][1] == 64 * 32
        store.extend_columns(long, np.ones((10, 3)))  # the heap is full: grows
        assert [r.smiles for r in store] == long * 2
    with pytest.raises(ValueError, match="capacity must be at least 10"):
        RecordStore.from_columns(store_path, long, np.zeros((10, 3)), FIELDS, capacity=9)
    with pytest.raises(ValueError, match="less than the 1500 bytes"):
        RecordStore.from_columns(store_path, long, np.zeros((10, 3)), FIELDS, heap_capacity=1499)


def test_from_columns_refuses_to_overwrite_and_never_replaces_a_held_store(filled):
    smiles, values = columns_of(3)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        RecordStore.from_columns(filled, smiles, values, FIELDS)
    with RecordStore.open(filled, "r+"), pytest.raises(StoreLockedError):
        RecordStore.from_columns(filled, smiles, values, FIELDS, overwrite=True)
    assert sorted(p.name for p in filled.parent.iterdir()) == [filled.name]  # no temporary left
    RecordStore.from_columns(filled, smiles, values, FIELDS, overwrite=True).close()
    with RecordStore.open(filled) as store:
        assert len(store) == 3


def test_from_columns_on_a_full_disk_leaves_nothing(filled, monkeypatch):
    def full(fd, size, store, *, fresh):
        raise NoSpaceError(f"no space left on the disk of {store}")

    monkeypatch.setattr(bulk.files, "reserve", full)
    smiles, values = columns_of(3)
    with pytest.raises(NoSpaceError):
        RecordStore.from_columns(filled.with_name("new.mms"), smiles, values, FIELDS)
    with pytest.raises(NoSpaceError):
        RecordStore.from_columns(filled, smiles, values, FIELDS, overwrite=True)
    assert sorted(p.name for p in filled.parent.iterdir()) == [filled.name]
    monkeypatch.undo()
    with RecordStore.open(filled) as store:
        assert len(store) == 100


def test_a_writer_killed_mid_from_columns_leaves_the_old_store(filled, monkeypatch):
    smiles, values = columns_of(500)
    monkeypatch.setattr(bulk.files, "publish", die)  # data written, before it is at the path
    dies_in_child(lambda: RecordStore.from_columns(filled, smiles, values, FIELDS, overwrite=True))
    with RecordStore.open(filled) as store:
        assert len(store) == 100 and store[-1].smiles == smiles_of(99)


# -- extend_columns ------------------------------------------------------------------------


def test_extend_columns_appends_grows_once_and_publishes_on_flush(filled):
    smiles, values = columns_of(1000, start=100)
    with RecordStore.open(filled, "r+") as store, RecordStore.open(filled) as reader:
        store.append(smiles_of(100), value_row(100))
        old_capacity = store.capacity
        assert store.extend_columns(smiles[1:], values[1:]) == 999
        assert store.capacity == max(2 * old_capacity, 1100)  # one growth, to fit
        assert reader.refresh() == 100  # not published before the flush
        store.flush()
        assert reader.refresh() == 1100
        want_smiles, want_values = columns_of(1100)
        got_smiles, got_values = contents(reader)
        assert got_smiles == want_smiles
        assert_bits_equal(got_values, want_values)


def test_extend_columns_takes_float32_and_strided_input(filled):
    values = np.arange(30, dtype=np.float32).reshape(3, 10)[:, ::3]  # (3, 4) non-contiguous
    with RecordStore.open(filled, "r+") as store:
        store.extend_columns(["A", "B", "C"], values[:, :3])
        np.testing.assert_array_equal(store.take([-3, -2, -1])[1], values[:, :3])


def test_a_writer_killed_mid_extend_columns_leaves_its_last_flush(filled, monkeypatch):
    smiles, values = columns_of(5000, start=100)
    real_write = bulk.write

    def write_then_die(*args):
        real_write(*args)  # every byte written past the count, then killed before it counts
        os._exit(0)

    def child():
        with RecordStore.open(filled, "r+") as store:
            store.extend_columns(smiles[:10], values[:10])
            store.flush()
            store.extend_columns(smiles[10:20], values[10:20])  # not flushed
            monkeypatch.setattr(bulk, "write", write_then_die)
            store.extend_columns(smiles[20:], values[20:])  # grows, writes, dies

    dies_in_child(child)
    with RecordStore.open(filled) as store:
        assert len(store) == 110
        got_smiles, got_values = contents(store)
        assert got_smiles == columns_of(110)[0]
        assert_bits_equal(got_values, columns_of(110)[1])
    with RecordStore.open(filled, "r+") as store:  # and a new writer carries on
        assert store.extend_columns(smiles[10:], values[10:]) == 4990
    with RecordStore.open(filled) as store:
        assert contents(store)[0] == columns_of(5100)[0]


@pytest.mark.parametrize(
    ("smiles", "values", "error", "match"),
    [
        (["C", "N"], np.zeros((3, 3)), ValueError, r"shape \(3, 3\), not \(2, 3\)"),
        (["C", "N"], np.zeros((2, 4)), ValueError, r"one column per field"),
        (["C", "N"], np.zeros(6), ValueError, r"shape \(6,\)"),
        (["C", "N"], [[1, 2, 3], [1, "x", 3]], ValueError, "values must be numbers"),
        (["C", "N"], {"mu": [1, 2], "alpha": [1, 2]}, KeyError, r"no values for \['U0'\]"),
        (["C"], {"mu": [1], "alpha": [1], "U0": [1], "HOMO": [1]}, KeyError, "unknown field"),
        (["C", "N"], {"mu": [1, 2], "alpha": [1], "U0": [1, 2]}, ValueError, "'alpha' has"),
        (["C", 5], np.zeros((2, 3)), TypeError, "string 1 must be str, got 5"),
        (["C", None], np.zeros((2, 3)), TypeError, "string 1 must be str"),
        ([b"C"], np.zeros((1, 3)), TypeError, "string 0 must be str"),
        ("CN", np.zeros((2, 3)), TypeError, "not one string"),
        (np.array([["C"]]), np.zeros((1, 3)), ValueError, "one-dimensional"),
    ],
)
def test_bad_columns_are_refused_and_change_nothing(filled, smiles, values, error, match):
    with RecordStore.open(filled, "r+") as store:
        with pytest.raises(error, match=match):
            store.extend_columns(smiles, values)
        assert len(store) == 100
    with pytest.raises(error, match=match):
        RecordStore.from_columns(filled.with_name("new.mms"), smiles, values, FIELDS)
    assert not filled.with_name("new.mms").exists()


def test_a_lone_surrogate_gives_appends_error(filled):
    with RecordStore.open(filled, "r+") as store:
        with pytest.raises(UnicodeEncodeError) as by_append:
            store.append("C\ud800", [1, 2, 3])
        with pytest.raises(UnicodeEncodeError) as by_columns:
            store.extend_columns(["C", "C\ud800"], np.zeros((2, 3)))
        assert str(by_columns.value) == str(by_append.value)
        assert len(store) == 100
    with pytest.raises(UnicodeEncodeError):
        RecordStore.from_columns(filled.with_name("new.mms"), ["\udfff"], [[1, 2, 3]], FIELDS)
    assert sorted(p.name for p in filled.parent.iterdir()) == [filled.name]


def test_2d_values_need_field_names(store_path):
    with pytest.raises(TypeError, match="fields="):
        RecordStore.from_columns(store_path, ["C"], [[1.0, 2.0]])
    assert not store_path.exists()


def test_extend_columns_needs_a_writable_store(filled):
    with RecordStore.open(filled) as store, pytest.raises(ReadOnlyStoreError):
        store.extend_columns(["C"], [[1, 2, 3]])


# -- take ------------------------------------------------------------------------------------


def oracle(store: RecordStore, indices) -> tuple[list[str], np.ndarray]:
    records = [store[i] for i in indices]
    width = len(store.fields)
    values = np.array([r.values for r in records], dtype=np.float64).reshape(-1, width)
    return [r.smiles for r in records], values


def assert_take_is_the_loop(store: RecordStore, indices) -> None:
    smiles, values = store.take(indices)
    want_smiles, want_values = oracle(store, indices)
    assert smiles == want_smiles
    assert_bits_equal(values, want_values)


@given(
    records=st.lists(
        st.tuples(
            st.text(max_size=20),
            st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=3, max_size=3),
        ),
        min_size=1,
        max_size=40,
    ),
    data=st.data(),
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_from_columns_keeps_any_record_and_take_equals_a_loop_of_gets(tmp_path, records, data):
    path = tmp_path / "hypothesis.mms"
    smiles = [s for s, _ in records]
    values = np.array([v for _, v in records], dtype=np.float64)
    with RecordStore.from_columns(path, smiles, values, FIELDS, overwrite=True) as store:
        got_smiles, got_values = contents(store)
        assert got_smiles == smiles
        assert_bits_equal(got_values, values)
        n = len(store)
        indices = data.draw(st.lists(st.integers(-n, n - 1), max_size=60))
        as_array = data.draw(st.sampled_from([False, np.int64, np.int32, np.intp]))
        if as_array:
            indices = np.array(indices, dtype=as_array)
        assert_take_is_the_loop(store, indices)


def test_take_on_read_only_and_copy_on_write_stores(filled):
    indices = [0, 99, -1, -100, 50, 50, 7]
    for mode in ("r", "c", "r+"):
        with RecordStore.open(filled, mode) as store:
            assert_take_is_the_loop(store, indices)
            values = store.take(indices)[1]
            values[:] = 0  # a copy: the store is untouched
            assert store[0].values[1] == 0.5


def test_take_after_growth_and_after_refresh(store_path):
    with RecordStore.create(store_path, FIELDS, capacity=4) as writer:
        writer.extend_columns(*columns_of(3))
        writer.flush()
        with RecordStore.open(store_path) as reader:
            assert reader.take([-1])[0] == [smiles_of(2)]
            writer.extend_columns(*columns_of(2000, start=3))  # grows into a new file
            assert writer.capacity >= 2003
            assert_take_is_the_loop(writer, [0, 2002, 1000, -5])
            writer.flush()
            assert reader.refresh() == 2003
            assert_take_is_the_loop(reader, [0, 2002, 1000, -5])
            assert reader.take([2002])[0] == [smiles_of(2002)]


def test_take_accepts_unsigned_and_object_indices(filled):
    with RecordStore.open(filled) as store:
        assert_take_is_the_loop(store, np.array([3, 99, 0], dtype=np.uint64))
        assert_take_is_the_loop(store, np.array([3, -1], dtype=object))
        assert_take_is_the_loop(store, range(95, 100))
        assert_take_is_the_loop(store, (np.int16(5), 6))


@pytest.mark.parametrize(
    "indices", [[0, 100], [-101], [5, 10**12], [2**70], np.array([100], dtype=np.uint64)]
)
def test_take_out_of_range_names_the_index_as_a_get_does(filled, indices):
    bad = next(i for i in (int(i) for i in indices) if not -100 <= i < 100)
    with RecordStore.open(filled) as store:
        with pytest.raises(IndexError) as by_get:
            store[bad]
        with pytest.raises(IndexError) as by_take:
            store.take(indices)
    assert str(by_take.value) == str(by_get.value)
    assert f"index {bad} out of range for a store of 100 records" in str(by_take.value)


@pytest.mark.parametrize(
    ("indices", "error", "match"),
    [
        (5, TypeError, r"store\[i\]"),
        ([True, False], TypeError, "booleans"),
        ([1.0, 2.0], TypeError, "integers"),
        (["1"], TypeError, "integers"),
        ([[1, 2]], ValueError, "one-dimensional"),
    ],
)
def test_take_refuses_what_is_not_a_list_of_indices(filled, indices, error, match):
    with RecordStore.open(filled) as store, pytest.raises(error, match=match):
        store.take(indices)


def test_take_on_a_closed_store(filled):
    store = RecordStore.open(filled)
    store.close()
    with pytest.raises(StoreClosedError):
        store.take([0])


def test_take_reports_corrupt_string_offsets(filled):
    with RecordStore.open(filled) as store:
        offsets_at, _ = store.sections["offsets"]
    with open(filled, "r+b") as f:
        f.seek(offsets_at + 8 * 51)
        f.write(struct.pack("<q", 10**15))
    with RecordStore.open(filled) as store:
        assert store.take([49, 48])[0] == [smiles_of(49), smiles_of(48)]
        with pytest.raises(CorruptStoreError, match="record 50"):
            store.take([49, 50])


def test_take_reports_strings_that_are_not_utf8(filled):
    with RecordStore.open(filled) as store:
        heap_at, _ = store.sections["heap"]
        offsets_at, _ = store.sections["offsets"]
    start = int(np.fromfile(filled, np.int64, 1, offset=offsets_at + 8 * 7)[0])
    with open(filled, "r+b") as f:
        f.seek(heap_at + start)
        f.write(b"\xff")
    with RecordStore.open(filled) as store:
        assert store.take([6, 8])[0] == [smiles_of(6), smiles_of(8)]
        with pytest.raises(CorruptStoreError, match="record 7 is not UTF-8"):
            store.take([0, 7])


_KILLED_COLUMN_WRITER = """
import sys
import numpy as np
from mmlab import RecordStore

with RecordStore.open(sys.argv[1], "r+") as store:
    print("ready", flush=True)
    i = len(store)
    while True:
        j = np.arange(i, i + 997)
        store.extend_columns([f"C{k}" for k in j.tolist()], {"mu": j, "alpha": -j, "U0": j / 7})
        i += 997
        store.flush()
"""


def test_a_writer_sigkilled_while_extending_by_columns_leaves_only_flushed_batches(store_path):
    RecordStore.create(store_path, FIELDS, capacity=8).close()
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED_COLUMN_WRITER, str(store_path)],
        stdout=subprocess.PIPE,
        text=True,
    ) as writer:
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        writer.send_signal(signal.SIGKILL)
    with RecordStore.open(store_path) as store:
        n = len(store)
        assert n % 997 == 0
        assert store.take(range(n))[0] == [f"C{k}" for k in range(n)]
        np.testing.assert_array_equal(store.column("alpha"), -np.arange(n))
        np.testing.assert_array_equal(store.column("U0"), np.arange(n) / 7)


def test_take_accepts_a_generator_and_a_set(store_path):
    with RecordStore.create(store_path, FIELDS, capacity=16) as store:
        store.extend((smiles_of(i), value_row(i)) for i in range(6))
        smiles, values = store.take(i for i in (4, 1))
        assert smiles == [smiles_of(4), smiles_of(1)]
        assert values.tolist() == [value_row(4), value_row(1)]
        assert store.take({2})[0] == [smiles_of(2)]
        with pytest.raises(TypeError, match="sequence of indices"):
            store.take(3)


def test_pwrite_all_refuses_a_write_of_nothing(monkeypatch):
    from mmlab.store import bulk

    monkeypatch.setattr(bulk.os, "pwrite", lambda fd, data, offset: 0)
    with pytest.raises(OSError, match="wrote nothing"):
        bulk._pwrite_all(-1, b"abc", 0)


def test_encode_strings_is_the_store_layout():
    from mmlab.store import bulk

    offsets, heap = bulk.encode_strings(["C", "", "é"])
    assert offsets.tolist() == [0, 1, 1, 3] and heap.tobytes() == "Cé".encode()
