"""Facts about this machine, read from /proc and /sys.

The lower layer of ``mmlab.machine``, with ``mmlab.facts`` (``Fact``, ``Unknown``) and
``mmlab.fsinfo`` (the file system under a path): CPUs, memory, cgroup limits (v1 and v2,
from the process's own cgroup), resource limits, transparent huge pages, ``vm.*`` settings
and which instruments this system has. ``mmlab.probe`` measures what reading cannot tell.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import re
import resource
import sys
from pathlib import Path

from mmlab.instruments.facts import Fact, Info, Unknown, _from_file, format_size, read_value
from mmlab.instruments.fsinfo import (
    IN_MEMORY,
    _mounts,
    default_path,
    file_system_facts,
    mincore_trust,
)

__all__ = [
    "IN_MEMORY",
    "Fact",
    "Info",
    "Unknown",
    "cgroup_cpu_limit",
    "cgroup_memory_limit",
    "default_path",
    "file_system_facts",
    "format_size",
    "machine_facts",
    "mincore_trust",
    "read_value",
]

_PAGE = mmap.PAGESIZE
_SYS_CACHESTAT = 451  # the same on every Linux architecture but alpha
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
if _LIBC is not None:
    _LIBC.syscall.restype = ctypes.c_long


def _bracketed(text: str) -> str:
    """The selected word of a sysfs choice such as ``always [madvise] never``."""
    match = re.search(r"\[(\w[\w-]*)\]", text)
    if not match:
        raise ValueError(f"no [choice] in {text!r}")
    return match.group(1)


def _cpu_facts() -> dict[str, Info]:
    facts: dict[str, Info] = {
        "cpu_count": Fact(os.cpu_count(), "os.cpu_count() (CPUs online)")
        if os.cpu_count()
        else Unknown("os.cpu_count() gave no answer")
    }
    if hasattr(os, "sched_getaffinity"):
        facts["cpus_usable"] = Fact(len(os.sched_getaffinity(0)), "sched_getaffinity(2)")
    else:
        facts["cpus_usable"] = Unknown(f"no sched_getaffinity on {sys.platform}")
    try:
        cpuinfo = read_value("/proc/cpuinfo")
    except OSError as exc:
        reason = f"cannot read /proc/cpuinfo: {exc.strerror}"
        return facts | {"cpu_model": Unknown(reason), "hypervisor": Unknown(reason)}
    fields = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in cpuinfo.splitlines())
    )
    model = fields.get("model name") or fields.get("Model") or fields.get("cpu model")
    facts["cpu_model"] = (
        Fact(model, "/proc/cpuinfo") if model else Unknown("/proc/cpuinfo names no CPU model")
    )
    if "flags" in fields:
        present = "hypervisor" in fields["flags"].split()
        facts["hypervisor"] = Fact(
            present,
            "the 'hypervisor' CPU flag in /proc/cpuinfo is "
            + ("set" if present else "not set (a hypervisor may still hide itself)"),
        )
    else:
        facts["hypervisor"] = Unknown(
            "/proc/cpuinfo lists no CPU flags on this architecture, so no 'hypervisor' flag"
        )
    return facts


def _memory_facts() -> dict[str, Info]:
    import psutil  # reads /proc/meminfo: MemTotal, MemAvailable

    memory = psutil.virtual_memory()
    source = "psutil.virtual_memory() (/proc/meminfo MemTotal, MemAvailable)"
    return {
        "memory_total": Fact(int(memory.total), source),
        "memory_available": Fact(int(memory.available), source),
    }


def _swap_total() -> Info:
    """SwapTotal of /proc/meminfo: with none, memory past a limit is refused or killed, never
    swapped out first."""
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(ln.split()[1]) for ln in f if ln.startswith("SwapTotal:"))
    except (OSError, StopIteration, ValueError) as exc:
        return Unknown(f"cannot read SwapTotal from /proc/meminfo: {exc}")
    return Fact(kib * 1024, "/proc/meminfo SwapTotal")


def _lru_gen() -> Info:
    """Whether the multi-generational LRU (MGLRU) decides which pages are reclaimed."""
    path = "/sys/kernel/mm/lru_gen/enabled"
    if not os.path.isdir("/sys/kernel/mm"):  # /sys not mounted (some containers): no answer
        return Unknown(f"cannot read {path}: /sys/kernel/mm does not exist here (no sysfs)")
    try:
        text = read_value(path)
    except FileNotFoundError:
        return Fact(False, f"no {path}: this kernel has no MGLRU (active/inactive lists)")
    except OSError as exc:
        return Unknown(f"cannot read {path}: {exc.strerror}")
    try:
        return Fact(int(text, 16) != 0, f"{path} = {text}")
    except ValueError:
        return Unknown(f"{path} holds {text!r}, not a hexadecimal mask")


def _psi_memory() -> Info:
    """Whether the kernel reports memory pressure (PSI, Linux 4.20+, if not disabled)."""
    path = "/proc/pressure/memory"
    try:
        read_value(path)
    except OSError as exc:
        return Fact(False, f"cannot read {path} ({exc.strerror}): no pressure stall information")
    return Fact(True, f"read {path} (system-wide; cgroup v2 also has memory.pressure)")


def _rlimit(name: str) -> Info:
    soft, hard = resource.getrlimit(getattr(resource, name))

    def show(v: int) -> int | str:
        return "unlimited" if v == resource.RLIM_INFINITY else v

    return Fact({"soft": show(soft), "hard": show(hard)}, f"getrlimit({name})")


# ---------------------------------------------------------------- cgroups


def _cgroup_dirs(controller: str, proc: Path, prefix: Path) -> list[tuple[Path, Path, int]]:
    """(the process's cgroup directory, the hierarchy's mount point, version) per hierarchy.

    From /proc/self/cgroup (``id:controllers:path``) and the cgroup mounts of mountinfo; a
    mount's root is stripped from the path, as inside a container's cgroup namespace.
    """
    found = []
    mounts = _mounts(proc)
    for line in (proc / "cgroup").read_text().splitlines():
        hierarchy, controllers, cpath = line.split(":", 2)
        if hierarchy == "0" and controllers == "":
            version, candidates = 2, [m for m in mounts if m.fstype == "cgroup2"]
        elif controller in controllers.split(","):
            version = 1
            candidates = [
                m for m in mounts if m.fstype == "cgroup" and controller in m.superopts.split(",")
            ]
        else:
            continue
        for m in candidates:
            root = m.root.rstrip("/")
            if cpath == m.root or cpath.startswith(root + "/"):
                point = prefix / m.point.lstrip("/")
                found.append((point / cpath[len(root) :].lstrip("/"), point, version))
                break
    return found


def _ancestors(leaf: Path, top: Path):
    d = leaf
    while True:
        yield d
        if d == top or top not in d.parents:
            return
        d = d.parent


def cgroup_memory_limit(proc: Path = Path("/proc/self"), prefix: Path = Path("/")) -> Info:
    """The tightest memory limit of this process's cgroup and its ancestors (v1 and v2)."""
    try:
        dirs = _cgroup_dirs("memory", proc, prefix)
    except (OSError, ValueError) as exc:
        return Unknown(f"cannot read {proc}/cgroup or mountinfo: {exc}")
    limits, read = [], []
    for leaf, top, version in dirs:
        name = "memory.max" if version == 2 else "memory.limit_in_bytes"
        for d in _ancestors(leaf, top):
            try:
                text = read_value(d / name)
            except OSError:
                continue
            read.append(d / name)
            value = None if text == "max" else int(text)
            if value is not None and value < 2**62:  # v1 says "no limit" with ~2**63
                limits.append((value, d / name))
    if limits:
        value, where = min(limits)
        tightest = f"the tightest of {len(read)} limit files on this cgroup's path"
        return Fact(value, f"{where} ({tightest})")
    if read:
        return Fact("unlimited", f"no limit in {read[0]} nor in its parents")
    return Unknown(
        "no memory controller for this process: /proc/self/cgroup and mountinfo name no "
        "memory.max (v2) or memory.limit_in_bytes (v1) file"
    )


