"""Every lab asks for predictions and reveals them, and has hands-on exercises whose hidden
solutions pass their checks while the untouched starters fail them."""

from __future__ import annotations

import pytest
from course_cells import define, exercises, predictions

from mmlab.course import check

NUMBERS = [f"{n:02d}" for n in range(1, 10)]
ALL_EXERCISES = [(n, e.name) for n in NUMBERS for e in exercises(n)]


@pytest.mark.parametrize("number", NUMBERS)
def test_each_prediction_is_locked_before_it_is_revealed(number):
    locks, reveals = predictions(number)
    assert len(locks) >= 3, f"{number} asks for {len(locks)} predictions"
    assert set(locks) == set(reveals), f"{number}: locked {locks}, revealed {reveals}"
    early = [k for k in locks if reveals[k] <= locks[k]]
    assert not early, f"{number}: revealed in or before the cell that locks them: {early}"


@pytest.mark.parametrize("number", NUMBERS)
def test_each_lab_has_two_checked_exercises_with_hidden_solutions(number):
    found = exercises(number)
    assert len(found) >= 2, f"{number} has {len(found)} hands-on exercises"
    for exercise in found:
        cell = exercise.solution_cell
        assert "solution" in cell.metadata.get("tags", [])
        assert cell.metadata.get("jupyter", {}).get("source_hidden") is True
        assert cell.metadata.get("jupyter", {}).get("outputs_hidden") is True
        assert exercise.check_cells >= 1, f"nothing calls check.{exercise.name}"
        assert callable(getattr(check, exercise.name))


@pytest.mark.parametrize(("number", "name"), ALL_EXERCISES)
def test_the_solution_passes_and_the_starter_fails(number, name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a check may make its files under data/, as in a notebook
    (exercise,) = [e for e in exercises(number) if e.name == name]
    judge = getattr(check, name)
    solved = judge(define(exercise.solution, exercise.defines))
    assert solved.passed, solved.text()
    unsolved = judge(define(exercise.starter, exercise.defines))
    assert not unsolved.passed, unsolved.text()
    assert unsolved.off or unsolved.hint
