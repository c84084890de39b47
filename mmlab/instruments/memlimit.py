"""Memory limits for one child process: which mechanisms this machine offers, strongest first.

To see what happens when data is bigger than memory without filling the machine, limit one
child process instead (``mmlab.memlimitrun.run`` forks it). Linux offers, from strongest:

* a **cgroup** memory limit (``memory.limit_in_bytes`` in cgroup v1, ``memory.max`` in v2).
  It counts everything the child makes the kernel hold for it: its private memory *and* the
  page cache it reads in (the first process to read a page pays for it). At the limit the
  kernel first reclaims clean file pages (they can be read again), so a working set larger
  than the limit *thrashes*: every pass reads from storage again. Private memory cannot be
  reclaimed without swap: past the limit the OOM killer sends the child SIGKILL. This needs
  a cgroup directory the process may create and move a process into (root, or a delegated
  subtree); cgroup v2 also needs the ``memory`` controller enabled for that directory, and
  the new cgroup beside ours, as v2 forbids children of a cgroup that holds processes.
* a **systemd user scope** (``systemd-run --user --scope -p MemoryMax=...``): the same cgroup
  v2 limit, created by the user's systemd manager on a desktop where it delegates memory.
* **RLIMIT_DATA** (``setrlimit``, Linux 4.7+): caps the child's ``VmData``, the *virtual
  size* of its private writable mappings (heap, anonymous mappings, and copy-on-write private
  file mappings such as ``mmap.ACCESS_COPY``), so a reservation past it fails at once with
  ``MemoryError``, before a byte is touched. Shared or read-only file mappings and the page
  cache are not counted, so nothing is reclaimed and nothing thrashes. As a process already
  has a VmData of its own (a Python with numpy: tens of MiB), the child sets it to what it
  inherited *plus* the budget. Free heap the parent held is inherited inside that VmData, so
  the child may reuse it on top of the budget: the budget is a floor. It works everywhere,
  unprivileged.

``mechanisms()`` lists each with whether it is usable here and why; ``best()`` picks the
first usable one. A cgroup counts as usable only after this process created (and removed) a
probe cgroup where the child would go; the systemd scope is judged from what the user's manager
delegates (no probe unit is started), so its reason says "likely".

``mmlab.instruments.memgroup`` makes the cgroup (or scope) ``mmlab.memlimitrun`` puts one
child in: its limit (and no swap, where swap accounting lets it say so), its counters, its
removal.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from mmlab.instruments.sysinfo import _cgroup_dirs

__all__ = ["Mechanism", "UnsupportedPlatformError", "best", "mechanisms", "scope_command"]

CGROUP_V1 = "cgroup v1"
CGROUP_V2 = "cgroup v2"
SCOPE = "systemd scope"
RLIMIT = "RLIMIT_DATA"

_MODELS = {
    CGROUP_V1: (
        "a machine with only this much memory for the child: its own memory and the page cache "
        "it reads count; clean file pages are reclaimed and read again (thrashing), private "
        "memory past the limit gets the child killed by the OOM killer (SIGKILL). Unlike a "
        "full machine, only the child is squeezed and there is no swap for it"
    ),
    RLIMIT: (
        "a cap on the virtual size of the child's private writable mappings (VmData, set to "
        "what it inherited plus the budget): reserving past it raises MemoryError, while "
        "read-only file mappings and the page cache are not limited, so mapped data never "
        "thrashes here and a working set bigger than the budget stays fast"
    ),
}
_MODELS[CGROUP_V2] = _MODELS[CGROUP_V1]
_MODELS[SCOPE] = _MODELS[CGROUP_V1]


class UnsupportedPlatformError(OSError):
    """Memory limits for a child process are shown on Linux only."""


@dataclass(frozen=True)
class Mechanism:
    """One way to limit a child's memory: usable here or not, and why."""

    name: str
    usable: bool
    reason: str
    parent: str | None = None  # the cgroup directory the child's cgroup is made in

    @property
    def limits_page_cache(self) -> bool:
        """Whether the page cache the child reads counts against its limit (not RLIMIT_DATA)."""
        return self.name != RLIMIT

    @property
    def models(self) -> str:
        """What a run under this mechanism models, and what it does not."""
        return _MODELS[self.name]

    def __str__(self) -> str:
        return f"{self.name}: {'usable' if self.usable else 'not usable'} ({self.reason})"


def _linux() -> None:
    if not sys.platform.startswith("linux"):
        raise UnsupportedPlatformError(
            errno.ENOSYS,
            f"memory limits for a child process use Linux cgroups or RLIMIT_DATA; this is "
            f"{sys.platform} (macOS ignores RLIMIT_DATA for mmap'd memory): run the lab on Linux",
        )


def _try_mkdir(parent: Path) -> str | None:
    """Create and remove a probe cgroup in ``parent``: None if that worked, else why not."""
    probe = parent / f"mmlab-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError as exc:
        return f"cannot create a cgroup in {parent}: {exc.strerror}"
    try:
        probe.rmdir()
    except OSError as exc:
        return f"created a probe cgroup in {parent} but cannot remove it: {exc.strerror}"
    return None


def _words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _v1(dirs: list[tuple[Path, Path, int]]) -> Mechanism:
    leaves = [leaf for leaf, _, version in dirs if version == 1]
    if not leaves:
        return Mechanism(CGROUP_V1, False, "no cgroup v1 memory hierarchy for this process")
    leaf = leaves[0]
    why_not = _try_mkdir(leaf)
    if why_not:
        return Mechanism(CGROUP_V1, False, why_not + " (root or a delegated cgroup is needed)")
    return Mechanism(
        CGROUP_V1, True, f"this process may create a memory cgroup in {leaf}", str(leaf)
    )


