"""Measured, not read: what touching, reading and flushing a page cost on a file system.

``probe(path, ...)`` writes a probe file next to ``path`` (it never uses a file it did not
create) and measures there: whether eviction works; what one touch of an evicted page
faults, maps, reads from storage and leaves cached (the readahead window); how long one read
of an evicted page takes with readahead off; how many pages one touch of a warm page maps
(large folios; their size too where /proc/kpageflags is readable, as root); and how long a
one-byte write to a shared mapping plus ``flush()`` takes (the blog's per-record flush).
``memory_copy()`` times interleaved rounds of an in-memory copy.
"""

from __future__ import annotations

import mmap
import os
import re
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from mmlab.instruments import pagecache, pagemap
from mmlab.instruments.sysinfo import IN_MEMORY, Fact, Info, Unknown, format_size, read_value

__all__ = ["PROBE_KEYS", "memory_copy", "probe", "unknown"]

_PAGE = mmap.PAGESIZE
_FOLIO_SCAN = 1 << 18  # pages: the largest folio /proc/kpageflags is searched for
PROBE_KEYS = ("eviction_works", "cold_touch", "cold_read", "warm_touch", "large_folios", "flush")


def _counters() -> tuple[int, int, int | None]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    try:
        io = read_value("/proc/self/io")
        storage = int(re.search(r"read_bytes: (\d+)", io).group(1))
    except (OSError, AttributeError):
        storage = None
    return usage.ru_minflt, usage.ru_majflt, storage


def _smaps_rss(address: int) -> int | None:
    """Resident bytes of the mapping that holds ``address`` (/proc/self/smaps)."""
    try:
        return pagemap.vma(address).get("Rss")
    except OSError:
        return None


def _folio_pages(address: int) -> tuple[int | None, str]:
    """How many pages the folio holding the page at ``address`` has, via /proc/kpageflags."""
    try:
        entry = int(pagemap.entries(address, 1)[0])
    except OSError as exc:
        return None, str(exc)
    pfn = entry & int(pagemap.PFN_MASK)
    if not entry >> 63 or pfn == 0:
        return None, "/proc/self/pagemap shows page frame numbers only to root (CAP_SYS_ADMIN)"
    try:
        with open("/proc/kpageflags", "rb") as f:

            def tail(frame: int) -> bool:  # KPF_COMPOUND_TAIL: bit 16
                f.seek(frame * 8)
                return bool(int.from_bytes(f.read(8), "little") >> 16 & 1)

            head = pfn
            while tail(head) and pfn - head < _FOLIO_SCAN:
                head -= 1
            size = 1
            while tail(head + size) and size < _FOLIO_SCAN:
                size += 1
    except OSError as exc:
        return None, f"cannot read /proc/kpageflags: {exc.strerror}"
    return size, "/proc/self/pagemap and /proc/kpageflags"


def _touch(fd: int, size: int, index: int) -> dict:
    """Touch page ``index`` through a fresh read-only mapping; what that faulted and mapped."""
    mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    try:
        view = np.frombuffer(mm, np.uint8)
        address = view.ctypes.data
        del view
        for _ in range(2):  # run the measuring code once, so it takes no faults of its own
            before = _counters()
        _ = mm[index * _PAGE]
        after = _counters()
        rss = _smaps_rss(address)
        folio, folio_source = _folio_pages(address + index * _PAGE)
    finally:
        mm.close()
    storage = None if after[2] is None or before[2] is None else after[2] - before[2]
    return {
        "minor_faults": after[0] - before[0],
        "major_faults": after[1] - before[1],
        "storage_bytes": storage,
        "pages_mapped": None if rss is None else rss // _PAGE,
        "folio_pages": folio,
        "folio_source": folio_source,
    }


def _probe_dir(path: Path) -> Path | str:
    """A writable folder on ``path``'s file system for the probe file, or why there is none.

    The probe never uses a file it did not create: evicting someone's file would make their
    runs cold, and mapping it could hit a file being truncated.
    """
    folder = path if path.is_dir() else path.parent
    st_dev = os.stat(folder).st_dev
    for candidate in (folder, Path(tempfile.gettempdir()), Path.home()):
        try:
            writable = os.access(candidate, os.W_OK | os.X_OK, effective_ids=True)
            if writable and os.stat(candidate).st_dev == st_dev:
                return candidate
        except OSError:
            continue
    return (
        f"this process may not create a probe file in {folder} (nor elsewhere on its file system)"
    )


