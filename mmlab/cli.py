"""The ``mmlab`` command: inspect a store, read or double records (in place, or with Dask
across workers), export it to Arrow or Parquet, build QM9, run the demo, and ``doctor``: what
on this machine decides the numbers the labs show."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmlab.instruments.measure import Measurement, format_count, measure
from mmlab.store import RecordStore, StoreError

__all__ = ["main"]

_CHUNK = 1 << 20  # records per progress step when doubling


def _info(args: argparse.Namespace) -> None:
    with RecordStore.open(args.store) as store:
        print(repr(store))
        for name, (offset, size) in store.sections.items():
            print(f"  {name:<12} offset {offset:>14,}  size {size:>14,}")


def _get(args: argparse.Namespace) -> None:
    with RecordStore.open(args.store) as store:
        record = store[args.index]
        print(record.smiles)
        for name, value in zip(store.fields, record.values, strict=True):
            print(f"  {name} = {float(value)!r}")


def _double(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    with RecordStore.open(args.store, "r+") as store:
        column = store.column(args.field)
        with tqdm(
            total=len(column), unit="rec", disable=None, desc=f"doubling {args.field}"
        ) as bar:
            for start in range(0, len(column), _CHUNK):
                part = column[start : start + _CHUNK]
                np.multiply(part, 2, out=part)
                bar.update(len(part))
        store.flush()
        print(f"doubled {args.field} in {len(column):,} records of {store.path}")


def _export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mmlab.store import arrow  # without pyarrow: an ImportError saying what to install

    if args.shard_rows is not None and args.format != "parquet":
        raise ValueError("--shard-rows applies to --format parquet only")
    shard_rows = arrow.DEFAULT_SHARD_ROWS if args.shard_rows is None else args.shard_rows
    stream = args.format == "arrow-stream"
    with RecordStore.open(args.store) as store:
        n = len(store)
        try:
            with tqdm(total=n, unit="rec", disable=None, desc=f"export {args.format}") as bar:
                if args.format == "parquet":
                    out = arrow.export_parquet(
                        store,
                        args.out,
                        shard_rows=shard_rows,
                        overwrite=args.overwrite,
                        progress=bar.update,
                    )
                else:
                    out = arrow.export_arrow(
                        store,
                        args.out,
                        stream=stream,
                        overwrite=args.overwrite,
                        progress=bar.update,
                    )
        except KeyboardInterrupt:
            print(f"mmlab export: interrupted; nothing was written to {args.out}", file=sys.stderr)
            return 130
    if args.format == "parquet":
        what = f"{max(1, -(-n // shard_rows)):,} Parquet shard(s) of up to {shard_rows:,} records"
    else:
        what = "one Arrow IPC " + ("stream" if stream else "file")
    print(f"exported {n:,} records of {store.path} to {out}: {what}")
    return 0


def _double_distributed(args: argparse.Namespace) -> int:
    from mmlab.data import scale  # without Dask: an ImportError saying what to install

    try:
        run = scale.double_distributed(
            args.store,
            args.out,
            field=args.field,
            factor=args.factor,
            scheduler=args.scheduler,
            n_workers=args.workers,
            threads_per_worker=args.threads_per_worker,
            shard_rows=args.shard_rows,
            parquet=args.parquet,
            overwrite=args.overwrite,
            progress=True,
        )
    except KeyboardInterrupt:
        print(
            f"mmlab double-distributed: interrupted; nothing was written to {args.out}",
            file=sys.stderr,
        )
        return 130
    print(run)
    return 0 if run.ok else 1


def _build_qm9(args: argparse.Namespace) -> None:
    from mmlab import qm9

    with qm9.to_store(args.out, source=args.source, root=args.root, limit=args.limit) as store:
        print(repr(store))


def _timed(fn) -> Measurement:
    with measure() as m:
        fn()
    return m


def _demo(args: argparse.Namespace) -> None:
    """The blog's example end to end: QM9 into both layouts, U0 doubled, all of it checked."""
    from mmlab import qm9, seedformat

    u0 = qm9.FIELDS.index("U0")
    molecules = list(qm9.records(args.source, args.root, args.limit))
    if not molecules:
        raise ValueError("no molecules to work on (is --limit 0?)")
    source_u0 = np.array([y[u0] for _, y in molecules])
    print(f"QM9: {len(molecules):,} molecules from source {args.source!r}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        blog_path, store_path = Path(work) / "blog.bin", Path(work) / "qm9.mms"
        blog_records = [(smiles, y[u0]) for smiles, y in molecules]
        blog_build = _timed(
            lambda: seedformat.write(
                blog_path,
                blog_records,
                size=max(seedformat.BLOG_SIZE, seedformat.data_size(blog_records)),
                flush_every=args.blog_flush_every,
            )
        )
        blog_double = _timed(
            lambda: seedformat.double_in_place(blog_path, flush_every=args.blog_flush_every)
        )

        def build():
            with RecordStore.create(store_path, qm9.FIELDS, capacity=len(molecules)) as store:
                store.extend(molecules)

        store_build = _timed(build)

        def double(store: RecordStore) -> None:
            column = store.column("U0")
            column *= 2
            store.flush()

        with RecordStore.open(store_path, "r+") as store:
            store_double = _timed(lambda: double(store))

        blog_u0 = np.array([value for _, value in seedformat.scan(blog_path)])
        with RecordStore.open(store_path) as store:
            every = np.array([record.values for record in store])
            expected = np.array([y for _, y in molecules])
            expected[:, u0] *= 2
            smiles_ok = [record.smiles for record in store] == [s for s, _ in molecules]
            if not (np.array_equal(every, expected) and smiles_ok):
                raise ValueError("the store does not hold the source's values after doubling U0")
        if not np.array_equal(blog_u0, 2 * source_u0):
            raise ValueError("the blog layout does not hold twice the source's U0")
    flushes = "every record" if args.blog_flush_every == 1 else f"every {args.blog_flush_every}"
    print("verified: every value in both files equals the source (U0 doubled, the rest intact)")
    print(f"{'':12} {'blog layout':>14} {'RecordStore':>14} {'speed-up':>9}   minor page faults")
    steps = (("write", blog_build, store_build), ("double U0", blog_double, store_double))
    for name, blog, ours in steps:
        print(
            f"{name:12} {blog.wall_s * 1e3:>11.1f} ms {ours.wall_s * 1e3:>11.2f} ms "
            f"{blog.wall_s / ours.wall_s:>8,.0f}x   "
            f"{format_count(blog.minor_faults)} blog, {format_count(ours.minor_faults)} store"
        )
    print(f"(blog layout flushes after {flushes}; the store flushes once)")


def _doctor(args: argparse.Namespace) -> int:
    import json

    if args.setup:
        from mmlab.course import setup

        checked = setup.check_setup(args.path)
        print(json.dumps(checked.to_json(), indent=2) if args.json else checked)
        return 0 if checked.ready else 1
    from mmlab import machine

    report = machine.report(args.path)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return 0


def _shard_rows_option(parser: argparse.ArgumentParser, default: int | None, help: str) -> None:
    parser.add_argument("--shard-rows", type=int, default=default, metavar="N", help=help)


def _qm9_options(parser: argparse.ArgumentParser, source: str) -> None:
    parser.add_argument("--source", choices=("auto", "pyg", "qm9pack"), default=source)
    parser.add_argument("--root", help="PyG's QM9 folder, for --source pyg or auto")
    parser.add_argument("--limit", type=int, help="only the first N molecules")


def _parser() -> argparse.ArgumentParser:
    from mmlab.data.scale import DEFAULT_SHARD_ROWS  # light: Dask is imported when used
    from mmlab.store.publish import DEFAULT_SHARD_ROWS as EXPORT_SHARD_ROWS  # = arrow's

    parser = argparse.ArgumentParser(prog="mmlab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser("info", help="show a store's records, fields and sections")
    info.add_argument("store")
    info.set_defaults(run=_info)
    get = commands.add_parser("get", help="print one record (negative indices count from the end)")
    get.add_argument("store")
    get.add_argument("index", type=int)
    get.set_defaults(run=_get)
    double = commands.add_parser("double", help="double one field of every record, in place")
    double.add_argument("store")
    double.add_argument("field")
    double.set_defaults(run=_double)
    export = commands.add_parser(
        "export",
        help="write a store as an Arrow IPC file or stream, or as Parquet shards "
        "(for pandas, Polars, DuckDB, Hugging Face datasets, Dask, Spark, Ray)",
    )
    export.add_argument("store")
    export.add_argument("out", help="the file (arrow, arrow-stream) or directory (parquet)")
    export.add_argument(
        "--format",
        choices=("arrow", "arrow-stream", "parquet"),
        default="arrow",
        help="arrow: one uncompressed IPC file (pyarrow, polars.read_ipc, memory-mapped); "
        "arrow-stream: the IPC stream format (datasets.Dataset.from_file); parquet: a "
        "directory of shards part-00000.parquet, ... (default: arrow)",
    )
    _shard_rows_option(export, None, f"records per Parquet shard ({EXPORT_SHARD_ROWS:,})")
    export.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    export.set_defaults(run=_export)
    distributed = commands.add_parser(
        "double-distributed",
        help="multiply one field by a factor with Dask across workers (a LocalCluster here, "
        "or a running cluster): the store as Parquet shards in, new shards out, verified",
    )
    distributed.add_argument("store")
    distributed.add_argument("out", help="the directory of output Parquet shards")
    distributed.add_argument("--field", default="U0", help="the field to multiply (U0)")
    distributed.add_argument("--factor", type=float, default=2.0, help="the factor (2)")
    distributed.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="a running Dask scheduler, e.g. tcp://host:8786; its workers must reach OUT "
        "(default: start a LocalCluster of --workers processes here)",
    )
    distributed.add_argument(
        "--workers", type=int, default=2, metavar="N", help="LocalCluster worker processes (2)"
    )
    distributed.add_argument(
        "--threads-per-worker", type=int, default=1, metavar="N", help="threads each (1)"
    )
    _shard_rows_option(
        distributed,
        DEFAULT_SHARD_ROWS,
        f"records per Parquet shard, one task each ({DEFAULT_SHARD_ROWS:,})",
    )
    distributed.add_argument(
        "--parquet",
        metavar="DIR",
        help="keep the store's input shards there (an existing DIR is used as it is); "
        "default: a temporary folder beside OUT",
    )
    distributed.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    distributed.set_defaults(run=_double_distributed)
    build = commands.add_parser("build-qm9", help="write QM9 (19 targets) into a store")
    build.add_argument("out")
    _qm9_options(build, "auto")
    build.set_defaults(run=_build_qm9)
    demo = commands.add_parser("demo", help="run the blog's QM9 example end to end, measured")
    _qm9_options(demo, "qm9pack")
    demo.add_argument(
        "--blog-flush-every", type=int, default=1, help="the blog flushes after every record (1)"
    )
    demo.add_argument("--workdir", help="where to put the two files (default: a temp folder)")
    demo.set_defaults(run=_demo)
    doctor = commands.add_parser(
        "doctor", help="what on this machine decides the numbers each lab shows, and why"
    )
    doctor.add_argument(
        "path",
        nargs="?",
        help="a file or folder whose file system to examine (default: notebooks/data, "
        "else the current directory); a 32 MiB probe file is written there and removed",
    )
    doctor.add_argument("--json", action="store_true", help="every fact as JSON, with sources")
    doctor.add_argument(
        "--setup",
        action="store_true",
        help="is this machine ready to run every notebook, and what to do if not (exit code "
        "1 when one is not ready); PATH is then the notebooks folder",
    )
    doctor.set_defaults(run=_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code = args.run(args)
    except (StoreError, OSError, IndexError, KeyError, ValueError, ImportError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"mmlab {args.command}: error: {message}", file=sys.stderr)
        return 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
