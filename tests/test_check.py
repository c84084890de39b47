"""Every self-check exercise accepts its reference answer and rejects a wrong one."""

from __future__ import annotations

import pytest

from mmlab import check

WRONG = {
    "exercise_1_2": 1,
    "exercise_1_3": "SIGSEGV",
    "exercise_2_2": 0,
    "exercise_3_1": "a",
    "exercise_4_2": 0,
    "exercise_5_1": (73_045, 4),
    "exercise_6_1": 400,
    "exercise_6_3": 0,
    "exercise_7_1": "a",
    "exercise_7_2": "c",
    "exercise_8_1": 0,
    "exercise_8_2": 1200,
    "exercise_9_1": 2,
    "exercise_9_2": "a",
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
    assert check.exercise_3_1(None) is False
    assert "answer" in capsys.readouterr().out