def cgroup_cpu_limit(proc: Path = Path("/proc/self"), prefix: Path = Path("/")) -> Info:
    """The tightest CPU quota (in CPUs) of this process's cgroup and its ancestors."""
    try:
        dirs = _cgroup_dirs("cpu", proc, prefix)
    except (OSError, ValueError) as exc:
        return Unknown(f"cannot read {proc}/cgroup or mountinfo: {exc}")
    limits, read = [], []
    for leaf, top, version in dirs:
        for d in _ancestors(leaf, top):
            try:
                if version == 2:
                    quota, period = read_value(d / "cpu.max").split()
                    read.append(d / "cpu.max")
                else:
                    quota = read_value(d / "cpu.cfs_quota_us")
                    period = read_value(d / "cpu.cfs_period_us")
                    read.append(d / "cpu.cfs_quota_us")
            except (OSError, ValueError):
                continue
            if quota not in ("max", "-1"):
                limits.append((int(quota) / int(period), read[-1]))
    if limits:
        value, where = min(limits)
        return Fact(round(value, 2), f"{where} (quota / period)")
    if read:
        return Fact("unlimited", f"no CPU quota in {read[0]} nor in its parents")
    return Unknown("no cpu controller for this process in /proc/self/cgroup and mountinfo")


def _memory_limit_mechanism() -> Info:
    """The strongest way to cap one child's memory here (``mmlab.memlimit``), and why.
    Finding it creates and removes a probe cgroup wherever this process may make one."""
    from mmlab.instruments import memlimit  # it reads this module's cgroup helpers

    try:
        chosen = memlimit.best()
    except OSError as exc:
        return Unknown(str(exc))
    if not chosen.usable:
        return Unknown(f"no mechanism is usable: {chosen.reason}")
    probed = (
        "; found by creating and removing a probe cgroup (mmlab-probe-PID) where cgroups are "
        "writable"
    )
    return Fact(chosen.name, f"mmlab.memlimit: {chosen.reason}{probed}")