def _v2(dirs: list[tuple[Path, Path, int]]) -> Mechanism:
    found = [(leaf, top) for leaf, top, version in dirs if version == 2]
    if not found:
        return Mechanism(CGROUP_V2, False, "no cgroup v2 hierarchy is mounted for this process")
    leaf, top = found[0]
    # A v2 cgroup with processes may not have children with controllers: go beside ours
    # (the root cgroup is the exception: it may hold both).
    parent = leaf if leaf == top else leaf.parent
    controllers = _words(parent / "cgroup.controllers")
    if "memory" not in controllers:
        listed = ", ".join(controllers) or "none"
        return Mechanism(
            CGROUP_V2, False, f"no memory controller in {parent} (its controllers: {listed})"
        )
    if "memory" not in _words(parent / "cgroup.subtree_control"):
        return Mechanism(
            CGROUP_V2,
            False,
            f"the memory controller is not enabled for the children of {parent} "
            "(cgroup.subtree_control lacks memory)",
        )
    if not os.access(parent / "cgroup.procs", os.W_OK):
        return Mechanism(
            CGROUP_V2, False, f"may not move a process in {parent} (cgroup.procs not writable)"
        )
    why_not = _try_mkdir(parent)
    if why_not:
        return Mechanism(CGROUP_V2, False, why_not)
    return Mechanism(
        CGROUP_V2, True, f"this process may create a memory cgroup in {parent}", str(parent)
    )


def _user_manager(dirs: list[tuple[Path, Path, int]]) -> Path | None:
    """The cgroup of this user's systemd manager (``user@UID.service``) above ours, if any."""
    for leaf, _, version in dirs:
        if version == 2:
            for d in [leaf, *leaf.parents]:
                if d.name == f"user@{os.getuid()}.service":
                    return d
    return None


def _scope(dirs: list[tuple[Path, Path, int]]) -> Mechanism:
    if shutil.which("busctl") is None:
        return Mechanism(SCOPE, False, "no busctl (systemd) on this machine")
    runtime = os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS") and not Path(runtime, "bus").exists():
        return Mechanism(SCOPE, False, f"no user session bus ({runtime}/bus does not exist)")
    manager = _user_manager(dirs)
    if manager is None:
        return Mechanism(SCOPE, False, "this process is not under a systemd user manager")
    if "memory" not in _words(manager / "cgroup.controllers"):
        return Mechanism(
            SCOPE, False, f"systemd does not delegate the memory controller to {manager}"
        )
    return Mechanism(
        SCOPE, True, f"likely: the user's systemd manager delegates memory ({manager})"
    )


def _rlimit() -> Mechanism:
    release = os.uname().release
    try:
        major, minor = (int(x) for x in release.split(".")[:2])
    except ValueError:
        return Mechanism(RLIMIT, False, f"cannot read the kernel version from {release!r}")
    if (major, minor) < (4, 7):
        return Mechanism(
            RLIMIT, False, f"Linux {release}: RLIMIT_DATA caps private writable mappings from 4.7"
        )
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        return Mechanism(
            RLIMIT, True, f"setrlimit needs no privilege (hard limit here: {hard:,} bytes)"
        )
    return Mechanism(
        RLIMIT,
        True,
        "setrlimit needs no privilege; Linux 4.7+ counts the virtual size of private writable "
        "mappings (VmData)",
    )


def mechanisms(proc: Path = Path("/proc/self"), prefix: Path = Path("/")) -> list[Mechanism]:
    """Every mechanism, strongest first, each usable here or not and why."""
    _linux()
    try:
        dirs = _cgroup_dirs("memory", proc, prefix)
    except (OSError, ValueError) as exc:
        broken = f"cannot read {proc}/cgroup or mountinfo: {exc}"
        return [
            Mechanism(CGROUP_V1, False, broken),
            Mechanism(CGROUP_V2, False, broken),
            Mechanism(SCOPE, False, broken),
            _rlimit(),
        ]
    return [_v1(dirs), _v2(dirs), _scope(dirs), _rlimit()]


def best(proc: Path = Path("/proc/self"), prefix: Path = Path("/")) -> Mechanism:
    """The strongest usable mechanism; its ``reason`` also says why the stronger ones are not."""
    found = mechanisms(proc, prefix)
    for i, m in enumerate(found):
        if m.usable:
            weaker_why = "; ".join(f"{s.name}: {s.reason}" for s in found[:i])
            if weaker_why:
                return Mechanism(m.name, True, f"{m.reason} (not stronger: {weaker_why})", m.parent)
            return m
    return Mechanism(RLIMIT, False, "; ".join(f"{m.name}: {m.reason}" for m in found))


def scope_command(pid: int, budget: int, unit: str) -> list[str]:
    """The D-Bus call ``systemd-run --user --scope -p MemoryMax=`` makes, for a running pid:
    a transient scope holding ``pid``, with no swap, that ends when its process exits."""
    return [
        "busctl",
        "--user",
        "call",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        unit,
        "fail",
        "3",
        "PIDs",
        "au",
        "1",
        str(pid),
        "MemoryMax",
        "t",
        str(budget),
        "MemorySwapMax",
        "t",
        "0",
        "0",
    ]
