"""mmlab.course.readrace: notebook 04's ratios, recorded numbers and claim row, on fake races."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

from mmlab import bench
from mmlab.course import readrace

sys.path.insert(0, str(Path(__file__).parent))
from test_bench import _fake  # a sweep entry with given per-round times

KEY = ("sequential", "warm", 2**20)


def _race(mmap_seconds, block=2**20, quick=False):
    times = {"read": [0.02] * 5, "mmap slice": mmap_seconds, "numpy.memmap sum": [0.015] * 5}
    r = _fake("sequential", "warm", block, times, quick=quick)
    r.params |= {"pattern": "sequential", "cache": "warm"}
    r.margin = bench.MARGIN
    return r


def _report():
    fact = SimpleNamespace(value=8192, known=True)
    return SimpleNamespace(read_ahead_kb=fact, eviction_works=SimpleNamespace(value=True))


def test_race_lines_compare_with_read_by_the_strict_rule():
    text = readrace.race_lines(_race([0.0195] * 5))
    assert "mmap slice / read: 1.03x" in text and "within 5%" in text
    assert "numpy.memmap sum / read: 1.33x" in text and "sum faster in 5 of 5" in text
    assert "section 3 races this case again" in text
    assert "section 3" not in readrace.race_lines(_race([0.0195] * 5), again=False)


def test_the_claim_judges_the_case_raced_twice_on_both_races(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 2**25)
    first = _race([0.021] * 5, quick=True)  # section 2: read ahead
    table = {
        ("sequential", "warm", 4096): _race([0.01] * 5, block=4096, quick=True),
        KEY: _race([0.017] * 5, quick=True),  # the sweep: mmap ahead
    }
    row = readrace.weigh_claim(first, table, _report(), path)
    verdict = row["verdict"]
    assert "mmap slice ahead of read() at 4 KiB" in verdict
    assert "no clear difference (or the two races disagree) at 1,024 KiB" in verdict
    assert "quick mode, provisional; sections 2 and 3 disagree on 1,024 KiB" in verdict
    assert "the memmap sum was faster than read() here" in verdict
    assert "1,024 KiB 1.18x [1.18–1.18] (section 2: 0.95x" in row["measured"]


def test_the_cache_claim_counts_the_copy_and_says_a_virtual_machine_cannot_tell(monkeypatch):
    from mmlab.course import readreveal

    monkeypatch.setattr(readreveal, "l3_bytes", lambda: 480 * 2**20)
    vm = SimpleNamespace(hypervisor=SimpleNamespace(value=True))
    text = readrace.cache_fit(256 * 2**20, 256 * 2**20, vm)
    assert "768 MiB" in text and "host's" in text and "fits" not in text
    bare = SimpleNamespace(hypervisor=SimpleNamespace(value=False))
    assert "main memory" in readrace.cache_fit(256 * 2**20, 256 * 2**20, bare)
    assert "may read from that cache" in readrace.cache_fit(32 * 2**20, 32 * 2**20, bare)
    monkeypatch.setattr(readreveal, "l3_bytes", lambda: None)
    assert "unknown" in readrace.cache_fit(2**20, 2**20, bare)


def test_a_per_block_cost_within_the_noise_is_called_so():
    small = _race([0.0100, 0.0101, 0.0102, 0.0099, 0.0100], block=4096)
    small.params["size"] = 2**25
    small.rows = [
        r if r.name != "read" else _fake("s", "w", 4096, {"read": [0.03] * 5}).rows[0]
        for r in small.rows
    ]
    large = _race([0.0100, 0.0102, 0.0098, 0.0101, 0.0099])
    large.params["size"] = 2**25
    table = {("sequential", "warm", 4096): small, KEY: large}
    why = readrace.why_block_gain(table)
    assert "mmap slice's cost per block did not rise above this run's noise" in why
    assert "a lower bound" in why


def test_section_4s_reasons_use_this_notebooks_cache_line_and_call_pages_per_fault_averages(
    monkeypatch,
):
    from mmlab.course import readreveal
    from mmlab.instruments import reasons

    printed = (
        "Caches: the file is 256 MiB and fits in the 480 MiB last-level (L3) cache this CPU "
        "reports (in a virtual machine: the host's); transparent huge pages back 100% of it\n"
        "  at most 149 pages per fault here: more than the 16 pages fault-around maps"
    )
    monkeypatch.setattr(reasons, "sweep_explained", lambda *a, **k: printed)
    monkeypatch.setattr(readreveal, "l3_bytes", lambda: 480 * 2**20)
    report = _report()
    report.hypervisor = SimpleNamespace(value=True)
    table = {KEY: _race([0.02] * 5)}
    table[KEY].params["size"] = 256 * 2**20
    text = readrace.sweep_explained(table, report, 256 * 2**20)
    assert "fits in" not in text and "768 MiB" in text and "host's cache" in text
    assert "; transparent huge pages back 100%" in text
    assert "at most" not in text and "149 pages per fault on average" in text
