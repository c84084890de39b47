"""Benchmark: the QM9 task in the RecordStore and in the tools practitioners use, one run.

    python bench/bench_peers.py                   # all of QM9 (130,831 records x 19 fields)
    python bench/bench_peers.py --limit 20000 --rounds 3     # a quick look
    python bench/bench_peers.py --peers store,arrow          # some peers only

Every peer (``mmlab.data.peers``) holds the same records: build (columns in memory to durable
files), double U0 + durable, a random get of a full record, 1,024 random records, open. Each
operation is timed by ``mmlab.bench.compare``: every peer once per round, rounds interleaved
in rotating order, so a slow spell of this shared machine slows all of them alike; the table
gives medians with their interquartile range, and each ratio is taken round by round.

Ratios come first, with issue 14's three targets for the store, each PASS or MISS in this run:
1. ``RecordStore.from_columns`` builds QM9 at least as fast as writing it as an Arrow IPC file;
2. ``store.take`` of 1,024 random records at least as fast as Arrow's ``Table.take``, both
   returning a list of Python str and an (n, 19) float64 array;
3. ``store[i]`` the fastest random get of a full record of all the peers.
Before timing, every peer's get, take and double are checked against the source columns.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mmlab.data import peers
from mmlab.instruments.compare import compare
from mmlab.instruments.spread import Spread
from mmlab.instruments.stats import _num

OPS = ("build", "double", "get", "take", "open")
HEADS = {
    "build": "build",
    "double": "double U0 + durable",
    "get": "random get",
    "take": "{batch:,} random records",
    "open": "open",
}
UNITS = {"build": ("ms", 1e3), "double": ("ms", 1e3), "get": ("µs", 1e6), "take": ("ms", 1e3),
         "open": ("µs", 1e6)}  # fmt: skip
WIDTH = 34  # the peers' names
CELL = 27


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    for suffix in ("-journal", "-wal", "-shm", "-lock"):  # SQLite's and LMDB's side files
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def check(kinds, paths, smiles, values) -> None:
    """Every peer gives the source's records for get and take, and doubles U0 exactly."""
    n, u0 = len(smiles), peers.FIELDS.index("U0")
    index = np.random.default_rng(7).integers(-n, n, size=257).tolist()
    for kind in kinds:
        with peers.open_peer(kind, paths[kind]) as peer:
            for i in index[:64]:
                s, v = peer.get(i)
                assert s == smiles[i] and np.array_equal(v, values[i], equal_nan=True), kind
            s, v = peer.take(index)
            assert s == [smiles[i] for i in index], kind
            assert np.array_equal(v, values[index], equal_nan=True), kind
    # Doubling on copies built for it, so that the timed peers keep the source's values.
    for kind in kinds:
        path = paths[kind].with_name(paths[kind].name + "-check")
        peers.build(kind, path, smiles, values)
        with peers.open_peer(kind, path, writable=True) as peer:
            peer.double("U0")
        with peers.open_peer(kind, path) as peer:
            _, v = peer.take(range(n))
        assert np.array_equal(v[:, u0], 2 * values[:, u0], equal_nan=True), kind
        assert np.array_equal(np.delete(v, u0, 1), np.delete(values, u0, 1), equal_nan=True)
        remove(path)


def run(kinds, work: Path, smiles, values, rounds: int, gets: int, batch: int, takes: int):
    """One ``BenchResult`` per operation, every peer in each."""
    n = len(smiles)
    paths = {kind: work / f"qm9-{kind}" for kind in kinds}
    for kind in kinds:
        peers.build(kind, paths[kind], smiles, values)
    check(kinds, paths, smiles, values)
    results = {}

    built = {kind: work / f"build-{kind}" for kind in kinds}
    results["build"] = compare(
        {kind: lambda k=kind: peers.build(k, built[k], smiles, values) for kind in kinds},
        rounds,
        setup=lambda kind: (remove(built[kind]), gc.collect()),
        title="build",
    )
    for kind in kinds:
        remove(built[kind])

    rng = np.random.default_rng(1)
    index = rng.integers(0, n, size=gets).tolist()
    batches = [rng.integers(0, n, size=batch) for _ in range(takes)]
    handles = {kind: peers.open_peer(kind, paths[kind]) for kind in kinds}

    def gets_of(peer):
        get = peer.get

        def run_gets():
            for i in index:
                get(i)

        return run_gets

    def takes_of(peer):
        take = peer.take

        def run_takes():
            for b in batches:
                take(b)

        return run_takes

    results["get"] = compare({k: gets_of(h) for k, h in handles.items()}, rounds, title="get")
    results["take"] = compare({k: takes_of(h) for k, h in handles.items()}, rounds, title="take")
    for handle in handles.values():
        handle.close()

    writers = {kind: peers.open_peer(kind, paths[kind], writable=True) for kind in kinds}
    results["double"] = compare(
        {kind: lambda w=w: w.double("U0") for kind, w in writers.items()},
        rounds,
        setup=lambda kind: gc.collect(),
        title="double",
    )
    for writer in writers.values():
        writer.close()

    opened: dict = {}

    def close_opened(kind):
        if kind in opened:
            opened.pop(kind).close()

    results["open"] = compare(
        {
            kind: lambda k=kind: opened.__setitem__(k, peers.open_peer(k, paths[k]))
            for kind in kinds
        },
        max(rounds, 21),
        setup=close_opened,
        title="open",
    )
    for kind in list(opened):
        close_opened(kind)
    per_call = {"get": gets, "take": takes}
    return results, per_call