def probe(path: Path, fstype: str, read_ahead_kb: int | None) -> dict[str, Info]:
    """Write a probe file next to ``path`` and measure on it; it is removed afterwards."""
    folder = _probe_dir(path)
    if isinstance(folder, str):
        return unknown(folder, fstype)
    size = max(32 * 2**20, min(128 * 2**20, 2 * (read_ahead_kb or 0) * 1024))
    free = os.statvfs(folder)
    if free.f_bavail * free.f_frsize < 4 * size:
        return unknown(f"less than {format_size(4 * size)} free in {folder}", fstype)
    fd, name = tempfile.mkstemp(prefix=".mmlab-doctor-", suffix=".probe", dir=folder)
    try:
        block = os.urandom(2**20)  # real data: a hole would read as zeros with no I/O
        for _ in range(size // len(block)):
            os.write(fd, block)
        os.fsync(fd)
        return _measure(Path(name), fd, size, fstype)
    except OSError as exc:
        return unknown(f"the probe in {folder} failed: {exc}", fstype)
    finally:
        os.close(fd)
        Path(name).unlink(missing_ok=True)


def _measure(probe_file: Path, fd: int, size: int, fstype: str) -> dict[str, Info]:
    pages, what = size // _PAGE, f"a {format_size(size)} probe file in {probe_file.parent}"
    before = int(pagecache.residency(probe_file).sum())
    after = _evict(fd, probe_file)
    how = (
        f"fsync, then POSIX_FADV_DONTNEED on {what}: {before:,} -> {after:,} of {pages:,} "
        "pages cached (mincore)"
    )
    if fstype in IN_MEMORY:
        how += f"; on {fstype} the page cache is the file itself"
    facts: dict[str, Info] = {"eviction_works": Fact(after == 0, how)}
    state = "cold" if after == 0 else f"not cold ({after:,} pages stayed cached)"

    cold = _touch(fd, size, 0)
    cold["pages_cached_at_once"] = int(pagecache.residency(probe_file).sum())
    cold["pages_cached"] = int(pagecache.settled_residency(probe_file, timeout=1.0).sum())
    facts["cold_touch"] = _touch_fact(
        cold,
        f"one read of page 0 of {what}, {state}, through a fresh mapping: getrusage faults, "
        "/proc/self/io read_bytes, smaps Rss; mincore at once and once its reads finished",
        (
            "major_faults",
            "minor_faults",
            "pages_mapped",
            "pages_cached_at_once",
            "pages_cached",
            "storage_bytes",
        ),
    )

    _evict(fd, probe_file)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no readahead on this descriptor
    offsets = np.random.default_rng(0).choice(pages, size=9, replace=False) * _PAGE
    seconds = []
    for offset in offsets:
        start = time.perf_counter()
        os.pread(fd, _PAGE, int(offset))
        seconds.append(time.perf_counter() - start)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_NORMAL)
    facts["cold_read"] = _latency(
        seconds,
        f"os.pread of one page at 9 random offsets of {what}, {state}, readahead off "
        "(POSIX_FADV_RANDOM)",
    )

    # Read the file cold and in order, so readahead builds its folios as large as it does;
    # then touch a page in the last 2 MiB, where they are largest.
    _evict(fd, probe_file)
    os.lseek(fd, 0, os.SEEK_SET)
    while os.read(fd, 2**16):
        pass
    index = (pages - 1) // 512 * 512
    warm = _touch(fd, size, index)
    facts["warm_touch"] = _touch_fact(
        warm,
        f"{what} read in order with read(), then one read of its page {index:,} through a "
        "fresh mapping: getrusage faults, smaps Rss",
        ("minor_faults", "pages_mapped", "folio_pages"),
    )
    facts["large_folios"] = _large_folios(warm, index)

    # What the blog's loop pays per record: write into a shared mapping, then flush it all.
    with mmap.mmap(fd, size) as mm:
        seconds = []
        for k in range(10):
            start = time.perf_counter()
            mm[k * 4099 % size] = k  # a new page each time, as the blog's records move on
            mm.flush()
            seconds.append(time.perf_counter() - start)
    facts["flush"] = _latency(
        seconds[1:],  # the first flush also commits what the probe did before
        f"9 rounds of one byte written to a shared mapping of {what}, then flush() (msync); "
        "after one untimed round",
    )
    return facts


