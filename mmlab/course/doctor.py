"""Per-lab advice: which notebook sections show their effect clearly on this machine, and why.

``advise(facts)`` reads the facts of ``mmlab.machine.report`` and, for each section of the
six notebooks, says whether it will show what its prose describes (``clear``), show it with
numbers that differ in a way the reason explains (``different``), not show it at all
(``not_shown``), or cannot be judged because a deciding fact is unknown (``unknown``). Every
reason names the machine fact that decides it, with its value. The sizes are the notebooks'
full-size parameters (``MMLAB_QUICK=1`` runs them smaller).

The verdicts, the checks several sections share and the HTML table are in ``mmlab.advice``.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Mapping

from mmlab.course.advice import (
    CLEAR,
    DIFFERENT,
    NOT_SHOWN,
    UNKNOWN,
    VERDICTS,
    Advice,
    _cold,
    _Facts,
    _memory_for,
    _residency,
    _Section,
    _storage_counter,
    advice_html,
)
from mmlab.instruments.facts import format_size as _size

__all__ = ["VERDICTS", "Advice", "advice_html", "advise"]

# The notebooks' full-size parameters (their first code cell) and notebooks/README.md.
N01_BLOCKS = 8 * 64 * 2**20  # 8 arrays of 64 MiB alive at once
N02_MAPPINGS = 20_000
MAPCOUNT_CAP = 300_000  # mmlab.mapcount.DEFAULT_CAP: the child stops there
N03_FILE = 2**30
N04_FILE = 256 * 2**20
DATA_BYTES = 3 * 2**29  # notebooks/data at full size: about 1.5 GiB
STRIDE_PAGES = 16  # notebook 03 section 5 touches every 16th page
QM9_RECORDS = 130_831


def _read(touch: dict) -> str:
    n = touch["storage_bytes"]
    return "an unknown amount (no /proc/self/io)" if n is None else _size(n)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


def _notebook_01(f: _Facts) -> list[_Section]:
    page = f("page_size")
    first = _Section("01", "1-3", "the parameters of mmap; a mapping in /proc/self/maps")
    spans = math.ceil(10_000 / page)
    if page == 4096:
        first.add(CLEAR, "page size 4,096 bytes: a 10,000-byte file spans 3 pages", "page_size")
    else:
        first.add(
            DIFFERENT,
            f"page size is {page:,} bytes, not the 4,096 of the text's examples: a 10,000-byte "
            f"file spans {spans} page(s) (exercise 1.2 checks against this machine)",
            "page_size",
        )
    malloc = _Section("01", "4", "when malloc gives a block its own anonymous mapping")
    thp = f("thp_enabled")
    if thp == "always":
        malloc.add(
            DIFFERENT,
            "transparent huge pages are 'always': a 2 MiB-aligned range of fresh anonymous "
            "memory comes in one fault, so touching a 1,000-page mapping takes between about "
            "500 and 1,000 faults (section 4 prints which)",
            "thp_enabled",
        )
    elif thp is None:
        malloc.add(UNKNOWN, f"transparent huge pages: {f.why('thp_enabled')}", "thp_enabled")
    else:
        malloc.add(
            CLEAR,
            f"transparent huge pages are '{thp}': fresh anonymous memory comes one page per "
            "fault, about 1,000 faults for 1,000 pages",
            "thp_enabled",
        )
    _memory_for(
        malloc,
        f,
        N01_BLOCKS + N01_BLOCKS // 2,
        f"{_size(N01_BLOCKS)} of large blocks are alive at once in a child process; the "
        "kernel may kill it",
        NOT_SHOWN,
    )
    libc = " ".join(platform.libc_ver()).strip()
    if not libc.startswith("glibc"):
        malloc.add(
            DIFFERENT,
            f"the C library is {libc or 'not glibc'}: its malloc has other rules than the "
            "glibc the text describes, and no count of mapped blocks",
        )
    elif tuple(int(x) for x in [*libc.split(), "0"][1].split(".")[:2] if x.isdigit()) < (2, 33):
        malloc.add(
            CLEAR,
            f"{libc}: no mallinfo2 (2.33+), mapped blocks are counted with mallinfo instead",
        )
    else:
        malloc.add(CLEAR, f"{libc}: mapped blocks are counted with mallinfo2")
    data = (f("rlimit_data") or {}).get("soft")
    if isinstance(data, int) and data < 2 * N01_BLOCKS:
        malloc.add(
            NOT_SHOWN,
            f"RLIMIT_DATA is {_size(data)}: the child's {_size(N01_BLOCKS)} of blocks fail to "
            "allocate",
            "rlimit_data",
        )
    path = _Section("01", "5", "one page's path: page table, page cache, file blocks")
    around, ra = f("fault_around_bytes"), f("read_ahead_kb")
    around_said = _size(around) if around else "64 KiB by default, unreadable here"
    ra_said = _size(ra * 1024) if ra is not None else f.why("read_ahead_kb")
    path.add(
        CLEAR,
        f"a fault maps neighbours up to fault_around_bytes ({around_said}) and reads ahead up "
        f"to read_ahead_kb ({ra_said}): the diagram shows how many here",
        "fault_around_bytes",
        "read_ahead_kb",
    )
    if f("eviction_works") is False:
        path.add(
            DIFFERENT,
            "the file's pages cannot be dropped here: the diagram shows them all cached, and "
            "the touches are minor faults (no read from storage)",
            "eviction_works",
        )
    sharing = _Section("01", "6-7", "MAP_SHARED vs MAP_PRIVATE; SIGSEGV and SIGBUS")
    sharing.add(CLEAR, "depends on no machine setting (Linux and a second Python process)")
    if f("cachestat") is False:
        sharing.add(
            DIFFERENT,
            "no cachestat here: dirty pages are counted from the parent's own mapping in "
            "/proc/self/smaps instead",
            "cachestat",
        )
    return [first, malloc, path, sharing]


def _notebook_02(f: _Facts) -> list[_Section]:
    page, granularity = f("page_size"), f("allocation_granularity")
    offsets = _Section("02", "1", "offsets mmap accepts and refuses")
    accepted = [o for o in (0, 100, 4096, 6000, 8192) if o % granularity == 0]
    said = f"of the offsets 0, 100, 4096, 6000, 8192 mmap accepts {accepted}"
    if granularity == 4096:
        offsets.add(CLEAR, f"granularity 4,096: {said}", "allocation_granularity")
    else:
        offsets.add(
            DIFFERENT,
            f"granularity is {granularity:,}, not the text's 4,096: {said}; exercise 2.1 "
            "checks against this machine",
            "allocation_granularity",
        )
    waste = _Section("02", "2", "space wasted in the last page")
    verdict = CLEAR if page == 4096 else DIFFERENT
    waste.add(
        verdict, f"page size {page:,}: the last page wastes at most {page - 1:,} bytes", "page_size"
    )
    layout = _Section("02", "3", "how the store aligns its sections")
    if 65536 % page == 0:
        layout.add(CLEAR, f"64 KiB sections are a whole number of {page:,}-byte pages", "page_size")
    else:
        layout.add(NOT_SHOWN, f"page size {page:,} does not divide 64 KiB", "page_size")
    ra = f("read_ahead_kb")
    if ra is not None:
        layout.add(
            CLEAR,
            f"read_ahead_kb is {ra:,}: reading one field may bring up to {_size(ra * 1024)} "
            "after it into the page cache, across section boundaries (the notebook prints how "
            "many sections that spans)",
            "read_ahead_kb",
        )
    cost = _Section("02", "4", "the cost of one mapping, small and large")
    cost.add(CLEAR, "the cost is a ratio measured in interleaved rounds", "cpus_usable")
    count = _Section("02", "5-6", "holding mappings; reaching vm.max_map_count and RLIMIT_NOFILE")
    soft = (f("rlimit_nofile") or {}).get("soft")
    if isinstance(soft, int) and soft < N02_MAPPINGS + 500:
        count.add(
            DIFFERENT,
            f"RLIMIT_NOFILE's soft limit is {soft:,}: at full size section 5 holds fewer than "
            f"{N02_MAPPINGS:,} mappings (each Python mmap keeps a file descriptor open), and "
            "says so",
            "rlimit_nofile",
        )
    most = f("max_map_count")
    if most is None:
        count.add(UNKNOWN, f"vm.max_map_count: {f.why('max_map_count')}", "max_map_count")
    elif most >= MAPCOUNT_CAP:
        count.add(
            NOT_SHOWN,
            f"vm.max_map_count is {most:,}: the child stops at {MAPCOUNT_CAP:,} VMAs, short of it, "
            "and says so",
            "max_map_count",
        )
    else:
        count.add(
            CLEAR,
            f"vm.max_map_count is {most:,}: the child splitting one mapping reaches it (ENOMEM)",
            "max_map_count",
        )
    if isinstance(most, int) and (soft == "unlimited" or isinstance(soft, int)):
        files_first = isinstance(soft, int) and soft < most
        shown = f"{soft:,}" if isinstance(soft, int) else soft
        if min(soft if isinstance(soft, int) else math.inf, most) >= MAPCOUNT_CAP:
            count.add(
                NOT_SHOWN,
                f"RLIMIT_NOFILE soft {shown} and vm.max_map_count {most:,} are both at or above "
                f"{MAPCOUNT_CAP:,}: neither limit is reached below {MAPCOUNT_CAP:,}, where the "
                "child stops and says so",
                "rlimit_nofile",
                "max_map_count",
            )
        else:
            count.add(
                CLEAR,
                f"RLIMIT_NOFILE soft {shown} is {'below' if files_first else 'above'} "
                f"vm.max_map_count {most:,}: Python's one-page mappings meet "
                f"{'EMFILE' if files_first else 'ENOMEM'} first",
                "rlimit_nofile",
            )
    return [offsets, waste, layout, cost, count]


def _notebook_03(f: _Facts) -> list[_Section]:
    page, touch, ra = f("page_size"), f("cold_touch"), f("read_ahead_kb")
    touch_facts = ("cold_touch", "read_ahead_kb")
    lazy = _Section("03", "1", "map a large file, touch almost nothing")
    if _cold(lazy, f, "no major faults, nothing read from storage"):
        _storage_counter(lazy, f)
        if touch:
            mapped = touch["pages_mapped"]
            lazy.add(
                CLEAR,
                f"one cold touch mapped {mapped} pages ({_size(mapped * page)}): RSS grows by "
                f"about {_size(10 * mapped * page)} for the 10 touches, and one cold fault read "
                f"{_read(touch)} from storage here",
                *touch_facts,
            )
    _residency(lazy, f)
    readahead = _Section("03", "2", "what one fault reads, caches and maps")
    if _cold(readahead, f, "touching page 0 finds the whole file already cached"):
        if touch and ra is not None:
            cached, at_once = touch["pages_cached"], touch["pages_cached_at_once"]
            verdict = CLEAR if cached > touch["pages_mapped"] else DIFFERENT
            readahead.add(
                verdict,
                f"read_ahead_kb is {ra}: one cold fault may read {_size(ra * 1024)}; measured "
                f"here: one touch of page 0 read {_read(touch)}, mapped "
                f"{touch['pages_mapped']} pages and left {cached:,} cached; notebook 03 "
                "section 2 explains what you will see",
                *touch_facts,
            )
            if at_once < cached:
                readahead.add(
                    CLEAR,
                    "mincore counts a page once its read has finished: right after the touch "
                    f"it showed {at_once:,} pages cached, {cached:,} a moment later; the "
                    "notebook waits for the reads to finish and prints both counts",
                    "cold_touch",
                )
        elif touch:
            readahead.add(
                CLEAR,
                f"read_ahead_kb is {f.why('read_ahead_kb')}; but one cold fault "
                f"cached {touch['pages_cached']:,} pages here",
                "cold_touch",
            )
        else:
            readahead.add(UNKNOWN, f"the cold touch is {f.why('cold_touch')}", "cold_touch")
        folios = f("large_folios")
        warm = f("warm_touch")
        if folios and warm:
            readahead.add(
                CLEAR,
                f"large folios: one touch of a warm page of a file read in order mapped "
                f"{warm['pages_mapped']:,} pages at once; pages read around a lone fault may sit "
                "in 1-page folios, which only fault-around maps (section 2 prints which)",
                "large_folios",
                "warm_touch",
            )
    _residency(readahead, f)
    strides = _Section("03", "3", "touch every n-th page: where lazy loading stops")
    warm = f("warm_touch")
    cold = _cold(strides, f, "every stride finds the file cached: nothing is read")
    if cold and ra is not None and warm:
        strides.add(
            CLEAR,
            f"touches more than {_size(ra * 1024)} apart (read_ahead_kb {ra}) read a window "
            "each, not the whole file; touches close enough to keep readahead running read "
            f"it all, and map large folios whole where there are some (here: "
            f"{'yes' if f('large_folios') else 'no or unknown'}); section 3 prints which",
            "large_folios",
            "read_ahead_kb",
            "warm_touch",
        )
    live = _Section("03", "4", "touch in a pattern and watch it live")
    if _cold(live, f, "runs with 'cold cache' ticked are warm"):
        live.add(
            CLEAR,
            "eviction works here: cold and warm runs differ as the text says",
            "eviction_works",
        )
        _storage_counter(live, f)
    _residency(live, f)
    hints = _Section("03", "5", "compare the kernel hints")
    if _cold(hints, f, "every hint finds the file cached: no major faults to compare"):
        hints.add(CLEAR, "eviction works here: each hint starts from a cold file", "eviction_works")
        if ra is not None and ra * 1024 < STRIDE_PAGES * page:
            hints.add(
                DIFFERENT,
                f"read_ahead_kb {ra} is shorter than the 16-page stride: without a hint "
                "readahead no longer fills the gaps, so the no-hint row reads about as "
                "little as MADV_RANDOM's",
                "read_ahead_kb",
            )
        _memory_for(
            hints,
            f,
            N03_FILE + N03_FILE // 2,
            "MAP_POPULATE and the touches read the whole 1 GiB file, which cannot all stay "
            "cached: cached-page counts fall short and later touches fault again",
            DIFFERENT,
        )
    cold_warm = _Section("03", "6", "the same pattern cold and warm")
    if _cold(cold_warm, f, "both runs are warm"):
        cold_warm.add(CLEAR, "eviction works here: the cold run waits on storage", "eviction_works")
        _memory_for(
            cold_warm,
            f,
            N03_FILE + N03_FILE // 2,
            "the warm run may find pages of the 1 GiB file reclaimed and fault them in again",
            DIFFERENT,
        )
    return [lazy, readahead, strides, live, hints, cold_warm]


def _notebook_04(f: _Facts) -> list[_Section]:
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


def _notebook_05(f: _Facts) -> list[_Section]:
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
        if flushes is None:
            run.add(
                UNKNOWN,
                f"{took}; §2's flush count is known once 05 has computed PyG's SMILES",
                "flush",
            )
        else:
            total = flushes * cost["median"]
            run.add(
                DIFFERENT if total > 120 else CLEAR,
                f"{took}: §2's full-size run ({n:,} molecules, {flushes / n:.0f} flushes each) "
                f"takes about {total:,.0f} s",
                "flush",
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
    rest.add(CLEAR, "depends on no machine setting (the times are this machine's)")
    return [load, run, flush, store, rest]


def _notebook_06(f: _Facts) -> list[_Section]:
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
            f"read_ahead_kb is {ra:,}: the page cache may hold up to {_size(ra * 1024)} of "
            "the store that no reader mapped (read ahead, never faulted)",
            "read_ahead_kb",
        )
    usable, said, keys = f.usable_memory()
    if usable is not None and usable >= 2**30:
        workers.add(CLEAR, f"{said}: room for the store and several processes", *keys)
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


def advise(facts: Mapping) -> list[Advice]:
    """Advice for every section of the six notebooks, from ``machine.report``'s facts."""
    f = _Facts(facts)
    room = _Section("all", "", "room for notebooks/data on this file system")
    free = f("free_space")
    if free is None:
        room.add(UNKNOWN, f"free space: {f.why('free_space')}", "free_space")
    elif free < DATA_BYTES + 2**29:
        room.add(
            NOT_SHOWN,
            f"{_size(free)} free: the notebooks' data files take about 1.5 GiB at full size",
            "free_space",
        )
    else:
        room.add(
            CLEAR, f"{_size(free)} free, enough for the data files (about 1.5 GiB)", "free_space"
        )
    sections = [room]
    for notebook in (_notebook_01, _notebook_02, _notebook_03, _notebook_04, _notebook_05):
        sections += notebook(f)
    sections += _notebook_06(f)
    return [s.advice() for s in sections]
