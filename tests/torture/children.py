"""Forked children for the torture tests: start one safely, and reap it by a deadline."""

from __future__ import annotations

import os
import signal
import time
import warnings


def fork() -> int:
    """``os.fork()``, without Python 3.12+'s warning about threads in the parent.

    numpy's BLAS threads trigger that warning; the children never call BLAS and leave with
    ``os._exit``, and if one hung anyway its deadline kills it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def reap(pid: int, deadline: float, poll: float = 0.001) -> int:
    """The wait status of ``pid``, SIGKILLed once ``deadline`` (``time.monotonic``) passed."""
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(poll)
    os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]
