"""Facts about this machine and a file system, read from /proc and /sys.

The lower layer of ``mmlab.machine``: ``Fact`` (a value and where it came from) and
``Unknown`` (why there is none), and the readers: CPUs, memory, cgroup limits (v1 and v2,
from the process's own cgroup), resource limits, transparent huge pages, ``vm.*`` settings,
the mount and block device under a path (its readahead), whether the kernel shows this
process the page cache of files there (mincore), and which instruments this system has.
``mmlab.probe`` measures what reading cannot tell.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import platform
import re
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmlab import pagecache

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
_MAGICS = {  # statfs f_type of the file systems a course machine is likely to have
    0x01021994: "tmpfs",
    0x858458F6: "ramfs",
    0xEF53: "ext2/3/4",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x794C7630: "overlay",
    0x6969: "nfs",
    0x65735546: "fuse",
    0x01021997: "9p",
    0x2FC12FC1: "zfs",
    0xFF534D42: "cifs",
    0xFE534D42: "smb2",
    0x73717368: "squashfs",
    0x958458F6: "hugetlbfs",
}
IN_MEMORY = {"tmpfs", "ramfs", "hugetlbfs"}  # the page cache is the file: nothing to evict
_SYS_CACHESTAT = 451  # the same on every Linux architecture but alpha
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
if _LIBC is not None:
    _LIBC.syscall.restype = ctypes.c_long


@dataclass(frozen=True)
class Fact:
    """A value read from the system or measured here, and where it came from."""

    value: Any
    source: str
    known = True

    def __post_init__(self) -> None:
        if self.value is None:
            raise ValueError("a Fact needs a value; use Unknown(reason) for a missing one")

    def to_json(self) -> dict:
        return {"value": self.value, "source": self.source}


@dataclass(frozen=True)
class Unknown:
    """A value this machine would not give, and why."""

    reason: str
    value = None
    known = False

    def to_json(self) -> dict:
        return {"value": None, "unknown": self.reason}


Info = Fact | Unknown


def format_size(n: int) -> str:
    """Bytes as a person reads them: GiB, MiB, KiB or bytes."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes"


# ---------------------------------------------------------------- reading the system


def read_value(path: str | Path) -> str:
    """The stripped text of a small /proc or /sys file."""
    with open(path) as f:
        return f.read().strip()


def _from_file(path: str, convert=int, what: str = "") -> Info:
    try:
        return Fact(convert(read_value(path)), f"{path}{what}")
    except (OSError, ValueError) as exc:
        return Unknown(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}")


def _bracketed(text: str) -> str:
    """The selected word of a sysfs choice such as ``always [madvise] never``."""
    match = re.search(r"\[(\w[\w-]*)\]", text)
    if not match:
        raise ValueError(f"no [choice] in {text!r}")
    return match.group(1)


def _kernel_version() -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", platform.release()).groups()
    return int(major), int(minor)


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


def _rlimit(name: str) -> Info:
    soft, hard = resource.getrlimit(getattr(resource, name))

    def show(v: int) -> int | str:
        return "unlimited" if v == resource.RLIM_INFINITY else v

    return Fact({"soft": show(soft), "hard": show(hard)}, f"getrlimit({name})")


# ---------------------------------------------------------------- mounts and cgroups


@dataclass(frozen=True)
class _Mount:
    dev: str
    root: str
    point: str
    options: str
    fstype: str
    source: str
    superopts: str


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _mounts(proc: Path) -> list[_Mount]:
    """The mounts of /proc/self/mountinfo (see proc_pid_mountinfo(5))."""
    mounts = []
    for line in (proc / "mountinfo").read_text().splitlines():
        parts = line.split()
        sep = parts.index("-")
        fstype, source = parts[sep + 1], _unescape(parts[sep + 2])
        superopts = parts[sep + 3] if len(parts) > sep + 3 else ""
        root, point = _unescape(parts[3]), _unescape(parts[4])
        mounts.append(_Mount(parts[2], root, point, parts[5], fstype, source, superopts))
    return mounts


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


# ---------------------------------------------------------------- the file system


def default_path() -> Path:
    """Where the notebooks keep their data (``notebooks/data``, or the ``notebooks`` folder
    before it exists), seen from the repository or from ``notebooks``; else the cwd."""
    cwd = Path.cwd()
    folder = cwd if cwd.name == "notebooks" else cwd / "notebooks"
    if folder.is_dir():
        return folder / "data" if (folder / "data").is_dir() else folder
    return cwd


def _statfs_magic(path: Path) -> int:
    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type is its first field
    if _LIBC.statfs(os.fsencode(path), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"statfs failed on {path}: {os.strerror(err)}")
    return ctypes.c_ulong.from_buffer(buf).value & 0xFFFFFFFF


def _mount_of(path: Path) -> _Mount:
    """The mount holding ``path``: same device, longest mount point above it."""
    st_dev = os.stat(path).st_dev
    dev = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    real = os.path.realpath(path)
    above = [
        m
        for m in _mounts(Path("/proc/self"))
        if real == m.point or real.startswith(m.point.rstrip("/") + "/")
    ]
    same = [m for m in above if m.dev == dev] or above
    return max(reversed(same), key=lambda m: len(m.point))  # of stacked mounts, the top one


_KINDS = (
    ("/virtio", "virtio"),
    ("/nvme", "NVMe"),
    ("/block/loop", "loop"),
    ("/block/dm-", "device-mapper"),
    ("/block/md", "software RAID"),
    ("/block/zram", "zram (compressed memory)"),
    ("/block/mmcblk", "SD/eMMC"),
    ("/usb", "USB"),
    ("/block/xvd", "Xen"),
    ("/ata", "SATA"),
    ("/host", "SCSI"),
)


