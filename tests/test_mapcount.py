"""mmlab.course.mapcount: the cost of one mapping, and the limits on how many, measured."""

from __future__ import annotations

import mmap
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmlab import bench
from mmlab.course import mapcost, mapcount
from mmlab.instruments.stats import Spread

PAGE = mmap.PAGESIZE
LIMIT = int(Path("/proc/sys/vm/max_map_count").read_text())


@pytest.fixture
def pages(tmp_path):
    path = tmp_path / "pages.bin"
    path.write_bytes(bytes(64 * PAGE))
    return path


def test_the_arms_run_and_leave_nothing_behind(pages):
    vmas, fds = mapcount.count_vmas(), mapcount.count_fds()
    with open(pages, "rb") as f:
        mapcost.python_mmaps(f.fileno(), 20)
        mapcost.python_mmaps(f.fileno(), 20, pages=64)
        mapcost.bare_mmaps(f.fileno(), 20)
        mapcost.fd_calls(f.fileno(), 20)
        mapcost.refused_mmaps(f.fileno(), 20)
    mapcost.ctypes_calls(20)
    assert mapcount.count_fds() == fds
    assert abs(mapcount.count_vmas() - vmas) < 10  # the allocator may map or unmap an arena


def test_bare_mmaps_reports_a_failed_call():
    with pytest.raises(OSError):
        mapcost.bare_mmaps(-1, 1)  # a shared mapping of no file: EBADF


def test_held_mappings_each_take_a_vma_and_a_file_descriptor(pages):
    with mapcount.held(pages, 50) as counts:
        assert counts.n == 50
        assert counts.vmas_during - counts.vmas_before == 50
        assert counts.fds_during - counts.fds_before == 50
    assert mapcount.count_fds() == counts.fds_before


