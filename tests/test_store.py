"""The record store: round trips, growth, modes, sharing, durability and bad input."""

from __future__ import annotations

import itertools
import math
import mmap
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import FIELDS, smiles_of, value_row
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmlab import (
    CorruptStoreError,
    NotAStoreError,
    ReadOnlyStoreError,
    RecordStore,
    StoreClosedError,
    StoreError,
    StoreLockedError,
    TruncatedStoreError,
    UnsupportedVersionError,
)


def test_round_trip_through_reopen(filled):
    with RecordStore.open(filled) as store:
        assert len(store) == 100
        assert store.fields == FIELDS
        for i in (0, 1, 57, 99):
            record = store[i]
            assert record.smiles == smiles_of(i) == store.smiles(i)
            assert record.values.tolist() == value_row(i)


def test_indices_slices_and_iteration(filled):
    with RecordStore.open(filled) as store:
        assert store[-1].smiles == smiles_of(99)
        assert store[-100].smiles == smiles_of(0)
        assert [r.smiles for r in store[10:20:3]] == [smiles_of(i) for i in range(10, 20, 3)]
        assert [r.smiles for r in store] == [smiles_of(i) for i in range(100)]
        assert store[np.int64(5)].smiles == smiles_of(5)


def test_column_is_a_zero_copy_view_of_the_file(filled):
    with RecordStore.open(filled) as store:
        column = store.column("U0")
        np.testing.assert_array_equal(column, [-2.0 * i for i in range(100)])
        assert not column.flags.owndata
        offset, _ = store.sections["U0"]
        raw = filled.read_bytes()[offset : offset + 8 * 100]
        np.testing.assert_array_equal(np.frombuffer(raw, "<f8"), column)


def test_sections_start_on_page_boundaries_and_do_not_overlap(filled):
    with RecordStore.open(filled) as store:
        spans = sorted(store.sections.values())
        assert all(offset % os.sysconf("SC_PAGE_SIZE") == 0 for offset, _ in spans)
        for (a, size), (b, _) in itertools.pairwise(spans):
            assert a + size <= b
        assert spans[-1][0] + spans[-1][1] <= store.nbytes == filled.stat().st_size


def test_doubling_in_place_persists(filled):
    with RecordStore.open(filled, "r+") as store:
        store.column("U0")[:] *= 2
    with RecordStore.open(filled) as store:
        np.testing.assert_array_equal(store.column("U0"), [-4.0 * i for i in range(100)])
        np.testing.assert_array_equal(store.column("mu"), np.arange(100.0))


def test_growth_is_geometric_and_keeps_every_record(store_path):
    with RecordStore.create(store_path, FIELDS, capacity=4) as store:
        capacities = set()
        for i in range(1000):
            store.append(smiles_of(i), value_row(i))
            capacities.add(store.capacity)
        assert len(capacities) <= 10  # doubling, not one step per record
    with RecordStore.open(store_path) as store:
        assert [r.smiles for r in store] == [smiles_of(i) for i in range(1000)]


def test_views_taken_before_growth_stay_valid(store_path):
    with RecordStore.create(store_path, FIELDS, capacity=2) as store:
        store.extend((smiles_of(i), value_row(i)) for i in range(2))
        early = store.column("alpha")
        store.extend((smiles_of(i), value_row(i)) for i in range(2, 5000))  # moves sections
        assert store.capacity >= 5000
        early[1] = 123.0  # writes reach the store after the move
        assert store.column("alpha")[1] == 123.0
        store.column("alpha")[0] = -7.0  # and the old view sees the new data, not stale data
        assert early.tolist() == [-7.0, 123.0]
    with RecordStore.open(store_path) as store:
        assert store.column("alpha")[:2].tolist() == [-7.0, 123.0]


def test_views_outlive_close_without_crashing(filled):
    store = RecordStore.open(filled)
    column = store.column("mu")
    store.close()
    assert column[99] == 99.0
    with pytest.raises(StoreClosedError):
        store.column("mu")
    with pytest.raises(StoreClosedError):
        store[0]


def test_repr_shows_path_count_capacity_fields_and_size(filled):
    with RecordStore.open(filled) as store:
        text = repr(store)
    for part in (str(filled), "count=100", f"capacity={store.capacity}", "mu, alpha, U0"):
        assert part in text
    assert f"{filled.stat().st_size:,}" in text


def test_read_only_mode_refuses_writes(filled):
    with RecordStore.open(filled) as store:
        with pytest.raises(ReadOnlyStoreError):
            store.append("C", [1, 2, 3])
        with pytest.raises(ValueError, match="read-only"):
            store.column("mu")[0] = 1.0


