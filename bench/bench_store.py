"""Benchmark: the record store beside the blog's layout, measured in one run.

    python bench/bench_store.py            # 130,831 records of 19 fields, as QM9
    make bench ARGS="--records 20000"      # smaller, for a quick look
    python bench/bench_store.py --source qm9 --only bulk   # QM9 itself; the bulk APIs alone

The blog's loops flush after every record; they are timed on a subset and scaled to the full
count (their cost is linear in the records). Every ratio compares numbers from this one run.
Targets (from the issue): doubling plus flush >= 2,000x faster than the blog's loop; building
>= 100x faster; a random get < 1 us; opening a 1 GiB store < 5 ms with RSS growing < 2 MiB.
The bulk APIs are timed against the store's own per-record paths, as medians of interleaved
rounds: building with ``from_columns`` against ``create`` + ``extend``, and a batch of 1,024
random records with ``take`` against a loop of ``store[i]``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil

from mmlab import RecordStore, seedformat

QM9_MOLECULES = 130_831
N_FIELDS = 19


def synthetic_records(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """SMILES-like strings with QM9's length spread, and 19 float64 values each."""
    rng = np.random.default_rng(seed)
    alphabet = np.array(list("CCCCCNNOOF()=#c1n2o"))
    lengths = rng.integers(1, 30, size=n)
    letters = rng.choice(alphabet, size=int(lengths.sum()))
    cuts = np.cumsum(lengths)[:-1]
    smiles = ["".join(chunk) for chunk in np.split(letters, cuts)]
    return smiles, rng.normal(size=(n, N_FIELDS))


