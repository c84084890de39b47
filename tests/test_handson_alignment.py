"""Notebook 02's hands-on checks pass the reference solutions and fail plausible wrong answers:
an offset not aligned, a mapping too short or too long, read() instead of a mapping, one
mapping per view, copies instead of views. The explanations of the reveals say what the
numbers passed to them say."""

from __future__ import annotations

import mmap

import pytest

from mmlab.course import check, mapcount
from mmlab.course.handson import alignment
from mmlab.instruments import align

PAGE, GRAIN = mmap.PAGESIZE, mmap.ALLOCATIONGRANULARITY


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the checks make their files under data/


def mapped(f, length, offset):
    return mmap.mmap(f.fileno(), length, access=mmap.ACCESS_READ, offset=offset)


def right_range(path, offset, length):
    start = offset - offset % GRAIN
    with open(path, "rb") as f, mapped(f, offset + length - start, start) as m:
        return m[offset - start : offset - start + length]


def unaligned(path, offset, length):  # mmap at the offset asked: EINVAL unless aligned
    with open(path, "rb") as f, mapped(f, length, offset) as m:
        return m[:]


def too_short(path, offset, length):  # maps `length` bytes from the aligned start: short
    start = offset - offset % GRAIN
    with open(path, "rb") as f, mapped(f, length, start) as m:
        return m[offset - start : offset - start + length]


def to_the_end(path, offset, length):  # aligned, but maps to the end of the file
    start = offset - offset % GRAIN
    with open(path, "rb") as f, mapped(f, 0, start) as m:
        return m[offset - start : offset - start + length]


def with_read(path, offset, length):  # the right bytes, but no mapping at all
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def test_read_range_passes_the_solution():
    verdict = check.read_range(right_range)
    assert verdict.passed, verdict.text()
    assert verdict.measured["pages"] == verdict.measured["reference_pages"]


@pytest.mark.parametrize("wrong", [unaligned, too_short, to_the_end, with_read])
def test_read_range_fails_wrong_answers(wrong):
    verdict = check.read_range(wrong)
    assert not verdict.passed and verdict.off and verdict.hint, verdict.text()


def test_read_range_says_why_an_unaligned_offset_fails():
    verdict = check.read_range(unaligned)
    assert "allocation granularity" in verdict.hint
    assert any("Errno 22" in line or "EINVAL" in line for line in verdict.off)


def test_read_range_counts_the_pages_a_whole_file_mapping_takes():
    verdict = check.read_range(to_the_end)
    assert verdict.measured["pages"] > verdict.measured["reference_pages"]
    assert any("pages mapped; the range needs" in line for line in verdict.off)


def test_read_range_reports_a_raising_function_without_raising():
    def broken(path, offset, length):
        raise RuntimeError("not written yet")

    verdict = check.read_range(broken)
    assert not verdict.passed and "not written yet" in verdict.text()


def test_read_range_is_not_checkable_where_the_reference_fails(monkeypatch):
    def refused(path, offset, length, **kw):
        raise OSError(19, "No such device")  # a file system that cannot be mapped

    monkeypatch.setattr(alignment.align, "map_range", refused)
    verdict = check.read_range(right_range)
    assert not verdict.passed and verdict.measured == {"checkable": False}
    assert verdict.off[0].startswith("not checkable here") and "No such device" in verdict.off[0]


def test_windows_is_not_checkable_where_writes_are_not_seen_through_a_mapping(monkeypatch):
    # a file system whose mappings do not see pwrite (FUSE direct I/O): the reference's views
    # show stale bytes, as copies would; the check must say so, not crash or blame the student
    monkeypatch.setattr(alignment, "_reference_windows", copies)
    verdict = check.windows(one_mapping)
    assert not verdict.passed and "not checkable here" in verdict.off[0]
    assert "not seen through a mapping" in verdict.off[0]


def one_mapping(path, n):
    with open(path, "rb") as f:
        whole = memoryview(mmap.mmap(f.fileno(), n * PAGE, access=mmap.ACCESS_READ))
    return [whole[i * PAGE : (i + 1) * PAGE] for i in range(n)]


def one_per_view(path, n):
    with open(path, "rb") as f:
        return [
            memoryview(mmap.mmap(f.fileno(), PAGE, access=mmap.ACCESS_READ, offset=i * PAGE))
            for i in range(n)
        ]


