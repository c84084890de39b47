"""Run a Python function in a forked child under a memory budget, and watch it.

``run(function, budget=...)`` forks (so a function defined in a notebook works), puts the
child under the strongest limit ``mmlab.memlimit`` found and then lets it start: it waits on
a pipe until the parent has moved it into its cgroup, or sets its own ``RLIMIT_DATA`` to what
it inherited plus the budget (a fork inherits the parent's heap, so the budget is *above*
what the child inherited). The child freezes the objects it inherited (``gc.freeze()``: the
collector would otherwise write to, and so copy, their pages), calls the function and sends
back its result or the exception through a pipe. Meanwhile the parent samples the child's
private and file-backed memory, its page faults and storage bytes read (``/proc/PID``), and
the cgroup's usage and refaults, and kills it at ``timeout``. The cgroup directory is always
removed, after killing anything the function left in it; where that fails, ``notes`` says
why (the kernel may keep a removed memory cgroup alive, "dying", until the page cache charged
to it is reclaimed: harmless, and visible in /proc/cgroups' count). A counter that cannot be
read stays unknown (NaN in the series, None in ``read_bytes``, ``refaults``, ``peak``).

The child cannot outlive its parent or take it down: it asks the kernel for SIGKILL when the
parent dies (``PR_SET_PDEATHSIG``, then checks it was not orphaned already), and raises its
own ``oom_score_adj`` to 1000, so an OOM of an enclosing cgroup (a memory-limited container)
kills the child before the notebook's kernel.

A ``LimitedRun`` says how it ended: ``"completed"``, ``"MemoryError"`` (an allocation the
limit refused), ``"killed by the OOM killer (SIGKILL)"`` (a cgroup's private memory past its
limit), or another error or signal. The function should return something small and picklable
and print nothing (a forked child's prints have nowhere to go).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import pickle
import resource
import select
import signal
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mmlab.instruments.memgroup import Cgroup, Scope, _keyed, _read, storage_read_bytes
from mmlab.instruments.memlimit import (
    CGROUP_V1,
    RLIMIT,
    SCOPE,
    Mechanism,
    UnsupportedPlatformError,
    _linux,
    best,
)

__all__ = ["OOM_KILLED", "LimitedRun", "UnsupportedPlatformError", "run"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

OOM_KILLED = "killed by the OOM killer (SIGKILL)"
_SERIES = ("t", "rss_anon", "rss_file", "minor_faults", "major_faults", "read_bytes")
_CGROUP_SERIES = ("usage", "refaults", "anon", "file")


@dataclass
class LimitedRun:
    """How one child ran under its budget, with what the parent sampled while it ran."""

    mechanism: Mechanism
    budget: int
    outcome: str = "not started"
    value: Any = None
    error: str = ""
    seconds: float = 0.0  # from starting the function to the child's exit
    samples: dict[str, list[float]] = field(default_factory=dict)
    start: dict[str, float] = field(default_factory=dict)
    cgroup_peak: int | None = None  # the cgroup's own peak (memory.max_usage_in_bytes/.peak)
    oom_kills: int | None = None
    notes: list[str] = field(default_factory=list)  # what this cgroup could not set

    @property
    def completed(self) -> bool:
        """Whether the function returned a value."""
        return self.outcome == "completed"

    def series(self, name: str) -> list[float]:
        """A sampled counter, from the child's start (private and file memory: their growth).
        NaN where it could not be read (a zombie's memory, a missing counter)."""
        base = self.start.get(name, 0.0) if name != "t" else 0.0
        base = float("nan") if base is None else base
        return [v - base for v in self.samples.get(name, [])]

    def _last(self, name: str) -> int | None:
        """The last known value of a counter, from the child's start, or None if unknown."""
        known = [v for v in self.series(name) if v == v]
        return int(known[-1]) if known else None

    @property
    def private_peak(self) -> int:
        """The child's largest growth of private memory (RssAnon) over what it inherited."""
        return int(max((v for v in self.series("rss_anon") if v == v), default=0.0))

    @property
    def peak(self) -> int | None:
        """The memory the limit counted at its peak: the cgroup's charge (private memory and
        page cache), or under RLIMIT_DATA the private memory the child added. None where a
        cgroup has no peak counter and nothing was sampled (``peak_source`` says why)."""
        if not self.mechanism.limits_page_cache:
            return self.private_peak
        if self.cgroup_peak is not None:
            return self.cgroup_peak
        sampled = [v for v in self.series("usage") if v == v]
        return int(max(sampled)) if sampled else None

    @property
    def peak_source(self) -> str:
        """Where ``peak`` comes from, or why it is unknown."""
        if not self.mechanism.limits_page_cache:
            return "RssAnon growth (RLIMIT_DATA counts no page cache)"
        if self.cgroup_peak is not None:
            return "the cgroup's own peak counter"
        if any(v == v for v in self.series("usage")):
            return (
                f"sampled every few ms (no peak counter: cgroup v2 has memory.peak from Linux "
                f"5.19; this is {os.uname().release}), so a short spike may be missed"
            )
        return "unknown: no peak counter and no sample of the cgroup's charge"

    @property
    def within_budget(self) -> bool | None:
        """Whether the peak stayed within the budget; None where the peak is unknown."""
        return None if self.peak is None else self.peak <= self.budget

    @property
    def major_faults(self) -> int | None:
        """Page faults the child waited on storage for, or None if never sampled."""
        return self._last("major_faults")

    @property
    def read_bytes(self) -> int | None:
        """Bytes the child caused to be read from storage (``/proc/PID/io`` read_bytes), or
        None where that file cannot be read (``read_bytes_source`` says why)."""
        return self._last("read_bytes")

    @property
    def read_bytes_source(self) -> str:
        """Where ``read_bytes`` comes from, or why it is unknown."""
        if self.read_bytes is not None:
            return "/proc/PID/io read_bytes"
        return (
            "unknown: /proc/PID/io could not be read (no CONFIG_TASK_IO_ACCOUNTING, or a "
            "container hides it)"
        )

    @property
    def refaults(self) -> int | None:
        """Pages the cgroup evicted and then had to read again, or None without a cgroup or
        where memory.stat has no workingset_refault counter."""
        return self._last("refaults")


def _sample(pid: int) -> dict[str, float | None] | None:
    status, stat = (_read(f"/proc/{pid}/{name}") for name in ("status", "stat"))
    io = storage_read_bytes(pid)
    if status is None or stat is None:
        return None
    kib = {
        k: int(v.split()[0]) * 1024
        for k, _, v in (ln.partition(":") for ln in status.splitlines())
        if k in ("RssAnon", "RssFile")
    }
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return {
        "rss_anon": kib.get("RssAnon"),  # None once the child has exited (a zombie)
        "rss_file": kib.get("RssFile"),
        "minor_faults": int(fields[7]),
        "major_faults": int(fields[9]),
        "read_bytes": io,  # None: /proc/PID/io is unreadable
    }


def _die_with(parent: int) -> None:
    """Ask for SIGKILL when the parent dies (a dead Jupyter kernel must not leave a thrashing
    child behind), and be the first an enclosing cgroup's OOM killer picks."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl: nobody would kill us
        os._exit(4)
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")  # raising one's own score needs no privilege


def _child(
    parent: int, go: int, reply: int, rlimit_budget: int | None, function, args, kwargs
) -> None:
    """In the forked child: wait to be placed, run, send the outcome back. Never returns."""
    try:
        _die_with(parent)
        if not os.read(go, 1):
            os._exit(3)  # the parent could not place us: run nothing
        if rlimit_budget is not None:
            data = _keyed(_read("/proc/self/status"), "VmData")
            if data is None:  # a guess could start the child past its limit: say so instead
                _send(reply, 0.0, ("error", "OSError", _NO_VMDATA, _NO_VMDATA))
                os._exit(0)
            ceiling = data * 1024 + rlimit_budget
            _, hard = resource.getrlimit(resource.RLIMIT_DATA)
            if hard != resource.RLIM_INFINITY:
                ceiling = min(ceiling, hard)
            resource.setrlimit(resource.RLIMIT_DATA, (ceiling, hard))
        gc.freeze()
        start = time.perf_counter()
        try:
            payload = ("value", function(*args, **kwargs))
        except BaseException as exc:  # the function may raise anything: send it back
            name, message = type(exc).__name__, str(exc)
            try:
                text = "".join(traceback.format_exception(exc)[-3:])
            except MemoryError:
                text = f"{name}: {message}"
            del exc
            payload = ("error", name, message, text)
        _send(reply, time.perf_counter() - start, payload)
    finally:
        os._exit(0)


_NO_VMDATA = "cannot read VmData from /proc/self/status, so RLIMIT_DATA cannot be set above it"


def _send(reply: int, seconds: float, payload: tuple) -> None:
    try:
        data = pickle.dumps((seconds, payload))
    except Exception as exc:
        data = pickle.dumps((seconds, ("error", "PicklingError", str(exc), str(exc))))
    view = memoryview(data)
    while view:
        view = view[os.write(reply, view) :]


def run(
    function: Callable,
    *args: Any,
    budget: int,
    mechanism: Mechanism | None = None,
    timeout: float = 120.0,
    interval: float = 0.02,
    on_sample: Callable[[LimitedRun], None] | None = None,
    **kwargs: Any,
) -> LimitedRun:
    """Run ``function(*args, **kwargs)`` in a forked child under ``budget`` bytes.

    ``mechanism`` defaults to ``memlimit.best()``; ``on_sample(run)`` is called after each
    sample (every ``interval`` s) with the run so far, e.g. to redraw a live figure.
    """
    _linux()
    mechanism = mechanism or best()
    if not mechanism.usable:
        raise OSError(f"no usable memory limit here: {mechanism.reason}")
    result = LimitedRun(mechanism, budget)
    result.samples = {name: [] for name in _SERIES}
    group: Cgroup | None = None
    fds: list[int] = []  # every pipe end still open here, closed in ``finally``

    def close(fd: int) -> None:
        fds.remove(fd)
        os.close(fd)

    try:
        if mechanism.name == SCOPE:
            group = Scope(budget)
        elif mechanism.name != RLIMIT:
            version = 1 if mechanism.name == CGROUP_V1 else 2
            group = Cgroup.create(mechanism.parent, version, budget)
        if group is not None:
            result.samples |= {name: [] for name in _CGROUP_SERIES}
            result.notes = list(group.notes)
        parent = os.getpid()
        go_r, go_w = os.pipe()
        fds += [go_r, go_w]
        reply_r, reply_w = os.pipe()
        fds += [reply_r, reply_w]
        with warnings.catch_warnings():
            # Python 3.12+ warns on fork in a threaded process (a notebook kernel is one);
            # the child only calls the function and os._exit()s.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            os.close(go_w)
            os.close(reply_r)
            _child(parent, go_r, reply_w, budget if group is None else None, function, args, kwargs)
        close(go_r)
        close(reply_w)
        _watch(result, pid, group, go_w, reply_r, timeout, interval, on_sample)
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if group is not None:
            why_not = group.remove()  # never raises: it must not hide the run's own error
            if why_not:
                result.notes.append(why_not)
    return result


def _watch(result, pid, group, go_w, reply_r, timeout, interval, on_sample) -> None:
    try:
        if group is not None:
            group.place(pid)
        result.start = _sample(pid) or {}
        if group is not None:
            # a v1 cgroup starts empty (charges stay where they were made): count from 0
            result.start |= {
                "usage": 0,
                "anon": 0,
                "file": 0,
                "refaults": group.usage()["refaults"],
            }
        os.write(go_w, b"g")
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    began = time.perf_counter()
    chunks: list[bytes] = []
    timed_out = False
    try:
        while True:
            exited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            now = _sample(pid)  # a zombie's counters are still there until it is reaped
            if now is not None:
                result.samples["t"].append(time.perf_counter() - began)
                for name, value in now.items():
                    series = result.samples[name]
                    if value is None:  # a zombie's memory is gone: not a measurement
                        value = float("nan")
                    series.append(value)
                if group is not None:
                    for name, value in group.usage().items():
                        result.samples[name].append(float("nan") if value is None else value)
            if group is not None:  # a scope's cgroup may be gone once the child is reaped
                _counters(result, group)
            if exited is not None:
                break
            if on_sample is not None:
                on_sample(result)
            if time.perf_counter() - began > timeout:
                os.kill(pid, signal.SIGKILL)
                timed_out = True
            ready, _, _ = select.select([reply_r], [], [], interval)
            if ready:
                chunks.append(os.read(reply_r, 1 << 20))
    except BaseException:  # an interrupt (or a failing on_sample): leave no child behind
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    _, status = os.waitpid(pid, 0)
    result.seconds = time.perf_counter() - began
    while chunk := os.read(reply_r, 1 << 20):
        chunks.append(chunk)
    _outcome(result, status, b"".join(chunks), timed_out)
    if on_sample is not None:
        on_sample(result)


def _counters(result: LimitedRun, group: Cgroup) -> None:
    """Read the cgroup's peak and OOM kills, keeping the last known values: the exit was
    seen (``WNOWAIT``) but not reaped yet, as systemd may remove a scope's cgroup after."""
    peak, kills = group.peak(), group.oom_kills()
    result.cgroup_peak = peak if peak is not None else result.cgroup_peak
    result.oom_kills = kills if kills is not None else result.oom_kills


def _outcome(result: LimitedRun, status: int, data: bytes, timed_out: bool) -> None:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if timed_out:
            result.outcome = "killed at the timeout (SIGKILL)"
        elif sig == signal.SIGKILL and result.oom_kills:
            result.outcome = OOM_KILLED
        elif sig == signal.SIGKILL and result.oom_kills is None and result.mechanism.name != RLIMIT:
            result.outcome = "killed by SIGKILL (the cgroup's OOM counter could not be read)"
        else:
            result.outcome = f"killed by {signal.Signals(sig).name}"
        return
    if not data:
        result.outcome = f"exited with status {os.WEXITSTATUS(status)} and no result"
        return
    try:
        result.seconds, payload = pickle.loads(data)
    except Exception as exc:  # truncated, or a class the parent can no longer import
        result.outcome = f"result could not be read: {type(exc).__name__}: {exc}"
        return
    if payload[0] == "value":
        result.outcome, result.value = "completed", payload[1]
    else:
        _, name, message, text = payload
        result.outcome = name if name == "MemoryError" else f"raised {name}"
        result.error = text or f"{name}: {message}"