def timed(fn, repeats: int = 1) -> float:
    """Best wall time of ``repeats`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def qm9_records() -> tuple[list[str], np.ndarray]:
    """QM9 itself, from the converted qm9pack cache (built on first use, about a minute)."""
    from mmlab.data import qm9

    with RecordStore.open(qm9._cached_qm9pack()) as store:
        return store.take(range(len(store)))


def interleaved(candidates: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median wall time of each candidate, in seconds, over rounds that run them in turn."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_bulk(work: Path, smiles, values, rounds: int, batch: int = 1024) -> list[tuple]:
    """(name, per-record way, its time, columns way, its time) for building and a batch read."""
    fields = [f"f{k}" for k in range(values.shape[1])]
    n = len(smiles)

    def by_extend():
        path = work / "by_extend.mms"
        with RecordStore.create(path, fields, capacity=n, overwrite=True) as store:
            store.extend(zip(smiles, values, strict=True))

    def by_columns():
        RecordStore.from_columns(
            work / "by_columns.mms", smiles, values, fields, overwrite=True
        ).close()

    build = interleaved({"extend": by_extend, "from_columns": by_columns}, rounds)
    rng = np.random.default_rng(2)
    with RecordStore.open(work / "by_columns.mms") as store:
        index = rng.integers(0, n, size=batch).tolist()
        loop = [store[i] for i in index]
        smiles_taken, values_taken = store.take(index)
        assert smiles_taken == [r.smiles for r in loop]  # the same records
        assert np.array_equal(values_taken, np.array([r.values for r in loop]), equal_nan=True)
        read = interleaved(
            {"loop": lambda: [store[i] for i in index], "take": lambda: store.take(index)},
            max(rounds, 21),
        )
    return [
        (f"build {n:,} records", "create+extend", build["extend"], "from_columns",
         build["from_columns"]),
        (f"{batch:,} random records", "loop store[i]", read["loop"], "take", read["take"]),
    ]  # fmt: skip


def print_bulk(rows: list[tuple], rounds: int) -> None:
    print(f"bulk APIs, medians of interleaved rounds ({rounds} for building, {max(rounds, 21)} "
          "for reading):")  # fmt: skip
    for name, slow_name, slow, fast_name, fast in rows:
        print(
            f"  {name:24} {slow_name:>14} {slow * 1e3:9.3f} ms   {fast_name:>13} "
            f"{fast * 1e3:9.3f} ms   {slow / fast:6.1f}x faster"
        )


def bench_build_and_double(work: Path, smiles, values, subset: int) -> list[tuple]:
    n = len(smiles)
    store_path = work / "store.mms"

    def build():
        with RecordStore.create(
            store_path, [f"f{k}" for k in range(N_FIELDS)], overwrite=True
        ) as s:
            s.extend(zip(smiles, values, strict=True))

    build_s = timed(build, repeats=3)

    blog_path = work / "blog.bin"
    blog_records = [(s, float(v)) for s, v in zip(smiles[:subset], values[:subset, 7], strict=True)]
    blog_build_s = timed(lambda: seedformat.write(blog_path, blog_records)) * n / subset
    blog_double_s = timed(lambda: seedformat.double_in_place(blog_path)) * n / subset

    with RecordStore.open(store_path, "r+") as store:
        column = store.column("f7")

        def double():
            column[:] *= 2
            store.flush()

        double_s = timed(double, repeats=5)
    return [
        ("build (write + flush)", build_s, blog_build_s, 100),
        ("double one field + flush", double_s, blog_double_s, 2000),
    ]


def bench_random_get(work: Path, smiles, values) -> tuple[float, float]:
    store_path = work / "store.mms"
    index = np.random.default_rng(1).integers(0, len(smiles), size=200_000).tolist()
    with RecordStore.open(store_path) as store:
        store[0]
        start = time.perf_counter()
        for i in index:
            store[i]
        get_s = (time.perf_counter() - start) / len(index)
    blog_path = work / "blog_full.bin"
    seedformat.write(blog_path, zip(smiles, values[:, 7].tolist(), strict=True), flush_every=None)
    # The blog's layout has no index: reading record i means scanning to it (half the file
    # on average); this is the time of a full scan, divided by two.
    scan_s = timed(lambda: seedformat.scan(blog_path), repeats=3) / 2
    return get_s, scan_s


def bench_open(work: Path, gib: float, smiles, values) -> tuple[int, float, int]:
    path = work / "big.mms"
    bytes_per_record = N_FIELDS * 8 + 8 + 32
    capacity = int(gib * 2**30 / bytes_per_record)
    with RecordStore.create(path, [f"f{k}" for k in range(N_FIELDS)], capacity=capacity) as s:
        n = len(smiles)
        while len(s) + n <= capacity:
            s.extend(zip(smiles, values, strict=True))
    size = path.stat().st_size
    process = psutil.Process()
    times, growth = [], []
    for _ in range(20):
        rss = process.memory_info().rss
        start = time.perf_counter()
        store = RecordStore.open(path)
        times.append(time.perf_counter() - start)
        growth.append(process.memory_info().rss - rss)
        store.close()
    return size, statistics.median(times), max(growth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=QM9_MOLECULES)
    parser.add_argument("--blog-subset", type=int, default=3000, help="records the blog loops run")
    parser.add_argument("--open-gib", type=float, default=1.0, help="size of the store to open")
    parser.add_argument(
        "--source", choices=["synthetic", "qm9"], default="synthetic",
        help="synthetic SMILES-like records (--records of them), or QM9 from the qm9pack cache",
    )  # fmt: skip
    parser.add_argument("--only", choices=["all", "bulk"], default="all", help="what to time")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the bulk APIs")
    args = parser.parse_args()
    smiles, values = qm9_records() if args.source == "qm9" else synthetic_records(args.records)
    records = len(smiles)
    subset = min(args.blog_subset, records)
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent.parent) as tmp:
        work = Path(tmp)
        bulk_rows = bench_bulk(work, smiles, values, args.rounds)
        if args.only == "all":
            rows = bench_build_and_double(work, smiles, values, subset)
            get_s, blog_get_s = bench_random_get(work, smiles, values)
            size, open_s, rss_growth = bench_open(work, args.open_gib, smiles, values)

    print(f"{records:,} records x {values.shape[1]} fields ({args.source})")
    print_bulk(bulk_rows, args.rounds)
    if args.only != "all":
        return
    print(f"blog loops timed on {subset:,} records and scaled")
    print(f"{'':28} {'RecordStore':>14} {'blog layout':>14} {'speed-up':>10} {'target':>8}")
    for name, ours, blog, target in rows:
        ok = "ok" if blog / ours >= target else "MISSED"
        print(
            f"{name:28} {ours * 1e3:>11.2f} ms {blog * 1e3:>11.0f} ms {blog / ours:>9,.0f}x "
            f"{target:>6,}x {ok}"
        )
    print(
        f"{'random get':28} {get_s * 1e6:>11.2f} us {blog_get_s * 1e3:>11.0f} ms "
        f"{blog_get_s / get_s:>9,.0f}x  < 1 us {'ok' if get_s < 1e-6 else 'MISSED'}"
    )
    print(
        f"open a {size / 2**30:.2f} GiB store: {open_s * 1e3:.3f} ms (median of 20), "
        f"RSS +{rss_growth / 2**20:.2f} MiB at most "
        f"({'ok' if open_s < 5e-3 and rss_growth < 2 * 2**20 else 'MISSED'}: < 5 ms, < 2 MiB)"
    )


if __name__ == "__main__":
    main()
