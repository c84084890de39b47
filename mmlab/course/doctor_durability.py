"""What notebook 08 (write-back and durability) will show on this machine, section by
section, from ``mmlab.machine``'s facts; ``mmlab.doctor`` gathers it."""

from __future__ import annotations

from mmlab.course.advice import CLEAR, DIFFERENT, NOT_SHOWN, UNKNOWN, _Facts, _Section
from mmlab.instruments.facts import format_size as _size

__all__ = ["notebook_08"]

_IN_MEMORY = ("tmpfs", "ramfs")
_LIFE_BYTES = 32 * 2**20  # section 1 writes this much at full size


def _cachestat(s: _Section, f: _Facts, what: str) -> None:
    works = f("cachestat")
    if works is True:
        s.add(CLEAR, "cachestat works: the file's own dirty pages are counted", "cachestat")
    elif works is False:
        s.add(DIFFERENT, f"no cachestat ({f.why('cachestat')}): {what}", "cachestat")
    else:
        s.add(UNKNOWN, f"whether cachestat works is {f.why('cachestat')}", "cachestat")


def notebook_08(f: _Facts) -> list[_Section]:
    life = _Section("08", "1", "the life of a dirty page: dirty, writeback, clean")
    costs = _Section("08", "2", "each flush call's guarantee and cost; the blog's writer")
    crash = _Section("08", "3", "what a SIGKILL loses; a killed RecordStore writer")
    hazards = _Section("08", "4", "SIGBUS: a truncated file, a full file system")
    fs = f("filesystem")
    _cachestat(
        life,
        f,
        "the plot shows /proc/meminfo's Dirty and Writeback, the whole system's, and says so",
    )
    _cachestat(costs, f, "the pages left dirty after each call are not counted")
    if fs in _IN_MEMORY:
        for s in (life, costs):
            s.add(
                NOT_SHOWN,
                f"{fs}: there is no storage under the file, so its pages are never written "
                "back and a flush writes nothing; run the notebook from a folder on a disk",
                "filesystem",
            )
    expire = f("dirty_expire_centisecs")
    if expire is None:
        life.add(
            UNKNOWN,
            f"vm.dirty_expire_centisecs is {f.why('dirty_expire_centisecs')}: the wait "
            "until writeback cannot be foretold (the cell stops after 60 s)",
            "dirty_expire_centisecs",
        )
    else:
        verdict = CLEAR if expire <= 6000 else DIFFERENT
        life.add(
            verdict,
            f"vm.dirty_expire_centisecs is {expire}: the kernel writes a dirty page back "
            f"about {expire / 100:g} s after it was dirtied, plus the flusher's period; the "
            "cell waits that long",
            "dirty_expire_centisecs",
        )
    period = f("dirty_writeback_centisecs") if "dirty_writeback_centisecs" in f.facts else None
    if period is not None:
        long = period == 0 or period > 3000
        life.add(
            DIFFERENT if long else CLEAR,
            "vm.dirty_writeback_centisecs is 0: the flusher never wakes on its own, so the "
            "section's pages may stay dirty until its timeout"
            if period == 0
            else f"vm.dirty_writeback_centisecs is {period}: the flusher wakes every "
            f"{period / 100:g} s"
            + (" (laptop mode or a power manager on battery?): the section waits longer" if long
               else ""),
            "dirty_writeback_centisecs",
        )  # fmt: skip
    background, available = f("dirty_background_ratio"), f("memory_available")
    if background and available:
        threshold = available * background // 100
        low = threshold < 2 * _LIFE_BYTES
        life.add(
            DIFFERENT if low else CLEAR,
            f"vm.dirty_background_ratio is {background}% of {_size(available)} available, "
            f"about {_size(threshold)}: the section's {_size(_LIFE_BYTES)} "
            + (
                "come near it, so background writeback may start before the pages expire"
                if low
                else "stay below it, so the expiry rule decides (unless other programs dirty "
                "a lot meanwhile)"
            ),
            "dirty_background_ratio",
            "memory_available",
        )
    device = f("block_device")
    if device is None and fs not in _IN_MEMORY:
        costs.add(
            DIFFERENT,
            f"no single block device ({f.why('block_device')}): the bytes the device wrote "
            "are not shown, only the bytes each process dirtied",
            "block_device",
        )
    elif device is not None:
        costs.add(
            CLEAR,
            f"the device's counters ({device['name']}) show what reached storage: the whole "
            "device, every process's writes and the file system's metadata included (the "
            "notebook shows an idle interval's writes beside them)",
            "block_device",
        )
    crash.add(
        CLEAR,
        "the children are killed with SIGKILL and the files read back: works on any Linux",
    )
    if "journal" in f.facts:
        journal = f("journal")
        crash.add(
            CLEAR if journal is not None else UNKNOWN,
            f"journal: {journal}: the notebook says what a power loss would leave on this "
            "file system"
            if journal is not None
            else f"whether this file system journals is {f.why('journal')}: the power-loss "
            "paragraph speaks of the common cases",
            "journal",
        )
    limit = f("cgroup_memory_limit")
    if isinstance(limit, int):  # else "unlimited", or unknown
        life.add(
            DIFFERENT,
            f"a cgroup memory limit of {_size(limit)}: in a container the dirty thresholds "
            "also apply to the container's own memory, so writeback may start sooner",
            "cgroup_memory_limit",
        )
    hazards.add(
        CLEAR,
        "the truncated-file SIGBUS is shown in a child process on any Linux; the full-file-"
        "system one needs a small tmpfs, mounted as root or in a user namespace "
        "(unshare --user --map-root-user --mount): the notebook says which it used, or why "
        "it could not",
    )
    return [life, costs, crash, hazards]
