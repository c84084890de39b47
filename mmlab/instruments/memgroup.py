"""The cgroup ``mmlab.memlimitrun`` makes for one child: its limit, its counters, its removal.

``Cgroup.create`` makes a cgroup directory (v1 or v2) with a memory limit and no swap (where
swap accounting lets it say so); ``Scope`` asks the user's systemd manager for a transient
scope instead (``memlimit.scope_command``). Both read the same counters (``usage``, ``peak``,
``oom_kills``) and every counter they cannot read is None, never 0. ``remove`` first kills
whatever is still in the cgroup (a grandchild the function started), then removes it, and
returns why it could not rather than raising (it runs in a ``finally``).

``storage_read_bytes(pid)`` is the one reader of ``/proc/PID/io`` read_bytes here.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import time
from pathlib import Path

from mmlab.instruments.memlimit import scope_command
from mmlab.instruments.sysinfo import _cgroup_dirs

__all__ = ["Cgroup", "Scope", "storage_read_bytes"]

_names = itertools.count()
BUSCTL_TIMEOUT = 10.0  # seconds: a stuck user D-Bus must not hang the notebook


def _read(path: Path | str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _keyed(text: str | None, key: str) -> int | None:
    """The number after ``key`` in ``key value`` or ``key: value [kB]`` lines."""
    for line in (text or "").splitlines():
        words = line.replace(":", " ").split()
        if len(words) >= 2 and words[0] == key:
            return int(words[1])
    return None


def storage_read_bytes(pid: int | str = "self") -> int | None:
    """Bytes process ``pid`` caused to be read from storage (``/proc/PID/io`` read_bytes), or
    None where that file cannot be read (no CONFIG_TASK_IO_ACCOUNTING, some containers)."""
    return _keyed(_read(f"/proc/{pid}/io"), "read_bytes")


class Cgroup:
    """A cgroup made for one child: its limit, its counters, and its removal."""

    def __init__(self, path: Path | None, version: int) -> None:
        self.path, self.version = path, version
        v1 = version == 1
        self.usage_file = "memory.usage_in_bytes" if v1 else "memory.current"
        self.peak_file = "memory.max_usage_in_bytes" if v1 else "memory.peak"
        self.events_file = "memory.oom_control" if v1 else "memory.events"
        self.notes: list[str] = []

    @classmethod
    def create(cls, parent: str, version: int, budget: int) -> Cgroup:
        """A new cgroup in ``parent`` limited to ``budget`` bytes (and no swap where it can)."""
        path = Path(parent) / f"mmlab-{os.getpid()}-{next(_names)}"
        path.mkdir()
        group = cls(path, version)
        try:
            if version == 1:
                (path / "memory.limit_in_bytes").write_text(str(budget))
                swap = path / "memory.memsw.limit_in_bytes"  # memory + swap: no swap either
                if swap.exists():
                    swap.write_text(str(budget))
                else:
                    group.notes.append(
                        "swap accounting is off (no memory.memsw.limit_in_bytes): where the "
                        "machine has swap, the child's private memory could be swapped"
                    )
            else:
                (path / "memory.max").write_text(str(budget))
                if (path / "memory.swap.max").exists():
                    (path / "memory.swap.max").write_text("0")
                else:
                    group.notes.append("no memory.swap.max: the child's swap is not limited")
        except BaseException:
            group.remove()
            raise
        return group

    def place(self, pid: int) -> None:
        """Move ``pid`` into this cgroup."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def usage(self) -> dict[str, int | None]:
        """The charge, refaults, private and page-cache charge now; None where unreadable."""
        if self.path is None:
            return dict.fromkeys(("usage", "refaults", "anon", "file"))
        stat = _read(self.path / "memory.stat")
        refaults = _keyed(stat, "workingset_refault_file")
        if refaults is None:
            refaults = _keyed(stat, "workingset_refault")  # kernels before 5.9
        text = _read(self.path / self.usage_file)
        v1 = self.version == 1  # v1 names the anonymous charge "rss", the page cache "cache"
        return {
            "usage": int(text) if text else None,
            "refaults": refaults,
            "anon": _keyed(stat, "rss" if v1 else "anon"),
            "file": _keyed(stat, "cache" if v1 else "file"),
        }

    def peak(self) -> int | None:
        """The cgroup's own peak charge, or None (no counter before Linux 5.19 in v2)."""
        text = None if self.path is None else _read(self.path / self.peak_file)
        return int(text) if text else None

    def oom_kills(self) -> int | None:
        """How many of its processes the OOM killer killed, or None where unreadable."""
        return (
            None if self.path is None else _keyed(_read(self.path / self.events_file), "oom_kill")
        )

    def _kill_all(self) -> None:
        """SIGKILL whatever is left in the cgroup (``cgroup.kill`` from Linux 5.14)."""
        if self.path is None:
            return
        kill = self.path / "cgroup.kill"
        if self.version == 2 and kill.exists():
            with contextlib.suppress(OSError):
                kill.write_text("1")
                return
        for word in (_read(self.path / "cgroup.procs") or "").split():
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(word), signal.SIGKILL)

    def remove(self) -> str | None:
        """Kill what is left in it and remove it: None if that worked, else why not."""
        self._kill_all()
        # The kernel frees a cgroup a moment after its last process was reaped: retry.
        error: OSError | None = None
        for _ in range(100):
            try:
                self.path.rmdir()
                return None
            except FileNotFoundError:
                return None
            except OSError as exc:
                error = exc
                time.sleep(0.01)
        return f"could not remove the cgroup {self.path}: {error.strerror if error else '?'}"


class Scope(Cgroup):
    """A transient systemd scope: systemd makes the cgroup, and removes it when the child exits."""

    def __init__(self, budget: int) -> None:
        super().__init__(None, 2)  # no path until ``place`` has started the scope
        self.budget = budget
        self.unit = f"mmlab-{os.getpid()}-{next(_names)}.scope"

    def place(self, pid: int) -> None:
        """Start the scope holding ``pid`` (busctl, at most ``BUSCTL_TIMEOUT`` s)."""
        argv = scope_command(pid, self.budget, self.unit)
        try:
            subprocess.run(argv, check=True, capture_output=True, timeout=BUSCTL_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise OSError(f"busctl did not answer within {BUSCTL_TIMEOUT:g} s") from exc
        except subprocess.CalledProcessError as exc:
            said = (exc.stderr or b"").decode(errors="replace").strip()
            raise OSError(f"busctl could not start {self.unit}: {said}") from exc
        for leaf, _, version in _cgroup_dirs("memory", Path(f"/proc/{pid}"), Path("/")):
            if version == 2:
                self.path = leaf
                return
        raise OSError(f"pid {pid} is in no cgroup v2 after starting {self.unit}")

    def remove(self) -> str | None:
        """Kill what is left in it; systemd stops a scope whose processes all exited."""
        self._kill_all()
        return None
