"""What notebooks 01 to 03 (mmap's parameters, page alignment, lazy loading) will show on
this machine, section by section, from ``mmlab.machine``'s facts; ``mmlab.doctor`` gathers it."""

from __future__ import annotations

import math
import platform

from mmlab.course.advice import (
    CLEAR,
    DIFFERENT,
    N01_BLOCKS,
    N02_MAPPINGS,
    N03_FILE,
    NOT_SHOWN,
    STRIDE_PAGES,
    UNKNOWN,
    _cold,
    _Facts,
    _memory_for,
    _read,
    _residency,
    _Section,
    _storage_counter,
)
from mmlab.course.mapcount import DEFAULT_CAP as MAPCOUNT_CAP  # where the children stop
from mmlab.instruments.facts import format_size as _size

__all__ = ["notebook_01", "notebook_02", "notebook_03"]


def notebook_01(f: _Facts) -> list[_Section]:
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


def notebook_02(f: _Facts) -> list[_Section]:

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


def notebook_03(f: _Facts) -> list[_Section]:
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
