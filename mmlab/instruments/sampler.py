"""Sample memory in the background while code runs: RSS over time, and optionally more.

``RSSSampler`` runs a thread that records, every ``interval`` seconds, a timestamp and this
process's RSS; optionally RSS by kind (``memory_kinds``), USS and PSS (``uss_pss``),
page-fault counts (``faults``), and the same summed over child processes (``children``:
DataLoader workers, say). ``mark(label)`` notes a moment so the plot can show it, and
``plot(stack="kind")`` stacks memory by kind.

What the series mean: RSS counts every page mapped into the process, shared or not, so
processes that map one file each count it in full. USS counts only pages no other process
has; PSS splits each shared page between the processes sharing it, so PSS summed over
processes is the real total. By kind (see ``mmlab.proc``): anonymous memory
(``rss_anon``) is the process's own, what copy-on-read costs; file-backed memory
(``rss_file``) is page cache the kernel can reclaim; ``rss_shmem`` is shared memory. In
every sample ``rss == rss_anon + rss_file + rss_shmem`` (one read of ``/proc/PID/status``);
with USS/PSS, ``pss_anon``, ``pss_file`` and ``pss_shmem`` split PSS the same way.

Cost: RSS, by kind or not, and fault counts cost a few microseconds per process per sample;
at 100 Hz the thread's wake-ups cost more than that (``bench/bench_instruments.py``). USS
and PSS read ``smaps_rollup``, which walks every mapped page: a tenth of a millisecond for a
small process, more the more memory it maps. A value the OS cannot give is NaN in its
series, and ``unavailable`` says why.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field, fields

import numpy as np
import psutil

from mmlab.instruments.live import draw_marks
from mmlab.instruments.proc import MemoryByKind, memory_by_kind

__all__ = ["RSSSampler", "file_memory"]

_HAS_PROC = sys.platform.startswith("linux")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MEMORY_NAMES = tuple(f.name for f in fields(MemoryByKind) if f.name != "unavailable")
# Stacked plot: label and tab20 colour of each kind; the next tab20 colour is its lighter
# shade, used for the children.
_KIND_STYLES = {"anon": ("anonymous", 0), "file": ("file-backed", 2), "shmem": ("shmem", 4)}


def _read_small(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


# /proc/PID/task/TID/children needs CONFIG_PROC_CHILDREN, which common distributions enable.
_CHILDREN_FILES = os.path.exists(f"/proc/self/task/{threading.get_native_id()}/children")


def _descendants(pid: int) -> list[int]:
    """Every descendant of ``pid`` now, from /proc/PID/task/TID/children.

    Read by hand because psutil's ``children()`` finds them by reading ``/proc/N/stat`` of
    every process on the machine: 0.6 ms per call here with 77 processes, growing with the
    machine, against one small file per thread of each process in the tree. Neither is a
    snapshot: the kernel warns that a child exiting during the read can hide another one,
    for that sample.
    """
    found: list[int] = []
    parents = [pid]
    while parents:
        parent = parents.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue  # exited meanwhile
        for tid in threads:
            try:
                kids = [
                    int(kid) for kid in _read_small(f"/proc/{parent}/task/{tid}/children").split()
                ]
            except OSError:
                continue  # the thread exited meanwhile
            found += kids
            parents += kids
    return found


@dataclass
class _Samples:
    times: list[float] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)


class RSSSampler:
    """Sample memory in a background thread; use ``with RSSSampler() as s:`` or start/stop.

    ``memory_kinds=True`` records ``rss_anon``, ``rss_file`` and ``rss_shmem`` (and, with
    ``uss_pss=True``, ``pss_anon``, ``pss_file``, ``pss_shmem``); ``children=True`` adds
    each series summed over all descendants as ``children_<name>``, and ``n_children``.
    ``names`` lists what was recorded, ``series(name)`` gives it (bytes, or counts), and
    ``unavailable`` says why a series holds NaN.
    """

    def __init__(
        self,
        interval: float = 0.01,
        *,
        children: bool = False,
        uss_pss: bool = False,
        memory_kinds: bool = False,
        faults: bool = False,
        pid: int | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.interval = interval
        self.children = children
        self.uss_pss = uss_pss
        self.memory_kinds = memory_kinds
        self.faults = faults
        self._process = psutil.Process(pid)
        self._handles: dict[int, psutil.Process] = {}  # the children's, kept between samples
        self._fds: dict[tuple[int, str], int] = {}  # see _proc
        self._samples = _Samples()
        self._unavailable: dict[str, str] = {}
        self._marks: list[tuple[float, str]] = []
        self._stopping = threading.Lock()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._lock = threading.Lock()

    # -- running --------------------------------------------------------------------------

    def start(self) -> RSSSampler:
        """Start sampling (again from zero)."""
        if self._thread is not None:
            raise RuntimeError("the sampler is already running")
        self._samples = _Samples()
        self._unavailable = {}
        self._marks = []
        self._stopping = threading.Lock()
        self._stopping.acquire()  # held while running: stop() releases it
        self._t0 = time.perf_counter()
        self._sample()  # one sample at t = 0, so even a short run has a baseline
        self._thread = threading.Thread(target=self._run, name="mmlab-RSSSampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> RSSSampler:
        """Stop sampling, after one last sample."""
        if self._thread is None:
            return self
        self._stopping.release()
        self._thread.join()
        self._thread = None
        self._sample()
        self._forget(keep=set())
        return self

    def __enter__(self) -> RSSSampler:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def mark(self, label: str) -> None:
        """Note a moment (drawn as a vertical line by ``plot``)."""
        self._marks.append((time.perf_counter() - self._t0, label))

    def _run(self) -> None:
        # Waiting on a lock that stop() releases is one call into C per wake-up, where
        # Event.wait builds a new Condition waiter each time; at 100 Hz wake-ups are the cost.
        stopping, interval, clock = self._stopping, self.interval, time.perf_counter
        next_at = clock() + interval
        while not stopping.acquire(timeout=max(0.0, next_at - clock())):
            self._sample()
            next_at += interval
            if next_at < clock():  # fell behind: skip, don't burst
                next_at = clock() + interval

    def _handle(self, pid: int) -> psutil.Process:
        if pid == self._process.pid:
            return self._process
        handle = self._handles.get(pid)
        if handle is None:
            handle = self._handles[pid] = psutil.Process(pid)
        return handle

    def _proc(self, pid: int, name: str) -> bytes:
        """``/proc/PID/name`` through a descriptor kept open while the process is sampled.

        psutil opens the file on every call, through Python's buffered I/O: 30 us per call
        here once a 10 ms sleep has cooled the caches, against 8 us for this ``pread``, and
        that was a third of what each sample cost. A descriptor stays tied to its process:
        once the process is gone this raises ProcessLookupError, rather than reading
        whichever process reuses its number.
        """
        fd = self._fds.get((pid, name))
        if fd is None:
            try:
                fd = os.open(f"/proc/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise ProcessLookupError(f"no process {pid}") from None
            self._fds[pid, name] = fd
        return os.pread(fd, 4096, 0)

    def _forget(self, keep: set[int]) -> None:
        """Close the descriptors and drop the handles of processes not in ``keep``."""
        for pid, name in [key for key in self._fds if key[0] not in keep]:
            os.close(self._fds.pop((pid, name)))
        for pid in self._handles.keys() - keep:
            del self._handles[pid]

    def _read(self, pid: int, prefix: str) -> dict[str, float]:
        """One process's values now; raises ProcessLookupError or NoSuchProcess once it is gone."""
        if self.memory_kinds:
            memory = memory_by_kind(pid, uss_pss=self.uss_pss)
            values = {
                name: np.nan if value is None else value
                for name in _MEMORY_NAMES
                if (value := getattr(memory, name)) is not None or name in memory.unavailable
            }
            for name, why in memory.unavailable.items():
                self._unavailable.setdefault(prefix + name, why)
        elif self.uss_pss:
            values = self._uss_pss(pid, prefix)
        elif _HAS_PROC:
            values = {"rss": int(self._proc(pid, "statm").split()[1]) * _PAGE}
        else:
            values = {"rss": self._handle(pid).memory_info().rss}
        if self.faults:
            values["minor_faults"], values["major_faults"] = self._faults(pid, prefix)
        return values

    def _uss_pss(self, pid: int, prefix: str) -> dict[str, float]:
        handle = self._handle(pid)
        try:
            info = handle.memory_full_info()
            why = f"psutil gives no {{}} on {sys.platform}"
        except psutil.AccessDenied:  # smaps_rollup of another user's process
            info = handle.memory_info()
            why = f"no permission to read the {{}} of process {pid} (its smaps_rollup)"
        values = {"rss": info.rss}
        for name in ("uss", "pss"):
            values[name] = getattr(info, name, np.nan)
            if name not in info._fields:
                self._unavailable.setdefault(prefix + name, why.format(name.upper()))
        return values

    def _faults(self, pid: int, prefix: str) -> tuple[float, float]:
        """Cumulative minor and major faults; read by hand: psutil 7.2 has no page_faults()."""
        if _HAS_PROC:
            fields = self._proc(pid, "stat").rsplit(b")", 1)[1].split()
            return float(fields[7]), float(fields[9])  # minflt and majflt: fields 10 and 12
        counts = self._handle(pid).memory_info()  # macOS: pfaults (all faults), pageins (major)
        if not hasattr(counts, "pageins"):
            why = f"psutil gives no page faults on {sys.platform}"
            self._unavailable.setdefault(f"{prefix}minor_faults", why)
            self._unavailable.setdefault(f"{prefix}major_faults", why)
        return getattr(counts, "pfaults", np.nan), getattr(counts, "pageins", np.nan)

    def _children(self) -> list[int]:
        if _CHILDREN_FILES:
            pids = _descendants(self._process.pid)
        else:  # psutil finds them by reading every process's parent: slower, but everywhere
            found = self._process.children(recursive=True)
            self._handles.update((child.pid, child) for child in found)
            pids = [child.pid for child in found]
        self._forget({self._process.pid, *pids})
        return pids

    def _sample(self) -> None:
        now = time.perf_counter() - self._t0
        try:
            own = self._read(self._process.pid, "")
        except (ProcessLookupError, psutil.NoSuchProcess):
            return  # the process is gone
        except (OSError, psutil.AccessDenied) as err:  # e.g. /proc mounted with hidepid
            self._unavailable.setdefault("rss", f"cannot read process {self._process.pid}: {err}")
            return
        row = dict(own)
        if self.children:
            kids = []
            for pid in self._children():
                try:
                    kids.append(self._read(pid, "children_"))
                except (ProcessLookupError, psutil.NoSuchProcess):
                    continue  # exited between listing and reading
                except (OSError, psutil.AccessDenied) as err:  # a child that changed user
                    for key in own:
                        self._unavailable.setdefault(f"children_{key}", f"process {pid}: {err}")
                    kids.append(dict.fromkeys(own, np.nan))
            for key in own:
                row[f"children_{key}"] = float(sum(kid[key] for kid in kids))
            row["n_children"] = len(kids)
        with self._lock:
            self._samples.times.append(now)
            for key, value in row.items():
                self._samples.values.setdefault(key, []).append(value)

    # -- results --------------------------------------------------------------------------

    def series(self, name: str) -> np.ndarray:
        """One recorded series as an array, e.g. ``"rss"``, ``"children_pss"``."""
        with self._lock:
            if name not in self._samples.values:
                known = sorted(self._samples.values)
                raise KeyError(f"no series {name!r}; this sampler recorded {known}")
            return np.array(self._samples.values[name], dtype=float)

    @property
    def names(self) -> list[str]:
        """The names of the recorded series, for ``series(name)``."""
        with self._lock:
            return list(self._samples.values)

    @property
    def unavailable(self) -> dict[str, str]:
        """Why a series holds NaN: series name to the reason the OS gave no value."""
        return dict(self._unavailable)

    @property
    def times(self) -> np.ndarray:
        """Seconds since start, one per sample."""
        with self._lock:
            return np.array(self._samples.times)

    @property
    def rss(self) -> np.ndarray:
        """This process's RSS in bytes, one per sample."""
        return self.series("rss")

    @property
    def uss(self) -> np.ndarray:
        return self.series("uss")

    @property
    def pss(self) -> np.ndarray:
        return self.series("pss")

    @property
    def marks(self) -> list[tuple[float, str]]:
        return list(self._marks)

    def __len__(self) -> int:
        return len(self._samples.times)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        peak = f", peak RSS {self.rss.max() / 2**20:,.1f} MiB" if len(self) else ""
        return f"<RSSSampler {state}, {len(self)} samples every {self.interval * 1e3:g} ms{peak}>"

    def _recorded(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Times and every series, read at once so that all have one length."""
        with self._lock:
            times = np.array(self._samples.times)
            values = {k: np.array(v, dtype=float) for k, v in self._samples.values.items()}
        return times, values

    def plot(self, ax=None, series: tuple[str, ...] | None = None, *, stack: str | None = None):
        """Plot memory series (MiB) against time, with the marks.

        ``stack="kind"`` stacks memory by kind (needs ``memory_kinds=True``): PSS by kind
        when USS/PSS were sampled, since PSS adds up across processes, else RSS by kind;
        with children, theirs in lighter shades. ``series`` then adds lines on top.
        """
        import matplotlib.pyplot as plt

        if stack not in (None, "kind"):
            raise ValueError(f"stack must be None or 'kind', got {stack!r}")
        if ax is None:
            _, ax = plt.subplots(figsize=(8, 3.5))
        ax.clear()
        times, recorded = self._recorded()
        if stack == "kind":
            _stack_kinds(ax, times, recorded)
        wanted = series or ()
        if stack is None and series is None:
            wanted = [k for k in recorded if k != "n_children" and not k.endswith("faults")]
        for name in wanted:
            if name not in recorded:
                raise KeyError(f"no series {name!r}; this sampler recorded {sorted(recorded)}")
            ax.plot(times, recorded[name] / 2**20, label=name.replace("_", " "))
        draw_marks(ax, self._marks)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("MiB")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize=8)
        return ax

    def live(
        self,
        every: float = 0.25,
        *,
        series: tuple[str, ...] | None = None,
        stack: str | None = None,
        **figure_kwargs,
    ):
        """A ``mmlab.live.LiveFigure`` that redraws this sampler's plot on ``update()``."""
        from mmlab.instruments.live import LiveFigure

        return LiveFigure(
            lambda ax: self.plot(ax, series, stack=stack), every=every, **figure_kwargs
        )


def _stack_kinds(ax, times: np.ndarray, recorded: dict[str, np.ndarray]) -> None:
    import matplotlib.pyplot as plt

    total = "pss" if "pss_anon" in recorded else "rss"
    if f"{total}_anon" not in recorded:
        raise ValueError("stack='kind' needs RSSSampler(memory_kinds=True)")
    colors = plt.get_cmap("tab20").colors
    layers, labels, palette = [], [], []
    for kind, (label, color) in _KIND_STYLES.items():
        for prefix, shade in (("", 0), ("children_", 1)):
            name = f"{prefix}{total}_{kind}"
            if name in recorded:
                layers.append(recorded[name] / 2**20)
                labels.append(f"{label} (children)" if prefix else label)
                palette.append(colors[color + shade])
    ax.stackplot(times, *layers, labels=labels, colors=palette)
    title = f"{total.upper()} by kind"
    if total == "rss" and "children_rss" in recorded:
        title += " (shared pages counted in each process)"
    ax.set_title(title, fontsize=9)


def file_memory(path: str, pids: list[int]) -> dict[str, int]:
    """How much of one mapped file the given processes hold, summed: RSS, PSS and USS bytes.

    Read from each process's smaps (``psutil.Process.memory_maps``), so it isolates one file
    from everything else the processes hold. Linux only; processes that exited are skipped.
    """
    totals = {"rss": 0, "pss": 0, "uss": 0}
    target = str(path)
    for pid in pids:
        try:
            maps = psutil.Process(pid).memory_maps(grouped=True)
        except psutil.Error:
            continue
        for m in maps:
            if m.path == target:
                totals["rss"] += m.rss
                totals["pss"] += m.pss
                totals["uss"] += m.private_clean + m.private_dirty
    return totals
