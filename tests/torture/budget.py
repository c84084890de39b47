"""How much torture to run, and with which seed.

Each torture test runs a quick version in every ``make test`` and a full one under
``make torture`` (``MMLAB_TORTURE=full``). Random choices come from one seed per test, drawn
anew each run (so more gets covered over time), printed in the test's ``torture:`` line, and
pinned with ``MMLAB_TORTURE_SEED`` to replay a run.
"""

from __future__ import annotations

import os
import secrets

FULL = os.environ.get("MMLAB_TORTURE") == "full"


def size(quick: int, full: int) -> int:
    """How many cases to run: ``quick`` in ``make test``, ``full`` under ``make torture``."""
    return full if FULL else quick


def seed() -> int:
    """This run's seed: ``MMLAB_TORTURE_SEED`` if set, else a fresh one."""
    return int(os.environ.get("MMLAB_TORTURE_SEED") or secrets.randbits(32))