def ratio(results, op: str, a: str, b: str) -> Spread:
    """``a``'s speed as a multiple of ``b``'s in ``op``, round by round (> 1: ``a`` faster)."""
    return results[op].relative(a, b)


def verdict(spread: Spread) -> str:
    clear = spread.side(1.0)
    shown = spread.text(".2f", "x", than=1.0)
    word = "PASS" if spread.median >= 1 else "MISS"
    how = {1: "clearly", -1: "clearly not", 0: "not clearly"}[clear]
    return f"{word} {shown} ({how}, {spread.count_above(1.0)} of {len(spread.samples)} rounds)"


def report(kinds, results, per_call, n: int, fields: int, rounds: int, batch: int) -> None:
    title = {kind: peers.PEERS[kind].title for kind in kinds}
    print(
        f"QM9: {n:,} records x {fields} fields; medians of interleaved rounds ({rounds}; "
        f"{max(rounds, 21)} for open), [interquartile range]; a timed call makes "
        f"{per_call['get']:,} random gets or {per_call['take']} takes, shown per one"
    )
    if "store" in kinds:
        print("\nissue 14's targets, in this run (ratio = store's speed / the other's):")
        if "arrow" in kinds:
            print(f"1. build: from_columns vs Arrow IPC write     "
                  f"{verdict(ratio(results, 'build', 'store', 'arrow'))}")  # fmt: skip
            print(f"2. {batch:,} random records: take vs Table.take  "
                  f"{verdict(ratio(results, 'take', 'store', 'arrow'))}")  # fmt: skip
        others = [k for k in kinds if k != "store"]
        if others:
            closest = min(others, key=lambda k: results["get"][k].seconds.median)
            get_ratio = ratio(results, "get", "store", closest)
            print(f"3. random get: store[i] vs the next fastest ({title[closest]})  "
                  f"{verdict(get_ratio)}")  # fmt: skip
            if get_ratio.median < 1 and peers.PEERS[closest].__dict__.get("rows"):
                twice = ratio(results, "double", "store", closest).median
                print(
                    f"   (why: that array holds a record's {fields} values in one row of "
                    f"{8 * fields} bytes, the store in {fields} columns, so a get reads "
                    f"{fields} cache lines in {fields} pages; the columns are what make "
                    f"the store's doubling of U0 {twice:.3g}x as fast as that array's)"
                )
        print("\nthe store's speed as a multiple of each peer's (> 1: the store is faster):")
        print(" " * WIDTH + "".join(f"{HEADS[op].format(batch=batch):>{CELL}}" for op in OPS))
        for kind in others:
            cells = [ratio(results, op, "store", kind).text(".3g", "x", than=1.0) for op in OPS]
            print(f"{title[kind]:{WIDTH}}" + "".join(f"{c:>{CELL}}" for c in cells))
    print("\ntimes (median [IQR]):")
    heads = [f"{HEADS[op].format(batch=batch)} ({UNITS[op][0]})" for op in OPS]
    print(" " * WIDTH + "".join(f"{h:>{CELL}}" for h in heads))
    for kind in kinds:
        cells = []
        for op in OPS:
            scale = UNITS[op][1] / per_call.get(op, 1)
            s = results[op][kind].seconds
            cells.append(f"{_num(s.median * scale)} [{_num(s.q1 * scale)}–{_num(s.q3 * scale)}]")
        print(f"{title[kind]:{WIDTH}}" + "".join(f"{c:>{CELL}}" for c in cells))
    print("\nwhat each peer does:")
    for kind in kinds:
        print(f"  {title[kind]}")
        for op, text in peers.PEERS[kind].how.items():
            print(f"    {op:7} {text}")
    print(
        "  Every get returns (str, float64 array of the 19 fields); every take a list of str "
        f"and a ({batch:,}, 19) float64 array; build starts from a list of str and an "
        "(n, 19) float64 array in memory and ends with the data durable (fsync)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="QM9 records (all by default)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--gets", type=int, default=5000, help="random gets per timed call")
    parser.add_argument("--batch", type=int, default=1024, help="records per take")
    parser.add_argument("--takes", type=int, default=10, help="takes per timed call")
    parser.add_argument("--peers", default=",".join(peers.PEERS), help="comma-separated kinds")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.peers.split(",") if k.strip()]
    unknown = set(kinds) - set(peers.PEERS)
    if unknown:
        parser.error(f"unknown peers {sorted(unknown)}; choose from {list(peers.PEERS)}")
    smiles, values = peers.qm9_columns(args.limit)
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent.parent) as tmp:
        results, per_call = run(
            kinds, Path(tmp), smiles, values, args.rounds, args.gets, args.batch, args.takes
        )
    report(kinds, results, per_call, len(smiles), values.shape[1], args.rounds, args.batch)


if __name__ == "__main__":
    main()