def _block_facts(path: Path, fstype: str) -> dict[str, Info]:
    """The block device under ``path`` (the whole disk, if it is a partition): its kind,
    and its readahead, from /sys/dev/block/MAJ:MIN."""
    if fstype in IN_MEMORY:
        reason = f"{fstype} keeps files in memory: there is no block device and no readahead"
        return dict.fromkeys(("block_device", "read_ahead_kb"), Unknown(reason))
    st_dev = os.stat(path).st_dev
    dev = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    node = Path("/sys/dev/block") / dev
    if not node.exists():
        bdi = Path("/sys/class/bdi") / dev / "read_ahead_kb"
        reason = (
            f"the file system ({fstype}) is on device {dev}, which is not a block device "
            "(btrfs, overlay, network and FUSE file systems have no single disk)"
        )
        return {
            "block_device": Unknown(reason),
            "read_ahead_kb": _from_file(str(bdi), what=" (the file system's own readahead)")
            if bdi.exists()
            else Unknown(reason),
        }
    disk = node.resolve()
    partition = None
    if (disk / "partition").exists():
        partition, disk = disk.name, disk.parent
    text = str(disk)
    kind = next((k for marker, k in _KINDS if marker in text), "disk")
    detail = f"partition {partition}" if partition else ""
    with contextlib.suppress(OSError):  # what is under a loop or device-mapper disk
        if kind == "loop":
            detail = f"backed by {read_value(disk / 'loop' / 'backing_file')}"
        elif kind == "device-mapper":
            under = ", ".join(sorted(p.name for p in (disk / "slaves").iterdir()))
            detail = f"{read_value(disk / 'dm' / 'name')} over {under}"
    disk_dev = read_value(disk / "dev")
    value = {"name": disk.name, "kind": kind, "dev": disk_dev, "detail": detail}
    return {
        "block_device": Fact(value, f"{node} -> {disk}"),
        "read_ahead_kb": _from_file(str(disk / "queue" / "read_ahead_kb")),
    }


def file_system_facts(path: Path) -> tuple[dict[str, Info], str]:
    """The file system holding ``path``: type, mount, free space, block device, readahead;
    and the type's name, which says whether the page cache can be evicted there."""
    mount = _mount_of(path)
    magic = _statfs_magic(path)
    fstype = mount.fstype
    if _MAGICS.get(magic) in IN_MEMORY:
        fstype = _MAGICS[magic]  # statfs is the file system itself, whatever mountinfo says
    vfs = os.statvfs(path)
    facts = {
        "filesystem": Fact(
            fstype,
            f"/proc/self/mountinfo ({mount.source} on {mount.point}); statfs f_type 0x{magic:x}",
        ),
        "mount_point": Fact(mount.point, f"/proc/self/mountinfo, options {mount.options}"),
        "free_space": Fact(vfs.f_bavail * vfs.f_frsize, "statvfs(3): blocks free to this user"),
    }
    return facts | _block_facts(path, fstype), fstype


def _hidden_by_rule(path: Path) -> str | None:
    """Why mincore would fake "all cached" for this file, by the kernel's rule, or None.

    Since Linux 5.2 mincore reports a file's page cache only to a process that owns it, has
    CAP_FOWNER or could open it for writing; to any other it reports every page resident.
    """
    # pagecache is gaining this check, measured rather than by rule (issue 9, section 1):
    # report() calls pagecache.cache_hidden instead where it exists.
    if _kernel_version() < (5, 2):
        return None
    st = os.stat(path)
    if st.st_uid == os.geteuid() or os.access(path, os.W_OK, effective_ids=True):
        return None
    try:
        status = read_value("/proc/self/status")
        cap_eff = int(re.search(r"CapEff:\s*([0-9a-f]+)", status).group(1), 16)
    except (OSError, AttributeError):
        cap_eff = 0
    if cap_eff & (1 << 3):  # CAP_FOWNER
        return None
    return f"this process (uid {os.geteuid()}) neither owns it (uid {st.st_uid}) nor may write it"


def mincore_trust(path: Path) -> Info:
    """Whether mincore tells this process the truth about ``path`` (or the files in it)."""
    hidden = getattr(pagecache, "cache_hidden", None)
    how = "pagecache.cache_hidden" if hidden else "the kernel's rule (owner, CAP_FOWNER or write)"
    check = hidden or _hidden_by_rule
    if not (path.is_dir() or path.is_file()):
        return Unknown(f"{path} is neither a regular file nor a folder")
    try:
        files = (
            sorted(p for p in path.iterdir() if p.is_file() and not p.is_symlink())[:200]
            if path.is_dir()
            else [path]
        )
    except OSError as exc:
        return Unknown(f"cannot list {path}: {exc.strerror or exc}")
    hidden_files = []
    for f in files:
        try:
            why = check(f)
        except PermissionError:
            continue  # a file this process cannot even read: it cannot map it either
        except OSError as exc:
            return Unknown(f"cannot check {f}: {exc.strerror or exc}")
        if why:
            hidden_files.append((f, why))
    if hidden_files:
        f, why = hidden_files[0]
        more = f" and {len(hidden_files) - 1} more" if len(hidden_files) > 1 else ""
        return Fact(
            False,
            f"{how}: {f}{more}: {why}; since Linux 5.2 mincore reports every page of such a "
            "file cached",
        )
    where = f"every file in {path} and the ones you create there" if path.is_dir() else str(path)
    return Fact(True, f"{how}: the kernel shows this process the page cache of {where}")


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
