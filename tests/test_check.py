"""Every self-check exercise accepts its reference answer and rejects a wrong one."""

from __future__ import annotations

import mmap

import pytest

from mmlab import check

WRONG = {
    "exercise_1_1": mmap.ACCESS_WRITE,
    "exercise_1_2": 1,
    "exercise_1_3": "SIGSEGV",
    "exercise_2_1": {0, 100},
    "exercise_2_2": 0,
    "exercise_2_3": "ENOSPC",
    "exercise_3_1": "a",
    "exercise_3_2": "MADV_SEQUENTIAL",
    "exercise_4_1": "major_faults",
    "exercise_4_2": 0,
    "exercise_5_1": (73_045, 4),
    "exercise_5_2": 19 * 256,
    "exercise_6_1": 400,
    "exercise_6_2": "PSS",
    "exercise_6_3": 0,
}


def test_every_exercise_has_a_wrong_answer_here():
    assert set(WRONG) == set(check.EXERCISES)
    assert all(hasattr(check, name) for name in check.EXERCISES)


@pytest.mark.parametrize("name", sorted(check.EXERCISES))
def test_reference_right_and_wrong_rejected(name, capsys):
    exercise = getattr(check, name)
    assert exercise(check.reference(name)) is True
    assert "Right." in capsys.readouterr().out
    assert exercise(WRONG[name]) is False
    assert "Not quite" in capsys.readouterr().out


def test_no_answer_repeats_the_question(capsys):
    assert check.exercise_3_2(None) is False
    assert "madvise" in capsys.readouterr().out


def test_forgiving_spelling():
    assert check.exercise_1_1("mmap.ACCESS_COPY") and check.exercise_6_2(" rss ")
    assert check.exercise_2_1([8192, 0, 4096, 65536] if mmap.ALLOCATIONGRANULARITY == 4096 else [])


def test_exercise_4_1_takes_either_name_of_the_counter():
    # the race's rows say storage_bytes (column "storage MiB"); measure() says read_bytes
    for answer in ("storage_bytes", "Storage MiB", "read_bytes", "m.read_bytes"):
        assert check.exercise_4_1(answer), answer
    assert not check.exercise_4_1("minor_faults")


def test_exercise_2_2_gives_the_share_of_the_file_for_this_page_size(capsys):
    assert check.exercise_2_2(-250_000 % mmap.PAGESIZE)
    assert f"{-250_000 % mmap.PAGESIZE / 250_000:.2%} of the file" in capsys.readouterr().out