def _evict(fd: int, probe_file: Path) -> int:
    """Drop the probe's pages; returns how many stayed cached."""
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    return int(pagecache.residency(probe_file).sum())


def _latency(seconds: list[float], source: str) -> Fact:
    s = np.array(seconds)
    value = {"median": float(np.median(s)), "min": float(s.min()), "max": float(s.max())}
    return Fact(value | {"rounds": len(seconds), "unit": "s"}, source)


def _touch_fact(result: dict, source: str, keys: tuple[str, ...]) -> Info:
    if result["pages_mapped"] is None:
        return Unknown("the probe's mapping was not found in /proc/self/smaps")
    return Fact({k: result[k] for k in keys}, source)


def unknown(reason: str, fstype: str) -> dict[str, Info]:
    """The probe's facts where it could not run: unknown, but tmpfs and friends never evict."""
    facts: dict[str, Info] = {key: Unknown(reason) for key in PROBE_KEYS}
    if fstype in IN_MEMORY:
        facts["eviction_works"] = Fact(
            False, f"{fstype}: the page cache is the file itself, so there is nothing to drop"
        )
    return facts


def _large_folios(warm: dict, index: int) -> Info:
    """Whether the page cache holds this file system's data in folios of several pages."""
    mapped, folio = warm["pages_mapped"], warm["folio_pages"]
    if folio is not None:
        return Fact(
            folio > 1,
            f"page {index:,} of the probe, read in order, sits in a folio of {folio:,} "
            f"page{'' if folio == 1 else 's'} ({warm['folio_source']})",
        )
    try:
        around = int(read_value("/sys/kernel/debug/fault_around_bytes")) // _PAGE
        around_source = f"fault_around_bytes is {around * _PAGE:,}"
    except (OSError, ValueError):
        around = 65536 // _PAGE
        around_source = "fault_around_bytes is unreadable here; 64 KiB is the kernel's default"
    if mapped is not None and mapped > around:
        return Fact(
            True,
            f"one touch of a warm page mapped {mapped:,} pages, more than the {around} that "
            f"fault-around maps ({around_source}): the kernel mapped a large folio whole",
        )
    return Unknown(
        f"one touch of a warm page mapped {mapped} pages, no more than fault-around maps "
        f"anyway, and the folio's size cannot be read: {warm['folio_source']}"
    )


def memory_copy(nbytes: int = 32 * 2**20, rounds: int = 9) -> Fact:
    """Bytes per second of an in-memory copy: median of ``rounds`` interleaved rounds.

    The rounds alternate direction (a to b, then b to a), so both buffers stay in play and
    neither direction gets the quiet moments; the spread shows how noisy the machine is.
    """
    a = np.ones(nbytes, dtype=np.uint8)
    b = np.empty_like(a)
    np.copyto(b, a)  # fault in the target's pages before timing
    seconds = []
    for r in range(rounds):
        source, target = (a, b) if r % 2 == 0 else (b, a)
        start = time.perf_counter()
        np.copyto(target, source)
        seconds.append(time.perf_counter() - start)
    rates = nbytes / np.array(seconds)
    q1, median, q3 = (float(x) for x in np.percentile(rates, [25, 50, 75]))
    value = {
        "median": median,
        "q1": q1,
        "q3": q3,
        "min": float(rates.min()),
        "max": float(rates.max()),
        "rounds": rounds,
        "bytes": nbytes,
        "unit": "bytes/s",
    }
    how = f"numpy.copyto of {format_size(nbytes)}, {rounds} rounds alternating direction"
    return Fact(value, how)
