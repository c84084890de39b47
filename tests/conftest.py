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


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    """``executed("03")``: that notebook run alone, in quick mode, in a fresh copy of
    ``notebooks/`` without ``data/`` (as in a fresh clone); run once per session.

    Returns ``(notebook, seconds, results)``: the executed nbformat node, its run time and
    what it recorded (``mmlab.course.results``), for the tests of each notebook's claims.
    """
    import os
    import shutil
    import time
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    from mmlab.course import results

    source = Path(__file__).resolve().parent.parent / "notebooks"
    done: dict[str, tuple] = {}

    def run(number: str):
        if number not in done:
            (path,) = source.glob(f"{number}_*.ipynb")
            root = tmp_path_factory.mktemp(f"notebooks-{number}")
            shutil.copytree(source, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("data"))
            notebook = nbformat.read(root / path.name, as_version=4)
            client = NotebookClient(
                notebook,
                timeout=NOTEBOOK_CELL_TIMEOUT_S,
                kernel_name="python3",
                resources={"metadata": {"path": str(root)}},
            )
            start = time.perf_counter()
            client.execute(env={**os.environ, "MMLAB_QUICK": "1"})
            seconds = time.perf_counter() - start
            done[number] = (notebook, seconds, results.from_notebook(notebook))
        return done[number]

    return run


NOTEBOOK_CELL_TIMEOUT_S = 300