def copies(path, n):  # no mapping held, but the views do not show the file
    with open(path, "rb") as f:
        data = f.read()
    return [memoryview(data[i * PAGE : (i + 1) * PAGE]) for i in range(n)]


def shifted(path, n):  # one mapping, but view i shows page i + 1
    with open(path, "rb") as f:
        whole = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    return [whole[(i + 1) * PAGE : (i + 2) * PAGE] for i in range(n)]


def test_windows_passes_one_mapping_sliced():
    verdict = check.windows(one_mapping)
    assert verdict.passed, verdict.text()
    assert verdict.measured["vmas"] == verdict.measured["reference_vmas"] == 1


def test_windows_fails_one_mapping_per_view_and_counts_what_it_holds():
    verdict = check.windows(one_per_view)
    assert not verdict.passed, verdict.text()
    n = verdict.measured["n"]
    assert verdict.measured["fds"] >= n - 1  # one duplicated descriptor per mmap.mmap
    assert verdict.measured["vmas"] > verdict.measured["reference_vmas"]


@pytest.mark.parametrize("wrong", [copies, shifted])
def test_windows_fails_copies_and_wrong_pages(wrong):
    verdict = check.windows(wrong)
    assert not verdict.passed and verdict.off, verdict.text()


def test_windows_frees_what_the_views_held():
    check.windows(one_per_view)
    assert alignment._held(alignment.Path("data/handson_windows.bin")) == (0, 0)


def test_the_offsets_explanation_names_what_this_machine_accepted():
    tried = {o: "accepted" if o % GRAIN == 0 else "refused: EINVAL (Invalid argument)"
             for o in (0, 100, 4096, 6000, 8192)}  # fmt: skip
    why = align.why_offsets(tried, GRAIN)
    accepted = [str(o) for o, outcome in tried.items() if outcome == "accepted"]
    assert f"Accepted: {', '.join(accepted)}" in why and f"{GRAIN:,} bytes here" in why
    assert align.sorted_offsets({8192, 0, 4096}) == [0, 4096, 8192]
    assert align.sorted_offsets(None) is None


def test_the_padding_explanation_follows_the_numbers():
    small = {"a": (65536, 16_000), "b": (131072, 16_000)}
    large = {"a": (65536, 1_046_648), "b": (65536 * 18, 1_046_648)}
    assert align.padding_side(small, "a", 200_000) == "more"
    assert align.padding_side(large, "a", 65536 * 40) == "less"
    assert "49,536 B of padding" in align.why_padding(small, "a", 200_000)


def test_the_tail_explanation_says_what_was_counted():
    tail = align.TailCost(100, 4096, 1, 1)
    assert align.tail_side(tail) == "same"
    assert "1 after read(), 1 after mmap" in align.why_tail(tail)
    hidden = align.TailCost(100, 4096, None, None, "no mincore")
    assert align.tail_side(hidden) is None  # unknown: the reveal judges no prediction
    assert "no mincore" in align.why_tail(hidden)


def test_the_alignment_claim_follows_the_tail_count():
    tried = {0: "accepted", 100: "refused: EINVAL (Invalid argument)"}
    counted = align.alignment_claim(tried, GRAIN, align.TailCost(100, 4096, 1, 1))
    assert (
        counted["verdict"].startswith("partly true")
        and "spent with read() too" in counted["verdict"]
    )
    assert "offsets 100 (EINVAL) refused" in counted["measured"]
    hidden = align.alignment_claim(tried, GRAIN, align.TailCost(100, 4096, None, None, "x"))
    assert "not counted here" in hidden["verdict"] and "spent with read()" not in hidden["verdict"]


def test_the_refusal_explanation_names_the_lower_limit():
    def refusal(error, calls, nofile):
        return mapcount.Refusal("x", calls, error, 40, 40 + calls, 65530, nofile, 0.1, 1_100_000)

    emfile = mapcount.why_refusal(refusal("EMFILE", 1020, 1024))
    assert "open-file limit is the lower" in emfile and "4 descriptors open before" in emfile
    assert "vm.max_map_count is the lower" in mapcount.why_refusal(refusal("ENOMEM", 9, 10**6))
    assert "where the child stopped" in mapcount.why_refusal(refusal(None, 1_100_000, 2**20))
    # the open-file limit is lower, but the VMAs the child started with ran out first
    close = mapcount.Refusal("x", 65_000, "ENOMEM", 520, 65_530, 65_530, 65_400, 0.1, 1_100_000)
    assert "started with 520 VMAs" in mapcount.why_refusal(close)
