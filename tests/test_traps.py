"""mmlab.course.traps: an open h5py.File cannot go to spawned workers; the lazy fix can."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest

from mmlab.course import loadermatrix, traps, workers

h5py = pytest.importorskip("h5py")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="smaps_rollup")
MiB = 2**20
ERROR = "TypeError: h5py objects cannot be pickled"


@pytest.fixture(scope="module")
def h5(tmp_path_factory):
    n = 3000
    smiles = [f"C{i}O" for i in range(n)]
    values = np.arange(n * 19, dtype=np.float64).reshape(n, 19)
    return traps.build_h5(tmp_path_factory.mktemp("h") / "q.h5", smiles, values)


def test_the_holder_and_the_fix_read_the_same_records(h5):
    holder, lazy = traps.H5Holder(h5), traps.H5Dataset(h5)
    assert len(holder) == len(lazy) == 3000
    for i in (0, 1234, 2999):
        assert holder[i][0] == lazy[i][0] == f"C{i}O"
        np.testing.assert_array_equal(holder[i][1], lazy[i][1])
        assert lazy[i][1].dtype == np.float32


def test_an_open_h5py_file_fails_to_pickle_with_the_message_printed(h5):
    holder = traps.H5Holder(h5)
    assert loadermatrix.pickled_bytes(holder) == ERROR
    assert traps.pickle_line("holder", holder) == f"holder: cannot be pickled: {ERROR}"


def test_the_lazy_fix_pickles_its_path_only(h5):
    lazy = traps.H5Dataset(h5)
    lazy[7]  # opened in this process: the open file must not travel
    size = loadermatrix.pickled_bytes(lazy)
    assert isinstance(size, int) and size < h5.stat().st_size / 10
    copy = pickle.loads(pickle.dumps(lazy))
    assert copy._file is None and copy[7][0] == "C7O"
    assert " bytes (the file: " in traps.pickle_line("lazy", lazy, h5.stat().st_size)


def test_spawned_workers_fail_on_the_holder_and_run_on_the_fix(h5):
    pytest.importorskip("torch")
    failed = traps.attempt_epoch(traps.H5Holder(h5), "holder")
    assert failed == ERROR  # and torch's warning about it did not escape (warnings are errors)
    fixed = traps.attempt_epoch(traps.H5Dataset(h5), "lazy", max_batches=2)
    assert isinstance(fixed, workers.EpochRun) and fixed.batches == 2
    lines = traps.trap_lines(failed, fixed, fixed)
    assert lines[0].endswith(ERROR) and "+0.0 MiB over the lazy worker; private dirty" in lines[1]
    assert traps.h5_outcome(failed, fixed, ERROR) == "error"
    why = traps.why_h5(failed, fixed, fixed, h5.stat().st_size)
    assert ERROR in why and "pickles only its path" in why and "no copy of the data" in why


def _run(uss):
    mem = [{"private_dirty": uss, "private_clean": 0, "uss": uss, "pss_file": 0}] * 2
    return workers.EpochRun("r", 1.0, 0.5, 100, 2, mem, mem, 0.1, 0.1, "spawn")


def test_outcome_tells_copied_from_shared():
    reference = _run(100 * MiB)
    assert traps.h5_outcome(_run(130 * MiB), reference, 40 * MiB) == "copied"
    assert traps.h5_outcome(_run(101 * MiB), reference, 40 * MiB) == "shared"
    why = traps.why_h5(_run(101 * MiB), _run(101 * MiB), _run(60 * MiB), 40 * MiB)
    assert "documented not to" in why and "compare again" in why