def test_copy_on_write_changes_never_reach_the_file(store_path):
    with RecordStore.create(store_path, FIELDS, capacity=200) as store:
        store.extend((smiles_of(i), value_row(i)) for i in range(100))
    before = store_path.read_bytes()
    with RecordStore.open(store_path, "c") as store:
        store.column("mu")[:] = -1.0
        store.append("CC", [1, 2, 3])
        assert store.column("mu")[0] == -1.0 and len(store) == 101
        store.flush()
    assert store_path.read_bytes() == before


def test_copy_on_write_cannot_grow(store_path):
    with RecordStore.create(store_path, FIELDS, capacity=1):
        pass
    with RecordStore.open(store_path, "c") as store:
        store.append("C", [1, 2, 3])
        with pytest.raises(StoreError, match="copy-on-write"):
            store.append("C", [1, 2, 3])


def test_unflushed_records_stay_invisible_to_readers(filled):
    with RecordStore.open(filled, "r+") as writer, RecordStore.open(filled) as reader:
        writer.extend(("N", value_row(i)) for i in range(5))
        assert reader.refresh() == 100
        writer.flush()
        assert reader.refresh() == 105
        assert reader[-1].smiles == "N"


def test_reader_follows_a_writer_that_grew_the_file(store_path):
    with RecordStore.create(store_path, FIELDS, capacity=4) as writer:
        writer.extend((smiles_of(i), value_row(i)) for i in range(3))
        writer.flush()
        reader = RecordStore.open(store_path)
        early = reader.column("mu")
        writer.extend((smiles_of(i), value_row(i)) for i in range(3, 500))
        writer.flush()
        assert reader.refresh() == 500
        assert reader[499].smiles == smiles_of(499)
        writer.column("mu")[0] = 42.0
        assert early[0] == 42.0  # the reader's old view follows the store into the new file
        reader.close()


def test_reader_in_another_process_sees_flushed_records(filled):
    script = textwrap.dedent(
        f"""
        import sys
        from mmlab import RecordStore
        store = RecordStore.open({str(filled)!r})
        print(len(store), flush=True)
        sys.stdin.readline()
        print(store.refresh(), store[-1].smiles, flush=True)
        """
    )
    reader = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert reader.stdout.readline().strip() == "100"
    with RecordStore.open(filled, "r+") as writer:
        writer.append("CCN", [1, 2, 3])
    out, _ = reader.communicate("go\n", timeout=30)
    assert out.split() == ["101", "CCN"]


def test_a_second_writer_gets_a_clear_error(filled):
    with RecordStore.open(filled, "r+"):
        with pytest.raises(StoreLockedError, match="one writer at a time"):
            RecordStore.open(filled, "r+")
        script = f"from mmlab import RecordStore; RecordStore.open({str(filled)!r}, 'r+')"
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert result.returncode != 0 and "StoreLockedError" in result.stderr
    RecordStore.open(filled, "r+").close()  # free again once the first writer closed


