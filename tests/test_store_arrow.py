"""The Arrow bridge: a store read as an Arrow table with no copy, and back from Arrow and files."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import FIELDS, smiles_of, value_row
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmlab import RecordStore
from mmlab.store import StoreClosedError, remap
from mmlab.store.publish import natural_key

pa = pytest.importorskip("pyarrow")
pc = pytest.importorskip("pyarrow.compute")
pq = pytest.importorskip("pyarrow.parquet")
arrow = pytest.importorskip("mmlab.store.arrow")

# Every value a float64 can hold that a careless copy would change: both zeros, both
# infinities, NaNs with sign and payload, the smallest subnormal, the largest finite.
SPECIAL = np.array(
    [0x0, 0x8000000000000000, 0x7FF8000000000000, 0xFFF8000000000000, 0x7FF8000000000001,
     0x7FF0000000000000, 0xFFF0000000000000, 0x1, 0x7FEFFFFFFFFFFFFF],
    dtype=np.uint64,
).view(np.float64)  # fmt: skip
STRINGS = ["", "C", "é", "☃", "𝔘", "", "CC(=O)O\u00e9", "a\x00b", "日本語"]


def _bits(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)


def _contents(store: RecordStore) -> tuple[list[str], np.ndarray]:
    return store.take(np.arange(len(store)))


def _assert_same(store: RecordStore, strings: list[str], values: np.ndarray) -> None:
    got_strings, got_values = _contents(store)
    assert got_strings == strings
    np.testing.assert_array_equal(_bits(got_values), _bits(values))


@pytest.fixture
def special(tmp_path):
    """A store of the strings and values that must survive bit for bit."""
    values = np.stack([SPECIAL, SPECIAL[::-1], np.arange(len(SPECIAL)) - 4.0], axis=1)
    RecordStore.from_columns(tmp_path / "special.mms", STRINGS, values, FIELDS).close()
    return tmp_path / "special.mms", STRINGS, values


# -- to_arrow: the store's memory, no copy ------------------------------------------------


def test_import_mmlab_never_imports_pyarrow(tmp_path):
    code = (
        "import sys, numpy as np, mmlab, mmlab.store\n"
        f"s = mmlab.RecordStore.from_columns({str(tmp_path / 'a.mms')!r}, ['C'], np.ones((1, 1)),"
        " ['x'])\n"
        "s.take([0]); list(s); s.close()\n"
        "print('pyarrow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_to_arrow_is_the_store(filled):
    with RecordStore.open(filled) as store:
        table = store.to_arrow()
        table.validate(full=True)
        assert table.column_names == ["smiles", *FIELDS]
        assert table.schema.field("smiles").type == pa.large_string()
        assert all(table.schema.field(name).type == pa.float64() for name in FIELDS)
        assert table.num_rows == 100 and table.column("smiles").num_chunks == 1
        assert table.column("smiles").to_pylist() == [smiles_of(i) for i in range(100)]
        for name in FIELDS:
            np.testing.assert_array_equal(table.column(name).to_numpy(), store.column(name))
        rows = table.to_pylist()
        assert rows[7] == {"smiles": smiles_of(7), **dict(zip(FIELDS, value_row(7), strict=True))}


def test_to_arrow_keeps_every_bit(special):
    path, strings, values = special
    with RecordStore.open(path) as store:
        table = store.to_arrow()
    table.validate(full=True)
    assert table.column("smiles").to_pylist() == strings
    got = np.stack([table.column(name).to_numpy() for name in FIELDS], axis=1)
    np.testing.assert_array_equal(_bits(got), _bits(values))


def test_buffers_are_the_mapping_and_arrow_allocates_nothing(filled):
    with RecordStore.open(filled) as store:
        base = remap.address_of(store._mm)
        sections = store.sections
        allocated = pa.total_allocated_bytes()
        table = store.to_arrow()
        assert pa.total_allocated_bytes() == allocated
        validity, offsets, heap = table.column("smiles").chunk(0).buffers()
        assert validity is None
        assert offsets.address == base + sections["offsets"][0] and offsets.size == 8 * 101
        assert heap.address == base + sections["heap"][0]
        assert heap.size == sum(len(smiles_of(i)) for i in range(100))
        for name in FIELDS:
            validity, data = table.column(name).chunk(0).buffers()
            assert validity is None and not data.is_mutable
            assert data.address == base + sections[name][0] and data.size == 8 * 100
        assert pa.total_allocated_bytes() == allocated


def _mapped_here(path: Path) -> bool:
    with open("/proc/self/maps") as maps:
        return any(line.rstrip("\n").endswith(str(path)) for line in maps)


def test_table_keeps_the_mapping_alive_after_close_and_del(filled):
    store = RecordStore.open(filled)
    table = store.to_arrow()
    expected = table.to_pylist()
    addresses = [b.address for column in table.columns for b in column.chunk(0).buffers() if b]
    store.close()
    del store
    gc.collect()
    table.validate(full=True)
    assert table.to_pylist() == expected
    assert [b.address for c in table.columns for b in c.chunk(0).buffers() if b] == addresses
    if sys.platform.startswith("linux"):
        assert _mapped_here(filled)  # the table holds the store's mapping, not a copy
        del table
        gc.collect()
        assert not _mapped_here(filled)  # the last table gone, the file is unmapped
    closed = RecordStore.open(filled)
    closed.close()
    with pytest.raises(StoreClosedError):
        closed.to_arrow()


def test_empty_store(tmp_path):
    with RecordStore.create(tmp_path / "e.mms", FIELDS) as store:
        table = store.to_arrow()
    table.validate(full=True)
    assert table.num_rows == 0 and table.column_names == ["smiles", *FIELDS]


def test_table_is_a_snapshot_of_the_records_that_sees_in_place_changes(store_path):
    with RecordStore.create(store_path, FIELDS, capacity=16) as store:
        store.extend((smiles_of(i), value_row(i)) for i in range(10))
        table = store.to_arrow()  # the writer's 10 records, flushed or not
        store.extend((smiles_of(i), value_row(i)) for i in range(10, 14))  # no growth yet
        assert table.num_rows == 10
        store.column("mu")[:] *= 2  # in place: the same pages
        assert table.column("mu").to_pylist() == [2.0 * i for i in range(10)]
        capacity = store.capacity
        store.extend((smiles_of(i), value_row(i)) for i in range(14, 5000))  # grows the file
        assert store.capacity > capacity
        table.validate(full=True)
        assert table.num_rows == 10
        assert table.column("smiles").to_pylist() == [smiles_of(i) for i in range(10)]
        # the table's memory followed the store into the bigger file, like column() views
        store.column("mu")[:10] += 1
        assert table.column("mu").to_pylist() == [2.0 * i + 1 for i in range(10)]
    table.validate(full=True)  # the store is closed: the table holds the old mapping
    assert table.column("alpha").to_pylist() == [i + 0.5 for i in range(10)]


def test_a_readers_table_does_not_see_records_flushed_later(filled):
    with RecordStore.open(filled) as reader, RecordStore.open(filled, "r+") as writer:
        table = reader.to_arrow()
        writer.extend((smiles_of(i), value_row(i)) for i in range(100, 300))
        writer.flush()
        assert reader.refresh() == 300
        assert table.num_rows == 100
        table.validate(full=True)
        assert reader.to_arrow().num_rows == 300


def test_to_arrow_refuses_a_damaged_offsets_array(filled):
    with RecordStore.open(filled, "r+") as store:
        offsets = np.frombuffer(store._mm, "<i8", 101, store.sections["offsets"][0])
        offsets[50], offsets[51] = offsets[51], offsets[50]  # a string that ends before it starts
        with pytest.raises(Exception, match="record 50 ends before it starts"):
            store.to_arrow()
        offsets[50], offsets[51] = offsets[51], offsets[50]
        del offsets


def test_a_field_named_smiles_is_refused(tmp_path):
    with (
        RecordStore.create(tmp_path / "s.mms", ["smiles"]) as store,
        pytest.raises(ValueError, match="field named 'smiles'"),
    ):
        store.to_arrow()


def test_private_memory_does_not_grow_with_the_data(tmp_path):
    """A table over 48 MiB of store adds no anonymous memory: the data is page cache."""
    from mmlab.instruments import pagecache
    from mmlab.instruments.proc import memory_by_kind

    n, width = 500_000, 12
    path = tmp_path / "big.mms"
    columns = {f"f{k}": np.arange(n, dtype=np.float64) * (k + 1) for k in range(width)}
    strings = [f"C{i % 977}" for i in range(n)]
    RecordStore.from_columns(path, strings, columns).close()
    del columns, strings
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # on tmpfs pages stay: the anon test still holds
        pagecache.evict(path)
    with RecordStore.open(path) as store:
        data_bytes = 8 * n * width + store.to_arrow().column("smiles").chunk(0).buffers()[2].size
        pc.sum(pa.array([1.0]))  # load the compute kernels before measuring
        before = memory_by_kind()
        allocated = pa.total_allocated_bytes()
        table = store.to_arrow()
        made = memory_by_kind()
        table.validate(full=True)  # reads every string byte
        sums = [pc.sum(table.column(f"f{k}")).as_py() for k in range(width)]  # and every value
        read = memory_by_kind()
        assert pa.total_allocated_bytes() == allocated
    assert sums[0] == n * (n - 1) / 2
    mib = 2**20
    if before.rss_anon is None:
        pytest.skip(f"no RssAnon here: {before.unavailable}")
    assert made.rss_anon - before.rss_anon < mib
    assert read.rss_anon - before.rss_anon < 2 * mib, (before, read)
    # what the reads did bring in is the file's pages (page cache), the whole data of them
    shared = (read.rss_file + read.rss_shmem) - (before.rss_file + before.rss_shmem)
    assert shared > 0.9 * data_bytes


# -- the Arrow PyCapsule stream ------------------------------------------------------------


def test_arrow_c_stream(filled):
    with RecordStore.open(filled) as store:
        expected = store.to_arrow()
        assert pa.table(store).equals(expected)
        assert pa.RecordBatchReader.from_stream(store).read_all().equals(expected)
        assert pa.table(store).num_rows == 100


def test_polars_reads_a_store(filled):
    pl = pytest.importorskip("polars")
    with RecordStore.open(filled) as store:
        frame = pl.DataFrame(store)
        assert frame.columns == ["smiles", *FIELDS] and frame.height == 100
        assert frame["smiles"].to_list() == [smiles_of(i) for i in range(100)]
        np.testing.assert_array_equal(frame["U0"].to_numpy(), store.column("U0"))
        assert pl.from_arrow(store.to_arrow()).equals(frame)


def test_duckdb_queries_a_store_in_place(filled):
    duckdb = pytest.importorskip("duckdb")
    with RecordStore.open(filled) as store:
        snapshot = store.to_arrow()  # noqa: F841  (DuckDB finds it by its name)
        [(count, total)] = duckdb.sql("select count(*), sum(U0) from snapshot").fetchall()
        assert count == 100 and total == float(store.column("U0").sum())
        rows = duckdb.sql("select smiles from store where mu = 3").fetchall()
        assert rows == [(smiles_of(3),)]


# -- from_arrow: the way back --------------------------------------------------------------


def test_round_trip_through_a_table(special, tmp_path):
    path, strings, values = special
    with RecordStore.open(path) as store:
        table = store.to_arrow()
    with RecordStore.from_arrow(tmp_path / "back.mms", table) as back:
        assert back.fields == FIELDS and back.mode == "r+"
        _assert_same(back, strings, values)


@given(
    st.lists(st.text(max_size=20), max_size=40).flatmap(
        lambda strings: st.tuples(
            st.just(strings),
            st.lists(
                st.integers(0, 2**64 - 1),  # any bit pattern: every NaN payload, subnormals
                min_size=3 * len(strings),
                max_size=3 * len(strings),
            ),
        )
    )
)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_strings_and_any_float_bits_round_trip(tmp_path, data):
    strings, bits = data
    values = np.array(bits, dtype=np.uint64).view(np.float64).reshape(len(strings), 3)
    path = tmp_path / "h.mms"
    RecordStore.from_columns(path, strings, values, FIELDS, overwrite=True).close()
    with RecordStore.open(path) as store:
        table = store.to_arrow()
        table.validate(full=True)
        arrow.export_parquet(store, tmp_path / "h", shard_rows=7, overwrite=True)
    for source in (table, tmp_path / "h"):
        with RecordStore.from_arrow(tmp_path / "back.mms", source, overwrite=True) as back:
            assert back.fields == FIELDS
            _assert_same(back, strings, values)


def test_round_trip_of_an_empty_store(tmp_path):
    with RecordStore.create(tmp_path / "e.mms", FIELDS) as store:
        table = store.to_arrow()
    with RecordStore.from_arrow(tmp_path / "back.mms", table) as back:
        assert len(back) == 0 and back.fields == FIELDS


def test_from_arrow_takes_every_kind_of_source(special, tmp_path):
    path, strings, values = special
    with RecordStore.open(path) as store:
        table = store.to_arrow()
        sources = {
            "table": table,
            "batch": table.to_batches()[0],
            "reader": pa.RecordBatchReader.from_batches(table.schema, table.to_batches(3)),
            "store": store,  # anything with __arrow_c_stream__
            "chunked": pa.concat_tables([table.slice(0, 4), table.slice(4)]),
        }
        with (
            pa.OSFile(str(tmp_path / "t.arrow"), "wb") as sink,
            pa.ipc.new_file(sink, table.schema) as writer,
        ):
            writer.write_table(table, max_chunksize=2)
        with (
            pa.OSFile(str(tmp_path / "t.arrows"), "wb") as sink,
            pa.ipc.new_stream(sink, table.schema) as writer,
        ):
            writer.write_table(table)
        pq.write_table(table, tmp_path / "t.parquet")
        sources |= {
            "ipc file": tmp_path / "t.arrow",
            "ipc stream": str(tmp_path / "t.arrows"),
            "parquet": tmp_path / "t.parquet",
        }
        for kind, source in sources.items():
            with RecordStore.from_arrow(tmp_path / f"{kind}.mms", source) as back:
                _assert_same(back, strings, values)


def test_from_a_polars_frame(special, tmp_path):
    pl = pytest.importorskip("polars")
    path, strings, values = special
    with RecordStore.open(path) as store:
        frame = pl.DataFrame(store)
    with RecordStore.from_arrow(tmp_path / "back.mms", frame) as back:
        _assert_same(back, strings, values)


def test_from_arrow_picks_the_string_column_and_casts_numbers(tmp_path):
    table = pa.table(
        {
            "n_atoms": pa.array([1, 2], pa.int32()),
            "name": ["C", "N"],
            "energy": pa.array([1.5, -2.25], pa.float32()),
        }
    )
    with RecordStore.from_arrow(tmp_path / "a.mms", table) as store:  # the only string column
        assert store.fields == ("n_atoms", "energy")
        assert store.take([0, 1])[0] == ["C", "N"]
        np.testing.assert_array_equal(store.take([0, 1])[1], [[1.0, 1.5], [2.0, -2.25]])
    two = table.append_column("smiles", pa.array(["c1", "c2"], pa.large_string()))
    with pytest.raises(ValueError, match=r"not numbers: name \(string\)"):
        RecordStore.from_arrow(tmp_path / "b.mms", two)
    with RecordStore.from_arrow(tmp_path / "c.mms", two.drop_columns("name")) as store:
        assert store.take([1])[0] == ["c2"] and store.fields == ("n_atoms", "energy")
    with RecordStore.from_arrow(
        tmp_path / "d.mms", two.drop_columns("smiles"), string_column="name"
    ) as store:
        assert store.take([0])[0] == ["C"]
    dictionary = pa.table({"s": pa.array(["x", "y", "x"]).dictionary_encode(), "v": [1.0] * 3})
    with RecordStore.from_arrow(tmp_path / "e.mms", dictionary) as store:
        assert store.take([0, 1, 2])[0] == ["x", "y", "x"]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"v": [1.0]}, r"no string column among \['v'\]"),
        ({"a": ["x"], "b": ["y"], "v": [1.0]}, r"several string columns \['a', 'b'\]"),
        ({"smiles": [1.0], "v": [2.0]}, "column 'smiles' holds double, not strings"),
        ({"smiles": ["x"], "ok": [True]}, r"not numbers: ok \(bool\)"),
        ({"smiles": ["x"], "l": [[1.0]], "t": ["a"]}, r"not numbers: l \(list<.*>\), t \(string\)"),
        ({"smiles": ["x", "y"], "v": [1.0, None]}, "column 'v' has 1 null.*row 1.*fill_null"),
        ({"smiles": [None, "y"], "v": [1.0, 2.0]}, "column 'smiles' has 1 null"),
        ({"smiles": ["x"], "n": [2**53 + 1]}, "column 'n' cannot be stored as float64"),
    ],
)
def test_from_arrow_refuses_what_a_store_cannot_hold(tmp_path, columns, message):
    with pytest.raises(ValueError, match=message):
        RecordStore.from_arrow(tmp_path / "x.mms", pa.table(columns))
    assert not (tmp_path / "x.mms").exists()


def test_from_arrow_other_refusals(tmp_path):
    repeated = pa.Table.from_arrays([pa.array(["x"]), pa.array([1.0]), pa.array([2.0])],
                                    names=["smiles", "v", "v"])  # fmt: skip
    with pytest.raises(ValueError, match=r"repeated: \['v'\]"):
        RecordStore.from_arrow(tmp_path / "x.mms", repeated)
    with pytest.raises(KeyError, match="no column 'nope'"):
        RecordStore.from_arrow(tmp_path / "x.mms", pa.table({"s": ["x"]}), string_column="nope")
    with pytest.raises(TypeError, match="from_arrow takes"):
        RecordStore.from_arrow(tmp_path / "x.mms", [("C", 1.0)])
    (tmp_path / "junk").write_bytes(b"not arrow at all")
    with pytest.raises(ValueError, match="neither an Arrow IPC file"):
        RecordStore.from_arrow(tmp_path / "x.mms", tmp_path / "junk")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no Parquet files"):
        RecordStore.from_arrow(tmp_path / "x.mms", tmp_path / "empty")
    table = pa.table({"smiles": ["x"], "v": [1.0]})
    RecordStore.from_arrow(tmp_path / "x.mms", table).close()
    with pytest.raises(FileExistsError):
        RecordStore.from_arrow(tmp_path / "x.mms", table)
    RecordStore.from_arrow(tmp_path / "x.mms", table, overwrite=True).close()


# -- export to files -----------------------------------------------------------------------


def test_export_arrow_file_maps_with_no_copy_and_round_trips(special, tmp_path):
    path, strings, values = special
    out = tmp_path / "out.arrow"
    steps = []
    assert arrow.export_arrow(path, out, batch_rows=4, progress=steps.append) == out
    assert steps == [4, 4, 1]
    assert out.read_bytes()[:6] == b"ARROW1"
    allocated = pa.total_allocated_bytes()
    table = pa.ipc.open_file(pa.memory_map(str(out))).read_all()  # zero copy: mapped
    assert pa.total_allocated_bytes() == allocated
    table.validate(full=True)
    assert table.column("smiles").to_pylist() == strings
    with RecordStore.from_arrow(tmp_path / "back.mms", out) as back:
        _assert_same(back, strings, values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.mms", "out.arrow", "special.mms"]


def test_export_arrow_stream_is_what_hugging_face_datasets_maps(special, tmp_path):
    path, strings, values = special
    out = tmp_path / "out.arrow"
    with RecordStore.open(path) as store:
        arrow.export_arrow(store, out, stream=True)
    # datasets.table._memory_mapped_record_batch_reader_from_file, as Dataset.from_file does
    table = pa.ipc.open_stream(pa.memory_map(str(out))).read_all()
    assert table.column("smiles").to_pylist() == strings
    with RecordStore.from_arrow(tmp_path / "back.mms", out) as back:
        _assert_same(back, strings, values)
    try:
        import datasets
    except ImportError:
        return
    assert datasets.Dataset.from_file(str(out))["smiles"] == strings


def test_polars_reads_an_exported_file(filled, tmp_path):
    pl = pytest.importorskip("polars")
    arrow.export_arrow(filled, tmp_path / "f.arrow")
    frame = pl.read_ipc(tmp_path / "f.arrow")
    assert frame.height == 100 and frame["smiles"][5] == smiles_of(5)
    arrow.export_arrow(filled, tmp_path / "s.arrow", stream=True)
    assert pl.read_ipc_stream(tmp_path / "s.arrow").equals(frame)


def test_export_parquet_shards_round_trip(special, filled, tmp_path):
    import pyarrow.dataset as ds

    out = tmp_path / "shards"
    steps = []
    arrow.export_parquet(filled, out, shard_rows=7, batch_rows=5, progress=steps.append)
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"part-{k:05d}.parquet" for k in range(15)]
    assert sum(steps) == 100 and max(steps) == 5
    assert pq.ParquetFile(out / "part-00000.parquet").metadata.num_rows == 7
    assert pq.ParquetFile(out / "part-00014.parquet").metadata.num_rows == 2
    assert ds.dataset(out).count_rows() == 100
    with RecordStore.open(filled) as store:
        expected = _contents(store)
    with RecordStore.from_arrow(tmp_path / "back.mms", out) as back:
        _assert_same(back, *expected)
    path, strings, values = special
    arrow.export_parquet(path, tmp_path / "special", shard_rows=4)
    with RecordStore.from_arrow(tmp_path / "special.back.mms", tmp_path / "special") as back:
        _assert_same(back, strings, values)


def test_export_parquet_of_an_empty_store_keeps_the_schema(tmp_path):
    RecordStore.create(tmp_path / "e.mms", FIELDS).close()
    arrow.export_parquet(tmp_path / "e.mms", tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["part-00000.parquet"]
    with RecordStore.from_arrow(tmp_path / "back.mms", tmp_path / "out") as back:
        assert len(back) == 0 and back.fields == FIELDS


def test_shard_names_sort_in_record_order_past_99999_shards():
    names = [f"part-{k:05d}.parquet" for k in (99_999, 100_000, 2)]
    assert sorted(names, key=lambda name: natural_key(Path(name))) == [
        "part-00002.parquet",
        "part-99999.parquet",
        "part-100000.parquet",
    ]


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_an_interrupted_export_leaves_nothing(filled, tmp_path, fmt):
    def interrupt(rows: int) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "out"
    before = sorted(os.listdir(tmp_path))
    export = arrow.export_parquet if fmt == "parquet" else arrow.export_arrow
    with pytest.raises(KeyboardInterrupt):
        export(filled, out, batch_rows=10, progress=interrupt)
    assert sorted(os.listdir(tmp_path)) == before  # no output, no temporary file


def test_export_refuses_to_replace_unless_asked(filled, tmp_path):
    out = tmp_path / "out.arrow"
    out.write_text("precious")
    with pytest.raises(FileExistsError, match="exists"):
        arrow.export_arrow(filled, out)
    assert out.read_text() == "precious"
    arrow.export_arrow(filled, out, overwrite=True)
    assert pa.ipc.open_file(str(out)).read_all().num_rows == 100
    with pytest.raises(ValueError, match="is the store being exported"):
        arrow.export_arrow(filled, filled, overwrite=True)
    with RecordStore.open(filled) as store:
        assert len(store) == 100
    # a directory of shards is replaced by a file and back, but never a directory of other things
    shards = tmp_path / "shards"
    arrow.export_parquet(filled, shards, shard_rows=50)
    with pytest.raises(FileExistsError):
        arrow.export_parquet(filled, shards)
    arrow.export_parquet(filled, shards, shard_rows=25, overwrite=True)
    assert len(list(shards.iterdir())) == 4
    arrow.export_arrow(filled, shards, overwrite=True)
    assert shards.is_file()
    arrow.export_parquet(filled, shards, overwrite=True)
    assert shards.is_dir()
    (shards / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"more than Parquet shards \(notes.txt\)"):
        arrow.export_parquet(filled, shards, overwrite=True)
    assert (shards / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
