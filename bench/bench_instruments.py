"""Benchmark: what the instruments cost, each against the floor of what it must do.

    python bench/bench_instruments.py

Budgets, stated as ratios measured in the same run so that a slow or noisy machine moves
both sides (this project's build machine is a shared 2-core VM):

- ``measure()`` costs at most 5x the floor of what it must read by hand on every use: one
  ``getrusage``, one ``perf_counter`` and one ``pread`` each of ``/proc/self/io`` and
  ``/proc/self/statm`` (descriptors kept open, as ``measure()`` keeps them). It reads all of
  that twice, on entry and on exit, so 2x is the least any implementation could cost.
  Both are timed in the same rounds, interleaved, with the options' costs beside them.
- ``RSSSampler`` at 100 Hz, RSS only: its thread uses under 2% of one core. Beside it, in
  the same rounds, a thread that only wakes at 100 Hz and reads nothing: the floor of any
  sampler written in Python on this machine.

Every figure is the median over rounds, with the spread (min to max) in brackets.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import psutil

from mmlab import RSSSampler, measure
from mmlab.instruments.sampler import _descendants

QUICK = os.environ.get("MMLAB_QUICK") == "1"
ROUNDS = 5 if QUICK else 15
CALLS = 2_000  # per method per round
SAMPLER_ROUNDS = 2 if QUICK else 5
SAMPLER_SECONDS = 1.0  # per configuration per round


def _median_spread(values: list[float], scale: float = 1.0, unit: str = "") -> str:
    low, mid, high = min(values) * scale, statistics.median(values) * scale, max(values) * scale
    return f"{mid:,.2f}{unit} [{low:,.2f} to {high:,.2f}]"


def _rounds(methods: dict[str, Callable[[], object]], calls: dict[str, int]) -> dict:
    """Seconds per call of each method, one value per round; methods in rotating order."""
    per_call: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for r in range(ROUNDS):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, n = methods[name], calls[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            per_call[name].append((time.perf_counter() - start) / n)
    return per_call


def measure_overhead() -> None:
    """measure() against the floor of its reads, interleaved in the same rounds."""
    io = os.open("/proc/self/io", os.O_RDONLY | os.O_CLOEXEC)
    statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
    getrusage, who, pread, clock = (
        resource.getrusage,
        resource.RUSAGE_SELF,
        os.pread,
        time.perf_counter,
    )

    def floor() -> None:
        getrusage(who)
        clock()
        pread(io, 4096, 0)
        pread(statm, 4096, 0)

    def plain() -> None:
        with measure():
            pass

    def kinds() -> None:
        with measure(memory_kinds=True):
            pass

    def uss_pss() -> None:
        with measure(uss_pss=True):
            pass

    methods = {"floor": floor, "measure()": plain, "memory_kinds": kinds, "uss_pss": uss_pss}
    calls = {"floor": CALLS, "measure()": CALLS, "memory_kinds": CALLS, "uss_pss": CALLS // 20}
    per_call = _rounds(methods, calls)
    os.close(io)
    os.close(statm)
    ratios = [m / f for m, f in zip(per_call["measure()"], per_call["floor"], strict=True)]
    ratio = statistics.median(ratios)
    print(f"measure(), {ROUNDS} interleaved rounds of {CALLS:,} calls (median [min to max]):")
    print(f"  floor of its reads       {_median_spread(per_call['floor'], 1e6, ' us')}")
    print(f"  measure()                {_median_spread(per_call['measure()'], 1e6, ' us')}")
    print(
        f"  ratio, round by round    {_median_spread(ratios, unit='x')} "
        f"(budget <= 5x: {'ok' if ratio <= 5 else 'MISSED'})"
    )
    print(f"  memory_kinds=True        {_median_spread(per_call['memory_kinds'], 1e6, ' us')}")
    print(f"  uss_pss=True             {_median_spread(per_call['uss_pss'], 1e6, ' us')}")


def _thread_cpu(thread: threading.Thread) -> float:
    """CPU seconds a thread has used, to the nanosecond (psutil's threads() counts ticks)."""
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def _wake_only_share(seconds: float, interval: float = 0.01) -> float:
    """CPU share of a thread that wakes at 100 Hz the way RSSSampler does and reads nothing."""
    stopping = threading.Lock()
    stopping.acquire()

    def run() -> None:
        next_at = time.perf_counter() + interval
        while not stopping.acquire(timeout=max(0.0, next_at - time.perf_counter())):
            next_at += interval

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.05)
    before = _thread_cpu(thread)
    time.sleep(seconds)
    used = _thread_cpu(thread) - before
    stopping.release()
    thread.join()
    return used / seconds


def _sampler_share(seconds: float, **options) -> float:
    sampler = RSSSampler(interval=0.01, **options).start()
    time.sleep(0.05)
    before = _thread_cpu(sampler._thread)
    time.sleep(seconds)
    used = _thread_cpu(sampler._thread) - before
    sampler.stop()
    return used / seconds


def sampler_overhead() -> None:
    """RSSSampler's thread at 100 Hz, each configuration against a thread that only wakes."""
    configs: dict[str, dict] = {
        "wake-ups only (floor)": {},
        "RSS": {},
        "RSS by kind": {"memory_kinds": True},
        "RSS + USS/PSS": {"uss_pss": True},
        "by kind + USS/PSS": {"uss_pss": True, "memory_kinds": True},
        "RSS, 2 children": {"children": True},
        "by kind, 2 children": {"children": True, "memory_kinds": True},
    }
    shares: dict[str, list[float]] = {name: [] for name in configs}
    names = list(configs)
    children = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(2)
    ]
    try:
        for r in range(SAMPLER_ROUNDS):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                if name.startswith("wake-ups"):
                    shares[name].append(_wake_only_share(SAMPLER_SECONDS))
                else:
                    shares[name].append(_sampler_share(SAMPLER_SECONDS, **configs[name]))
        process = psutil.Process()
        listing = _rounds(
            {
                "psutil children()": lambda: process.children(recursive=True),
                "/proc children files": lambda: _descendants(process.pid),
            },
            {"psutil children()": 50, "/proc children files": 500},
        )
    finally:
        for child in children:
            child.kill()
            child.wait()
    print(
        f"RSSSampler at 100 Hz, share of one core used by its thread, {SAMPLER_ROUNDS} "
        f"interleaved rounds of {SAMPLER_SECONDS:g} s:"
    )
    for name, values in shares.items():
        verdict = ""
        if name == "RSS":
            verdict = f" (target < 2%: {'ok' if statistics.median(values) < 0.02 else 'MISSED'})"
        print(f"  {name:24s} {_median_spread(values, 100, '%')}{verdict}")
    machine = sum(1 for entry in os.listdir("/proc") if entry.isdigit())
    print(f"Finding the children, per call ({machine} processes on this machine):")
    for name, values in listing.items():
        print(f"  {name:24s} {_median_spread(values, 1e6, ' us')}")


def main() -> None:
    measure_overhead()
    sampler_overhead()


if __name__ == "__main__":
    main()
