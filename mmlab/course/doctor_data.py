"""What notebooks 04 to 06 (read() against mmap, the blog's QM9 example, sharing between
processes) will show on this machine, section by section, from ``mmlab.machine``'s facts;
``mmlab.doctor`` gathers it."""

from __future__ import annotations

from mmlab.course.advice import (
    CLEAR,
    DIFFERENT,
    N04_FILE,
    NOT_SHOWN,
    UNKNOWN,
    _cold,
    _Facts,
    _memory_for,
    _ms,
    _residency,
    _Section,
    _storage_counter,
)
from mmlab.instruments.facts import format_size as _size

__all__ = ["notebook_04", "notebook_05", "notebook_06"]


def notebook_04(f: _Facts) -> list[_Section]:
    race = _Section("04", "1-2", "one race, warm, against the memory-copy rate")
    # Not the probe's one-off copy rate: a few 32 MiB copies catch a noisy moment, and the
    # race measures its own reference in the same rounds as the methods.
    race.add(
        CLEAR,
        "the race times its own memory copy in every round and gives each method's speed "
        "against it, so a slow spell of this machine cancels out",
    )
    if f("cpus_usable") == 1:
        race.add(DIFFERENT, "one usable CPU: anything else running slows the race", "cpus_usable")
    _memory_for(
        race,
        f,
        3 * N04_FILE,
        "at full size, the 256 MiB file may not stay cached between runs",
        DIFFERENT,
    )
    thp = f("thp_enabled")
    if thp is not None:
        race.add(
            CLEAR,
            f"transparent huge pages are '{thp}': numpy asks for them (madvise) for its large "
            "arrays, so the memory copy's arrays may sit in 2 MiB pages; section 4 prints how "
            "many do",
            "thp_enabled",
        )
    sweep = _Section("04", "3-5", "block size, order and cache state")
    if _cold(sweep, f, "bench warns and the 'cold' rows repeat the warm ones"):
        sweep.add(CLEAR, "eviction works here: the cold rows read from storage", "eviction_works")
        ra = f("read_ahead_kb")
        if ra is not None:
            sweep.add(
                CLEAR,
                f"read_ahead_kb is {ra}: cold sequential reads, by read() or mmap, fetch "
                f"{_size(ra * 1024)} ahead, and a cold fault on a mapping reads around it",
                "read_ahead_kb",
            )
        _storage_counter(sweep, f)
    folios = f("large_folios")
    if folios is not None:
        sweep.add(
            CLEAR,
            f"large folios: {'yes' if folios else 'no'}: "
            + (
                "one warm fault can map a whole 2 MiB folio; section 4 prints pages per fault"
                if folios
                else "a warm fault maps fault-around's window (16 pages by default)"
            ),
            "large_folios",
        )
    return [race, sweep]


_APPROX = ", approximate until 05 caches PyG's SMILES"


