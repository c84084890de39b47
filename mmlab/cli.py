"""The ``mmlab`` command: inspect a record store, read a record, double a field in place."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

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


def _parser() -> argparse.ArgumentParser:
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (StoreError, OSError, IndexError, KeyError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"mmlab {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
