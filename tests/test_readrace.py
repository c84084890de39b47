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
