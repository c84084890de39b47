"""Shared fixtures: stores in a temporary directory on a disk filesystem."""

from __future__ import annotations

import pytest

from mmlab import RecordStore

FIELDS = ("mu", "alpha", "U0")


def value_row(i: int) -> list[float]:
    """The values record ``i`` gets in the fixtures, so any record can be checked."""
    return [float(i), i + 0.5, -2.0 * i]


def smiles_of(i: int) -> str:
    return "C" * (i % 7 + 1) + f"O{i}"


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "records.mms"


@pytest.fixture
def filled(store_path):
    """A flushed, closed store of 100 records; returns its path."""
    with RecordStore.create(store_path, FIELDS, capacity=16) as store:
        store.extend((smiles_of(i), value_row(i)) for i in range(100))
    return store_path


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Keep the QM9 conversion cache of test runs out of the user's own cache."""
    import os

    os.environ["MMLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("mmlab-cache"))


def run_in_child(fn, *args, timeout: float = 60.0) -> None:
    """Run ``fn(*args)`` in a forked child and fail here if it raised, died or hung.

    For tests whose failure mode is a signal (SIGBUS) or a hang: either would take pytest
    down with it if the test ran in this process.
    """
    import os
    import select
    import signal
    import traceback

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        message = b""
        try:
            os.close(read_end)
            fn(*args)
        except BaseException:
            message = traceback.format_exc().encode()
        finally:
            os.write(write_end, message[-60000:] or b"ok")
            os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], timeout)
        output = os.read(read_end, 65536) if ready else None
    finally:
        os.close(read_end)
        if output is None:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if output is None:
        pytest.fail(f"{fn.__name__} hung: no result in {timeout} s")
    if os.WIFSIGNALED(status):
        pytest.fail(f"{fn.__name__} was killed by {signal.Signals(os.WTERMSIG(status)).name}")
    if output != b"ok":
        pytest.fail(f"{fn.__name__} failed in the child:\n{output.decode()}")


@pytest.fixture
def report(capsys):
    """Print one ``torture: ...`` line past pytest's capture: what a torture test tried and
    what it found, shown in every run."""
    import sys

    def emit(text: str) -> None:
        with capsys.disabled():
            print(f"\ntorture: {text}", file=sys.stderr)

    return emit
