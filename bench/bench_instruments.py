"""Benchmark: what the instruments themselves cost.

    python bench/bench_instruments.py

Targets (from the issue): ``measure()`` under 50 us per use without USS/PSS; ``RSSSampler``
at 100 Hz under 2% of one core without PSS (PSS reads smaps_rollup and costs more).
"""

from __future__ import annotations

import time

import psutil

from mmlab import RSSSampler, measure


def measure_overhead(n: int = 20_000) -> float:
    """Seconds per empty ``with measure():`` block."""
    start = time.perf_counter()
    for _ in range(n):
        with measure():
            pass
    return (time.perf_counter() - start) / n


def sampler_cpu_share(seconds: float = 5.0, **options) -> tuple[float, int]:
    """Fraction of one core the sampler's thread used at 100 Hz, and its sample count."""
    process = psutil.Process()
    sampler = RSSSampler(interval=0.01, **options).start()
    thread_id = sampler._thread.native_id

    def cpu() -> float:
        times = {t.id: t.user_time + t.system_time for t in process.threads()}
        return times.get(thread_id, 0.0)

    before = cpu()
    time.sleep(seconds)
    used = cpu() - before
    sampler.stop()
    return used / seconds, len(sampler)


def main() -> None:
    per_use = measure_overhead()
    ok = "ok" if per_use < 50e-6 else "MISSED"
    print(f"measure(): {per_use * 1e6:.1f} us per use (target < 50 us: {ok})")
    share, samples = sampler_cpu_share()
    ok = "ok" if share < 0.02 else "MISSED"
    print(
        f"RSSSampler at 100 Hz, RSS: {share:.1%} of one core, {samples} samples in 5 s "
        f"(target < 2%: {ok})"
    )
    share, samples = sampler_cpu_share(uss_pss=True)
    print(
        f"RSSSampler at 100 Hz, RSS + USS/PSS: {share:.1%} of one core, {samples} samples in 5 s "
        "(no target: PSS reads smaps_rollup)"
    )


if __name__ == "__main__":
    main()