def notebook_05(f: _Facts) -> list[_Section]:
    load = _Section("05", "1", "load QM9 the blog's way: __file__, InMemoryDataset, y.item()")
    load.add(CLEAR, "depends on no machine setting")
    run = _Section("05", "2", "the blog's program on a scaled-down file, extrapolated")
    flush = _Section("05", "3", "what a flush after every record costs")
    fs = f("filesystem")
    for section in (run, flush):
        if fs in ("tmpfs", "ramfs"):
            section.add(
                DIFFERENT,
                f"{fs}: msync writes nothing to storage, so flushes are cheap and nothing waits: "
                "wall time stays close to CPU time and flushing once gains far less",
                "filesystem",
            )
        elif fs is not None:
            section.add(
                CLEAR,
                f"{fs}: every flush writes the page it changed and waits for it",
                "filesystem",
            )
    cost = f("flush")
    if cost and fs not in ("tmpfs", "ramfs"):
        from mmlab.data import blogsize

        # the scaled run's flushes follow from PyG's SMILES, which 05 computes once and caches
        n, flushes = blogsize.FULL_RUN_MOLECULES, blogsize.scaled_flushes()
        took = (
            f"one write and flush() of a mapping took {_ms(cost['median'])} here "
            f"(median of {cost['rounds']})"
        )
        approx = flushes is None  # before 05 cached PyG's SMILES: QM9's typical count
        flushes = n * blogsize.APPROX_FLUSHES_PER_MOLECULE if approx else flushes
        total = flushes * cost["median"]
        run.add(
            DIFFERENT if total > 120 else CLEAR,
            f"{took}: §2's full-size run ({n:,} molecules, {'about ' if approx else ''}"
            f"{flushes / n:.0f} flushes each{_APPROX if approx else ''}) "
            f"takes about {total:,.0f} s",
            "flush",
        )
    expire, folios = f("dirty_expire_centisecs"), f("large_folios")
    if expire is not None:
        flush.add(
            CLEAR,
            f"dirty_expire_centisecs is {expire:,}: unflushed dirty pages reach storage by "
            f"themselves after about {expire / 100:,.0f} s",
            "dirty_expire_centisecs",
        )
    if folios is not None:
        flush.add(
            CLEAR,
            "large folios: "
            + ("yes: a flush may rewrite a folio" if folios else "no: a flush rewrites one page"),
            "large_folios",
        )
    store = _Section("05", "4", "double U0 with RecordStore, cold")
    if _cold(store, f, "the store starts warm and every section shows as cached"):
        store.add(
            CLEAR, "eviction works here: only U0's pages come back into the cache", "eviction_works"
        )
    _residency(store, f)
    has = f("cachestat")
    if has is False:
        store.add(
            DIFFERENT,
            f"no cachestat ({f.why('cachestat')}): the dirty-page count prints 'unknown'",
            "cachestat",
        )
    elif has is None:
        store.add(UNKNOWN, f"cachestat: {f.why('cachestat')}", "cachestat")
    rest = _Section("05", "5-6", "verify every value; separate the causes")
    if cost and fs not in ("tmpfs", "ramfs"):
        total = blogsize.COMPARE_FLUSHES * cost["median"]
        rest.add(
            DIFFERENT if total > 120 else CLEAR,
            f"§6's flush-every arm flushes {blogsize.COMPARE_FLUSHES:,} times at full size: "
            f"about {total:,.0f} s at this machine's {_ms(cost['median'])} per flush",
            "flush",
        )
    else:
        rest.add(CLEAR, "flushes are cheap or unmeasured here: §6's times are this machine's")
    return [load, run, flush, store, rest]


def notebook_06(f: _Facts) -> list[_Section]:
    readers = _Section("06", "2", "readers join and leave: RSS, USS, PSS, the page cache")
    workers = _Section("06", "3", "DataLoader workers: a Python list, NumPy arrays, the store")
    fs = f("filesystem")
    if fs in ("tmpfs", "ramfs"):
        readers.add(
            DIFFERENT,
            f"{fs}: the store's pages are shared memory (Pss_Shmem, not Pss_File) and cannot be "
            "evicted, so the page cache is full before the first reader joins",
            "filesystem",
        )
    elif f("eviction_works") is False:
        readers.add(
            DIFFERENT,
            "eviction does not work here: the store's pages are cached before the first reader "
            f"joins ({f.why('eviction_works')})",
            "eviction_works",
        )
    elif fs is not None:
        readers.add(CLEAR, f"{fs}: the store's pages are page cache (Pss_File)", "filesystem")
    ra = f("read_ahead_kb")
    if ra is not None:
        readers.add(
            CLEAR,
            f"read_ahead_kb is {ra:,}: the page cache may hold about {_size(ra * 1024)} per "
            "sequential stream of the store that no reader mapped (read ahead, never faulted)",
            "read_ahead_kb",
        )
    usable, said, keys = f.usable_memory()
    if usable is not None and usable >= 2**30:
        workers.add(CLEAR, f"{said}: room for the store and several processes", *keys)
    cpus, quota = f("cpus_usable"), f("cgroup_cpu_limit")
    if cpus is not None:
        workers.add(
            CLEAR,
            f"the workers may use {cpus} CPUs (affinity), cgroup CPU quota {quota or 'unknown'}: "
            "the fewer decides the best epoch the workers can reach",
            "cpus_usable",
            "cgroup_cpu_limit",
        )
    for s in (readers, workers):
        if f("smaps_rollup") is False:
            s.add(NOT_SHOWN, f"no USS or PSS: {f.why('smaps_rollup')}", "smaps_rollup")
        elif f("smaps_rollup") is True:
            s.add(CLEAR, "smaps_rollup is readable: USS and PSS are measured", "smaps_rollup")
        _memory_for(
            s,
            f,
            2**30,
            "the store (about 100 MB), several Python processes and the notebook share it; "
            "processes may be killed or the store's pages reclaimed",
            DIFFERENT,
        )
    return [readers, workers]
