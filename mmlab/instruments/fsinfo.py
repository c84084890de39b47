"""Facts about a file system: its type, mount, free space, block device and readahead.

The file-system layer of ``mmlab.machine``, for the path the notebooks keep their data in
(``default_path``): the mount holding it (from ``/proc/self/mountinfo``), its type (``statfs``
says tmpfs and ramfs, where the page cache *is* the file: ``IN_MEMORY``), the block device
under it and its readahead (``/sys/dev/block``), and whether the kernel shows this process
the page cache of files there (``mincore_trust``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from mmlab.instruments import pagecache
from mmlab.instruments.facts import Fact, Info, Unknown, _from_file, read_value

__all__ = ["IN_MEMORY", "default_path", "file_system_facts", "journal", "mincore_trust"]

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
# statfs, for the file system's own word on its type (mountinfo can name the mount only)
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


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
        "journal": journal(path),
    }
    return facts | _block_facts(path, fstype), fstype


_OTHER_JOURNALS = {
    "xfs": "log (metadata only)",
    "btrfs": "copy-on-write (log tree)",
    "zfs": "copy-on-write (intent log)",
}


def journal(path: Path) -> Info:
    """Whether the file system holding ``path`` keeps a journal, and its data mode.

    ext4: ``/sys/fs/ext4/<dev>/journal_task`` names the journal thread (``<none>``: no
    journal) and ``/proc/fs/ext4/<dev>/options`` the ``data=`` mode. The value is ``"none"``,
    ``"data=ordered"`` (or ``writeback``, ``journal``), or the kind for XFS, btrfs and ZFS."""
    mount = _mount_of(path)
    fstype = _MAGICS.get(_statfs_magic(path), mount.fstype)
    if fstype in IN_MEMORY:
        return Fact("none", f"{fstype} keeps files in memory: nothing to journal")
    if fstype in _OTHER_JOURNALS:
        return Fact(_OTHER_JOURNALS[fstype], f"{fstype} always has it")
    if mount.fstype not in ("ext4", "ext3"):
        return Unknown(f"{mount.fstype}: no way to read its journal here")
    # sysfs names the device as the kernel does: /dev/mapper/vg-root (LVM, LUKS) is a link
    # to ../dm-0, whose name is dm-0
    name = Path(os.path.realpath(mount.source)).name
    task = Path("/sys/fs/ext4") / name / "journal_task"
    options = Path("/proc/fs/ext4") / name / "options"
    try:
        has = read_value(task) != "<none>"
        modes = [o for o in read_value(options).split() if o.startswith("data=")]
    except OSError as exc:
        return Unknown(f"cannot read {task} or {options}: {exc.strerror or exc}")
    if not has:
        return Fact("none", f"{task} reads <none>: this ext4 was made without a journal")
    return Fact(modes[0] if modes else "journal (data mode not shown)", f"{task}, {options}")


def mincore_trust(path: Path) -> Info:
    """Whether mincore tells this process the truth about ``path`` (or the files in it)."""
    check, how = pagecache.cache_hidden, "pagecache.cache_hidden"
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