@pytest.mark.skipif(shutil.which("setarch") is None, reason="needs setarch")
def test_held_mappings_are_not_merged_under_the_legacy_layout(pages):
    # legacy layout places each new mapping above the last: consecutive file offsets merged
    code = f"""
from mmlab.course import mapcost, mapcount
with mapcount.held({str(pages)!r}, 50) as c:
    print(c.vmas_during - c.vmas_before)
"""
    done = subprocess.run(["setarch", "-L", sys.executable, "-c", code], capture_output=True,
                          text=True)  # fmt: skip
    if done.returncode != 0 and "setarch" in done.stderr:
        pytest.skip(f"setarch -L refused here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == 50


def test_a_child_that_reaches_neither_limit_says_so(pages):
    found = mapcount.fill_python_mmaps(pages, cap=300)
    assert found.error is None and found.calls == 300
    assert found.end == "stopped at the cap of 300" and "stopped at the cap of 300" in str(found)


def test_cost_split_adds_up(pages):
    n = 200
    with open(pages, "rb") as f:
        fd = f.fileno()
        arms = {
            mapcost.ONE_PAGE: lambda: mapcost.python_mmaps(fd, n),
            mapcost.LARGE: lambda: mapcost.python_mmaps(fd, n, pages=64),
            mapcost.BARE: lambda: mapcost.bare_mmaps(fd, n),
            mapcost.FD_CALLS: lambda: mapcost.fd_calls(fd, n),
            mapcost.REFUSED: lambda: mapcost.refused_mmaps(fd, n),
            mapcost.CTYPES: lambda: mapcost.ctypes_calls(n),
        }
        split = mapcost.cost_split(bench.compare(arms, repeats=3), n, pages=64)
        mapcost.plot_per_call(bench.compare(arms, repeats=1), n)
    parts = (split.python, split.kernel, split.fd, split.rest)
    for whole, kernel, fd_work, rest in zip(*(p.samples for p in parts), strict=True):
        assert kernel + fd_work + rest == pytest.approx(whole)
    assert split.python.median > 0 and len(split.large_over_one.samples) == 3
    assert "of which" in str(split) and "64-page mapping" in str(split)
    assert split.ctypes_mmap.median > 0 and "ctypes' own cost" in str(split)


def _split(shares):
    """A Split whose system calls take ``shares`` of 1 µs, round by round."""
    one = Spread.of([1.0] * len(shares))
    parts = [Spread.of(shares), Spread.of([1 - s for s in shares]), Spread.of([0.0] * len(shares))]
    return mapcost.Split(10, 10, one, one, *parts, one, one)


def test_the_larger_part_is_named_only_when_the_rounds_agree():
    assert _split([0.6, 0.62, 0.58, 0.61, 0.63, 0.6, 0.59]).larger_part() == "kernel"
    assert _split([0.4, 0.42, 0.38, 0.41, 0.43, 0.4, 0.39]).larger_part() == "python"
    straddling = _split([0.44, 0.44, 0.45, 0.5, 0.55, 0.56, 0.6])  # 44% [44%–55%] in review
    assert straddling.larger_part() is None
    assert "this run cannot tell" in str(straddling)
    claim = mapcost.overhead_claim(straddling)
    assert claim["verdict"].startswith("true:") and "cannot tell" in claim["verdict"]
    slow = mapcost.Split(10, 10, Spread.of([3.0] * 7), *[Spread.of([1.0] * 7)] * 6)
    assert mapcost.overhead_claim(slow)["verdict"].startswith("not shown by this run")


def test_first_refusal_from_the_two_limits():
    assert mapcount.first_refusal(65_530, 1_024) == "EMFILE"
    assert mapcount.first_refusal(65_530, 1_048_576) == "ENOMEM"
    assert mapcount.first_refusal(65_530, "unlimited") == "ENOMEM"
    # the cap is above the 1,048,576 some distributions allow, so their ENOMEM is reached
    assert mapcount.first_refusal(1_048_576, 1_048_576) == "ENOMEM"
    assert mapcount.first_refusal(2_000_000, 2_000_000) is None  # both above the cap
    assert mapcount.first_refusal(1_048_576, 1_000, cap=1_000) is None
    # vm.max_map_count unknown: the limits cannot say, unless both stop at the cap anyway
    assert mapcount.first_refusal(None, 1_024) == "unknown"
    assert mapcount.first_refusal(None, "unlimited") is None
    assert "cannot say" in mapcount.describe_refusal("unknown")


def test_one_mapping_reserves_a_quarter_of_the_address_space():
    assert mapcount.reserve(mapcount.address_space_top() // 4)


def test_the_address_space_is_a_power_of_two():
    top = mapcount.address_space_top()
    assert top >= 2**32 and top & (top - 1) == 0


def test_a_child_meets_vm_max_map_count():
    found = mapcount.fill_vmas()
    assert found.max_map_count == LIMIT
    if LIMIT < mapcount.DEFAULT_CAP:
        assert found.error == "ENOMEM"
        assert LIMIT - 2 <= found.vmas <= LIMIT
    else:
        assert found.error is None
    assert "mprotect" in str(found)


def test_a_child_stops_at_the_cap():
    found = mapcount.fill_vmas(cap=2_000)
    assert found.error is None and found.vmas <= 2_000
    assert "stopped at the cap of 2,000" in str(found)


def test_python_mmaps_meet_the_open_file_limit_first_when_it_is_lower(pages):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # the child inherits it
    try:
        found = mapcount.fill_python_mmaps(pages)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert found.error == "EMFILE" and found.nofile_soft == 256
    assert 256 - 64 < found.calls < 256  # the interpreter holds a few files itself


def test_a_failing_child_is_an_error_not_a_crash(tmp_path):
    with pytest.raises(RuntimeError, match="the child"):
        mapcount.fill_python_mmaps(tmp_path / "missing.bin")


def test_the_child_counter_reads_maps_in_small_chunks():
    # a chunk far smaller than /proc/self/maps: lines split across reads still count once
    small, large = mapcount._MapsCounter(64), mapcount._MapsCounter(1 << 20)
    assert small() == large() == mapcount.count_vmas()


def test_limits_and_refusal_in_words():
    text = mapcount.describe_limits(65_530, 1_024, 2**47, True)
    assert "128 TiB" in text and "was accepted" in text and f"{mapcount.DEFAULT_CAP:,}" in text
    assert "EMFILE first (the open-file limit is lower)" in mapcount.describe_refusal("EMFILE")
    assert "neither" in mapcount.describe_refusal(None)
    unknown = mapcount.describe_limits(None, "unlimited", 2**47, False)
    assert "vm.max_map_count: unknown here" in unknown and "was refused (RLIMIT_AS" in unknown


def _refusal(error, calls, nofile):
    return mapcount.Refusal("x", calls, error, 40, 40 + calls, 65_530, nofile, 0.1, 1_100_000)


def test_the_fragmentation_claim_is_worded_from_the_reservation(monkeypatch):
    vmas, files = _refusal("ENOMEM", 32_000, 1_024), _refusal("EMFILE", 1_000, 1_024)
    kept = mapcost.fragmentation_claim(2**47, True, vmas, files)
    assert "quarter of it accepted" in kept["measured"] and "65,530" in kept["measured"]
    assert kept["verdict"].startswith("partly true: on 64-bit")
    assert "RLIMIT_NOFILE was the lower" in kept["verdict"]
    monkeypatch.setattr(mapcount, "address_space_limit", lambda: 8 * 2**30)  # ulimit -v 8 GiB
    capped = mapcost.fragmentation_claim(2**47, False, vmas, files)
    assert "quarter of it refused (RLIMIT_AS 8.0 GiB)" in capped["measured"]
    assert "not the limit" not in capped["verdict"] and "RLIMIT_AS" in capped["verdict"]
