"""The torture suite: crashes, fuzzed files, concurrent readers, a full disk, races.

Each test runs a quick version in every ``make test`` and a full one under ``make torture``
(``MMLAB_TORTURE=full``). Each prints what it tried and what it found, in one line that
starts with ``torture:`` (``make torture`` shows them; ``pytest -s`` does too).
"""

from __future__ import annotations

import os
import sys

import pytest

FULL = os.environ.get("MMLAB_TORTURE") == "full"


def size(quick: int, full: int) -> int:
    """How many cases to run: ``quick`` in ``make test``, ``full`` under ``make torture``."""
    return full if FULL else quick


@pytest.fixture
def report(capsys):
    """Print one ``torture:`` line past pytest's capture, so that every run shows it."""

    def emit(text: str) -> None:
        with capsys.disabled():
            print(f"\ntorture: {text}", file=sys.stderr)

    return emit