def _cachestat_exists() -> Info:
    """Call cachestat on no file: EBADF means the call exists, ENOSYS that it does not."""
    if _LIBC is None:
        return Unknown(f"cachestat is a Linux system call; this is {sys.platform}")
    result = _LIBC.syscall(ctypes.c_long(_SYS_CACHESTAT), -1, None, None, 0)
    err = ctypes.get_errno() if result != 0 else 0
    call = "cachestat(-1, ...)"
    if err == errno.EBADF:
        return Fact(True, f"{call} failed with EBADF: the system call exists (Linux 6.5+)")
    if err == errno.ENOSYS:
        return Fact(False, f"{call} failed with ENOSYS: this kernel has no cachestat (< 6.5)")
    if err == errno.EPERM:
        return Fact(False, f"{call} failed with EPERM: a seccomp filter (a sandbox) blocks it")
    return Unknown(f"{call} gave an unexpected answer: {errno.errorcode.get(err, err)}")


def _readable(path: str, what: str) -> Info:
    """Whether an instrument's /proc file can be read here (it is measured by reading it)."""
    try:
        read_value(path)
    except OSError as exc:
        return Fact(False, f"cannot read {path} ({exc.strerror}): {what} are n/a here")
    return Fact(True, f"read {path}")


def machine_facts() -> dict[str, Info]:
    """Everything about this machine that needs no path and no measurement."""
    facts: dict[str, Info] = {
        "kernel": Fact(platform.release(), "uname(2)"),
        "page_size": Fact(_PAGE, "mmap.PAGESIZE (sysconf _SC_PAGESIZE)"),
        "allocation_granularity": Fact(mmap.ALLOCATIONGRANULARITY, "mmap.ALLOCATIONGRANULARITY"),
    }
    facts |= _cpu_facts() | _memory_facts()
    facts["cgroup_memory_limit"] = cgroup_memory_limit()
    facts["cgroup_cpu_limit"] = cgroup_cpu_limit()
    facts["rlimit_data"] = _rlimit("RLIMIT_DATA")
    facts["memory_limit_mechanism"] = _memory_limit_mechanism()
    facts["swap_total"] = _swap_total()
    facts["lru_gen"] = _lru_gen()
    facts["psi_memory"] = _psi_memory()
    facts["rlimit_nofile"] = _rlimit("RLIMIT_NOFILE")
    thp = "/sys/kernel/mm/transparent_hugepage/"
    facts["thp_enabled"] = _from_file(thp + "enabled", _bracketed)
    facts["thp_shmem_enabled"] = _from_file(thp + "shmem_enabled", _bracketed)
    facts["max_map_count"] = _from_file("/proc/sys/vm/max_map_count")
    for key in ("dirty_ratio", "dirty_background_ratio"):
        facts[key] = _from_file(f"/proc/sys/vm/{key}")
        try:  # vm.dirty_bytes, when set, replaces the ratio (which then reads 0)
            override = int(read_value(f"/proc/sys/vm/{key.replace('ratio', 'bytes')}"))
        except (OSError, ValueError):
            override = 0
        if override and facts[key].known:
            facts[key] = Fact(
                facts[key].value,
                f"{facts[key].source}; vm.{key.replace('ratio', 'bytes')} = {override:,} "
                "replaces it",
            )
    facts["dirty_expire_centisecs"] = _from_file("/proc/sys/vm/dirty_expire_centisecs")
    facts["dirty_writeback_centisecs"] = _from_file("/proc/sys/vm/dirty_writeback_centisecs")
    facts["fault_around_bytes"] = _from_file("/sys/kernel/debug/fault_around_bytes")
    if not facts["fault_around_bytes"].known:
        facts["fault_around_bytes"] = Unknown(
            "/sys/kernel/debug/fault_around_bytes is unreadable (debugfs is root-only and "
            "often not mounted)"
        )
    facts["cachestat"] = _cachestat_exists()
    facts["proc_self_io"] = _readable("/proc/self/io", "storage bytes in measure()")
    facts["smaps_rollup"] = _readable("/proc/self/smaps_rollup", "USS and PSS")
    return facts