_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from mmlab import RecordStore
    store = RecordStore.open(sys.argv[1], "r+")
    i = len(store)
    print("ready", flush=True)
    while True:
        store.extend((f"C{j}" + "N" * (j % 13), [j, -j, j / 7]) for j in range(i, i + 997))
        i += 997
        store.flush()
    """
)


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.4, 0.7])
def test_a_writer_killed_mid_append_leaves_only_complete_records(store_path, delay):
    RecordStore.create(store_path, FIELDS, capacity=8).close()
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(store_path)], stdout=subprocess.PIPE, text=True
    ) as writer:
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
    with RecordStore.open(store_path) as store:
        n = len(store)
        assert n % 997 == 0
        smiles = [store.smiles(j) for j in range(n)]
        assert smiles == [f"C{j}" + "N" * (j % 13) for j in range(n)]
        np.testing.assert_array_equal(store.column("mu"), np.arange(n))
        np.testing.assert_array_equal(store.column("U0"), np.arange(n) / 7)
    with RecordStore.open(store_path, "r+") as store:  # and a new writer can carry on
        store.append("C", [1, 2, 3])


def test_a_torn_header_falls_back_to_the_previous_commit(filled):
    with RecordStore.open(filled, "r+") as store:
        store.append("CC", [1, 2, 3])
        store.flush()
        current = store._sequence % 2
        slot = store._layout.slot_size
    with open(filled, "r+b") as f:  # scribble over the newest header as a crash would
        f.seek(current * slot + 40)
        f.write(b"\xff" * 64)
    with RecordStore.open(filled) as store:
        assert len(store) == 100


def _write_at(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@given(
    st.lists(
        st.tuples(
            st.text(max_size=40),
            st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=3, max_size=3),
        ),
        max_size=50,
    )
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_unicode_and_any_float_round_trip(tmp_path, records):
    path = tmp_path / "hypothesis.mms"
    with RecordStore.create(path, FIELDS, capacity=1, heap_capacity=1, overwrite=True) as store:
        store.extend(records)
    with RecordStore.open(path) as store:
        assert [r.smiles for r in store] == [s for s, _ in records]
        got = np.array([r.values for r in store], dtype=np.float64).reshape(-1, 3)
        want = np.array([v for _, v in records], dtype=np.float64).reshape(-1, 3)
        # bit for bit, so NaN, infinities and -0.0 all count
        np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))


def test_negative_zero_and_nan_keep_their_bits(store_path):
    with RecordStore.create(store_path, FIELDS) as store:
        store.append("", [-0.0, math.nan, -math.inf])
    with RecordStore.open(store_path) as store:
        mu, alpha, u0 = store[0].values
        assert math.copysign(1, mu) == -1 and math.isnan(alpha) and u0 == -math.inf


# -- bad input ------------------------------------------------------------------------------


def test_create_refuses_to_overwrite(filled):
    with pytest.raises(FileExistsError, match="overwrite=True"):
        RecordStore.create(filled, FIELDS)


@pytest.mark.parametrize("fields", ["mu", ["a", "a"], ["", "b"], [3]])
def test_create_rejects_bad_field_names(store_path, fields):
    with pytest.raises((TypeError, ValueError)):
        RecordStore.create(store_path, fields)
    assert not store_path.exists()


@pytest.mark.parametrize("content", [b"", b"hello", b"\0" * 10000, os.urandom(20000)])
def test_a_file_that_is_not_a_store(store_path, content):
    store_path.write_bytes(content)
    with pytest.raises(NotAStoreError, match="not an mmlab record store"):
        RecordStore.open(store_path)


def test_a_missing_file(store_path):
    with pytest.raises(FileNotFoundError):
        RecordStore.open(store_path)


@pytest.mark.parametrize("keep", [16, 5000, 9000, 20000])
def test_a_truncated_store(filled, keep):
    data = filled.read_bytes()
    filled.write_bytes(data[:keep])
    with pytest.raises(CorruptStoreError):
        RecordStore.open(filled)


def test_truncation_reports_the_sizes(filled):
    size = filled.stat().st_size
    os.truncate(filled, size - 4096)
    with pytest.raises(TruncatedStoreError, match=f"{size - 4096} bytes"):
        RecordStore.open(filled)


def test_both_headers_damaged(filled):
    _write_at(filled, 100, b"\x01")
    _write_at(filled, 4096 + 100, b"\x01")
    with pytest.raises(CorruptStoreError, match="checksum"):
        RecordStore.open(filled)


def test_an_unknown_format_version(filled):
    for slot in (0, 4096):
        _write_at(filled, slot + 8, struct.pack("<H", 99))
    with pytest.raises(UnsupportedVersionError, match="version 99"):
        RecordStore.open(filled)


def test_a_big_endian_byte_order_mark(filled):
    for slot in (0, 4096):
        _write_at(filled, slot + 10, b"\xfe\xff")
    with pytest.raises(CorruptStoreError, match="little-endian"):
        RecordStore.open(filled)


def test_corrupt_string_offsets_raise_instead_of_reading_wild_memory(filled):
    with RecordStore.open(filled) as store:
        offsets_at, _ = store.sections["offsets"]
    _write_at(filled, offsets_at + 8 * 51, struct.pack("<q", 10**15))
    with RecordStore.open(filled) as store:
        assert store.smiles(49)
        with pytest.raises(CorruptStoreError, match="record 50"):
            store.smiles(50)


def test_wrong_number_of_values(store_path):
    with RecordStore.create(store_path, FIELDS) as store:
        with pytest.raises(ValueError, match="record 1 has 2 values; this store has 3 fields"):
            store.extend([("C", [1, 2, 3]), ("N", [1, 2])])
        with pytest.raises(ValueError, match="has 4 values"):
            store.append("C", [1, 2, 3, 4])
        with pytest.raises(TypeError, match="smiles must be str"):
            store.append(b"C", [1, 2, 3])
        with pytest.raises(ValueError, match="record 2: values must be numbers"):
            store.extend([("C", [1, 2, 3]), ("N", [1, 2, 3]), ("O", [1, "x", 3])])
        assert len(store) == 0  # a rejected batch adds nothing


def test_extend_is_all_or_nothing_across_batches(store_path):
    def records():
        yield from (("C", [1.0, 2.0, 3.0]) for _ in range(70_000))  # more than one batch
        yield ("N", [1.0])

    with RecordStore.create(store_path, FIELDS, capacity=8) as store:
        store.append("O", [0, 0, 0])
        with pytest.raises(ValueError, match="record 70000 has 1 values"):
            store.extend(records())
        assert len(store) == 1 and store[-1].smiles == "O"
        store.append("S", [1, 1, 1])
        assert [r.smiles for r in store] == ["O", "S"]


def test_unknown_field(filled):
    with RecordStore.open(filled) as store, pytest.raises(KeyError, match="'mu', 'alpha', 'U0'"):
        store.column("HOMO")


@pytest.mark.parametrize("index", [100, -101, 10**12])
def test_index_out_of_range(filled, index):
    with RecordStore.open(filled) as store, pytest.raises(IndexError, match="100 records"):
        store[index]


def test_bad_mode(filled):
    with pytest.raises(ValueError, match="mode"):
        RecordStore.open(filled, "w")


def test_a_directory_is_not_a_store(tmp_path):
    with pytest.raises(IsADirectoryError):
        RecordStore.open(tmp_path)


def test_advise_random_reads_only_the_touched_field(tmp_path):
    from mmlab import pagecache

    path = tmp_path / "wide.mms"
    fields = [f"f{k}" for k in range(8)]
    with RecordStore.create(path, fields, capacity=50_000) as store:
        store.extend(("C", np.full(8, float(i))) for i in range(50_000))
    if pagecache.on_tmpfs(path):
        pytest.skip("tmpfs: no eviction")
    with RecordStore.open(path, "r+") as store:
        store.advise("random")
        assert pagecache.evict(path).resident_after == 0  # opening touched no mapped page
        column = store.column("f3")
        column *= 2
        store.flush()
        resident = pagecache.residency(path)
        page = mmap.PAGESIZE
        for name, (offset, size) in store.sections.items():
            cached = resident[offset // page : -(-(offset + size) // page)].sum()
            if name == "f3":
                assert cached == -(-size // page)  # every page of the doubled field
            else:
                assert cached == 0, name  # and no page of any other section
        with pytest.raises(ValueError, match="hint"):
            store.advise("backwards")
        del column


def test_copy_on_write_refresh_follows_the_writer_while_unchanged(store_path):
    with RecordStore.create(store_path, FIELDS, capacity=4) as writer:
        writer.extend((smiles_of(i), value_row(i)) for i in range(2))
        writer.flush()
        with RecordStore.open(store_path, "c") as snapshot:
            for stop in (4, 100):  # within capacity, then through a growth
                writer.extend((smiles_of(i), value_row(i)) for i in range(len(writer), stop))
                writer.flush()
                assert snapshot.refresh() == stop
                assert snapshot[stop - 1].values.tolist() == value_row(stop - 1)


def test_copy_on_write_refresh_refuses_once_changed(store_path):
    with RecordStore.create(store_path, FIELDS, capacity=1000) as writer:
        writer.extend((smiles_of(i), value_row(i)) for i in range(10))
        writer.flush()
        with RecordStore.open(store_path, "c") as snapshot:
            snapshot.column("mu")[0] = -1.0  # one private page
            writer.extend((smiles_of(i), value_row(i)) for i in range(10, 110))
            writer.flush()
            with pytest.raises(StoreError, match="copy-on-write and you have changed it"):
                snapshot.refresh()
            assert len(snapshot) == 10 and snapshot.column("mu")[0] == -1.0
    with RecordStore.open(store_path, "c") as reopened:
        assert reopened.column("mu")[100] == 100.0  # never the stale private page


def test_refresh_during_a_writers_commits_never_goes_back(store_path, monkeypatch):
    from mmlab.store import files

    writer = RecordStore.create(store_path, ["x"])
    for value in (0.0, 1.0):
        writer.append("C", [value])
        writer.flush()  # commits alternate between header slots 0 and 1
    reader = RecordStore.open(store_path)
    real_pread, slot = files.pread, 4096
    raced = {}

    def racing_pread(fd, n, offset):
        data = real_pread(fd, n, offset)
        if (offset, n) == (0, slot) and not raced:  # the reader has read slot 0 only
            raced["old slot 1"] = real_pread(fd, slot, slot)
            for value in (2.0, 3.0):  # the writer commits twice meanwhile
                writer.append("C", [value])
                writer.flush()
        elif (offset, n) == (slot, slot) and len(raced) == 1:  # slot 1 half copied
            raced["torn"] = True
            data = data[: slot // 2] + raced["old slot 1"][slot // 2 :]
        return data

    monkeypatch.setattr(files, "pread", racing_pread)
    assert reader.refresh() == 4 and reader[3].values[0] == 3.0
    reader.close()
    writer.close()


def test_a_store_that_fails_to_open_leaves_no_descriptor_or_mapping(filled):
    with RecordStore.open(filled) as store:
        offsets_at, _ = store.sections["offsets"]
        count = len(store)
    _write_at(filled, offsets_at + 8 * count, struct.pack("<q", -5))  # the heap's end
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(CorruptStoreError, match="outside the heap") as caught:
        RecordStore.open(filled)
    assert caught.tb is not None  # a kept traceback (a notebook keeps the last) frees nothing
    assert len(os.listdir("/proc/self/fd")) == fds
    with open("/proc/self/maps") as maps:
        assert filled.name not in maps.read()
