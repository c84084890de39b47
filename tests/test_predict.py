"""Predictions: locked before the measurement, revealed after it with how far off and why."""

from __future__ import annotations

import pytest

from mmlab.course import predict


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(predict, "_LOCKED", {})
    monkeypatch.setattr(predict, "_REVEALED", {})


@pytest.mark.parametrize(
    ("guess", "measured", "says", "right"),
    [
        (5, 2048, "410x your prediction, off by 2,043", False),
        (2000, 2048, "close (1.02x your prediction)", True),
        (2, 3, "1.5x your prediction, off by 1", False),
        (50.0, 55.7, "1.11x your prediction", False),
        (8, 0, "none at all", False),
        (0, 3, "your prediction was 0", False),
        (0, 0, "exactly right", True),
        (100, 10, "10x below it, off by 90", False),
        (7, 7, "exactly right", True),
    ],
)
def test_a_number_is_compared_as_a_ratio(capsys, guess, measured, says, right):
    predict.lock("03", "pages", guess, unit="pages")
    shown = predict.reveal("03", "pages", measured, why="read_ahead_kb decides it")
    out = capsys.readouterr().out
    assert says in out and "Why: read_ahead_kb decides it" in out
    assert shown.right is right


def test_a_choice_is_right_or_not(capsys):
    predict.lock("04", "faster", "mmap")
    assert predict.reveal("04", "faster", "read", why="copies cost less here").right is False
    predict.lock("04", "faster", "Read")
    assert predict.reveal("04", "faster", "read").right is True
    predict.lock("03", "hint", "MADV_RANDOM")
    assert predict.reveal("03", "hint", "random").right is True
    assert "changed after the result was shown" in capsys.readouterr().out


def test_without_a_prediction_the_reveal_still_explains(capsys):
    predict.lock("05", "bytes", None)
    shown = predict.reveal("05", "bytes", 20_000_000, unit="bytes", why="each flush writes a page")
    out = capsys.readouterr().out
    assert "No prediction yet" in out and "Measured: 20,000,000 bytes" in out
    assert "Why: each flush writes a page" in out and shown.right is None
    predict.reveal("05", "never_locked", 3)
    assert "No prediction was locked in" in capsys.readouterr().out


def test_locked_lists_the_predictions_in_the_order_made():
    predict.lock("06", "a", 1)
    predict.lock("06", "b", "x")
    assert [(p.key, p.value) for p in predict.locked()] == [("a", 1), ("b", "x")]


def test_revealed_keeps_the_last_reveal_of_each_key():
    predict.lock("03", "pages", 5)
    predict.reveal("03", "pages", 10)
    predict.reveal("03", "pages", 2048)
    assert predict.revealed()["03", "pages"].measured == 2048


def test_a_ratio_unit_follows_its_number(capsys):
    predict.lock("06", "ratio", 2, unit="x")
    predict.reveal("06", "ratio", 4)
    out = capsys.readouterr().out
    assert "locked in: 2x." in out and "measured: 4x" in out


def test_an_unknown_measurement_judges_no_prediction(capsys):
    predict.lock("03", "bytes", 8, unit="MiB")
    shown = predict.reveal("03", "bytes", None, why="/proc/self/io is missing here")
    out = capsys.readouterr().out
    assert shown.right is None and "could not measure it" in out and "missing here" in out
    assert "not what happened" not in out and repr(shown).startswith("Reveal(")


def test_a_measurement_shows_as_many_digits_as_the_printout(capsys):
    predict.reveal("06", "mib", 124.6, unit="MiB")
    predict.reveal("06", "big", 12345.6)
    out = capsys.readouterr().out
    assert "124.6 MiB" in out and "12,346" in out


def test_running_the_lock_again_unchanged_is_not_a_changed_prediction(capsys):
    predict.lock("03", "pages", 16)
    predict.reveal("03", "pages", 2048)
    predict.lock("03", "pages", 16)  # the cell run again, same value
    predict.reveal("03", "pages", 2048)
    assert "changed after" not in capsys.readouterr().out
    predict.lock("03", "pages", 2048)
    predict.reveal("03", "pages", 2048)
    assert "changed after" in capsys.readouterr().out


def test_a_measurement_of_the_other_sign_says_so(capsys):
    predict.lock("06", "gap", 50, unit="MiB")
    predict.reveal("06", "gap", -2.5)
    assert "the opposite sign, off by 52.5" in capsys.readouterr().out
