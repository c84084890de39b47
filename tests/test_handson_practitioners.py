"""Notebook 09's hands-on checks judge by measuring: plausible wrong answers fail them.

``worker_safe_memmap`` must fail a class that keeps its ``numpy.memmap`` (its pickle carries
the data), one that reads the file into memory, one that pickles only its path but loads the
whole file in each worker, one whose rows are wrong (in this process or only in the workers)
and one that cannot be pickled; it must pass the reference, a class sent by value as from a
notebook cell, and another right answer (``__reduce__`` naming the path). ``batch_getitems``
must fail a loop, a dataset with no ``__getitems__``, one that reads every record into a
list first, and batches in the wrong order or without repeats; it must pass ``take`` and
another right answer.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from course_cells import define

from mmlab.course import check
from mmlab.course.handson import batching, practitioners

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="USS and rchar come from /proc"
)


@pytest.fixture(autouse=True)
def quick_in_a_temp_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MMLAB_QUICK", "1")
    monkeypatch.chdir(tmp_path)  # the checks write their files under data/


@pytest.fixture
def no_workers(monkeypatch):
    """For answers that fail before the workers run: skip the seconds spawned workers take."""
    monkeypatch.setattr(practitioners, "_HAS_SMAPS_ROLLUP", False)


def test_the_checks_are_found_by_name():
    assert check.worker_safe_memmap is practitioners.worker_safe_memmap
    assert check.batch_getitems is practitioners.batch_getitems


# -- worker_safe_memmap ----------------------------------------------------------------------


def test_the_reference_passes_with_flat_workers():
    verdict = check.worker_safe_memmap(practitioners.ReferenceMemmapValues)
    assert verdict.passed, verdict.text()
    m = verdict.measured
    assert m["pickle_bytes"] < m["data_bytes"] / 100
    assert m["extra"] <= m["tolerance"] < m["data_bytes"] / 2


NOTEBOOK_CELL = """
import numpy as np


class Rows:  # as a notebook defines it: a spawned worker cannot import this class
    def __init__(self, path):
        self.path = path
        self.rows = np.load(path, mmap_mode="r")

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def __reduce__(self):  # rebuilt from the path: the worker maps the file itself
        return (type(self), (self.path,))
"""


def test_a_class_sent_by_value_with_reduce_passes():
    verdict = check.worker_safe_memmap(define(NOTEBOOK_CELL, "Rows"))
    assert verdict.passed, verdict.text()


class KeepsTheMemmap:
    def __init__(self, path):
        self.values = np.load(path, mmap_mode="r")

    def __len__(self):
        return len(self.values)

    def __getitem__(self, i):
        return self.values[i]


def test_a_memmap_attribute_pickles_its_data_and_fails(no_workers):
    verdict = check.worker_safe_memmap(KeepsTheMemmap)
    assert not verdict.passed and "a copy of the data" in verdict.off[0], verdict.text()
    assert verdict.measured["pickle_bytes"] >= verdict.measured["data_bytes"]
    assert "__getstate__" in verdict.hint
    # Nothing was measured of the workers yet: said as a note, never as something right.
    assert not any("workers" in line for line in verdict.right), verdict.text()
    assert "note:" in verdict.text()


def test_sizes_that_are_compared_share_one_unit():
    assert practitioners._sizes(76_800, 32_768) == ["75.0 KiB", "32.0 KiB"]
    assert practitioners._sizes(3 * 2**20, 512) == ["3.0 MiB", "0.0 MiB"]
    assert practitioners._sizes(10, 0) == ["10 bytes", "0 bytes"]


class ReadsIntoMemory(practitioners.ReferenceMemmapValues):
    def _mapped(self):
        if self._values is None:
            self._values = np.load(self.path)  # read(), not mapped: the pickle stays small
        return self._values


def test_reading_the_file_into_memory_fails(no_workers):
    verdict = check.worker_safe_memmap(ReadsIntoMemory)
    assert not verdict.passed and "read() calls" in verdict.off[0], verdict.text()
    assert verdict.measured["read_bytes"] >= verdict.measured["data_bytes"]


class LoadsInEachWorker(practitioners.ReferenceMemmapValues):
    def __setstate__(self, state):
        self.path = state["path"]
        self._values = np.load(self.path)  # a private copy in every worker


def test_a_small_pickle_that_loads_the_file_in_each_worker_fails():
    verdict = check.worker_safe_memmap(LoadsInEachWorker)
    assert not verdict.passed and "its own copy" in verdict.off[0], verdict.text()
    m = verdict.measured
    assert m["pickle_bytes"] < m["data_bytes"] / 100 and m["extra"] > m["tolerance"]


class WrongOnlyInWorkers(practitioners.ReferenceMemmapValues):
    def __setstate__(self, state):
        self.__dict__.update(state)
        self.shift = 1

    def __getitem__(self, i):
        return self._mapped()[(i + getattr(self, "shift", 0)) % len(self)]


def test_rows_wrong_only_in_the_workers_fail():
    verdict = check.worker_safe_memmap(WrongOnlyInWorkers)
    assert not verdict.passed and "not row" in verdict.off[0], verdict.text()


class ForgetsTheHeader(practitioners.ReferenceMemmapValues):
    def _mapped(self):
        header = np.load(self.path, mmap_mode="r")  # the shape and dtype, right
        return np.memmap(self.path, header.dtype, "r", 0, header.shape)  # offset 0: wrong


class HoldsALock:
    def __init__(self, path):
        self.path, self.lock, self.values = path, threading.Lock(), None  # a lock cannot be pickled

    def __len__(self):
        with self.lock:
            return len(np.load(self.path, mmap_mode="r"))

    def __getitem__(self, i):
        return np.load(self.path, mmap_mode="r")[i]


@pytest.mark.parametrize(
    ("wrong", "said"),
    [(ForgetsTheHeader, "not row"), (HoldsALock, "cannot be pickled")],
    ids=["wrong rows", "unpicklable"],
)
def test_wrong_rows_and_unpicklable_objects_fail(wrong, said, no_workers):
    verdict = check.worker_safe_memmap(wrong)
    assert not verdict.passed and said in verdict.off[0], verdict.text()


def test_an_exception_becomes_a_verdict():
    def broken(path):
        raise RuntimeError("not written yet")

    verdict = check.worker_safe_memmap(broken)
    assert not verdict.passed and "not written yet" in verdict.off[0]


def test_without_smaps_rollup_the_memory_is_said_not_measured(no_workers):
    verdict = check.worker_safe_memmap(practitioners.ReferenceMemmapValues)
    assert verdict.passed and "not measured here" in verdict.notes[-1], verdict.text()


# -- batch_getitems --------------------------------------------------------------------------


def test_take_passes_and_reads_no_record_singly():
    verdict = check.batch_getitems(practitioners.ReferenceBatches)
    assert verdict.passed, verdict.text()
    m = verdict.measured
    assert m["singles"] == 0 and m["calls"] == {"take": m["batches"]}
    assert m["speed_vs_loop"] > 0


class ColumnsAndTake(practitioners.ReferenceBatches):
    def __getitems__(self, indices):
        rows = np.asarray(indices)
        values = np.stack([self.store.column(f)[rows] for f in self.store.fields], axis=1)
        return [(s, v.tolist()) for s, v in zip(self.store.take(rows)[0], values, strict=True)]


def test_another_bulk_answer_passes():
    verdict = check.batch_getitems(ColumnsAndTake)
    assert verdict.passed, verdict.text()


class Loop(practitioners.ReferenceBatches):
    def __getitems__(self, indices):
        return [self.store[i] for i in indices]


class NoGetitems:
    def __init__(self, store):
        self.store = store

    def __len__(self):
        return len(self.store)

    def __getitem__(self, i):
        return self.store[i]


class Preloaded(practitioners.ReferenceBatches):
    def __init__(self, store):
        super().__init__(store)
        self.records = list(store)  # every record a Python object, read one at a time

    def __getitems__(self, indices):
        return [self.records[i] for i in indices]


class Sorted(practitioners.ReferenceBatches):
    def __getitems__(self, indices):
        return super().__getitems__(sorted(indices))


class Unique(practitioners.ReferenceBatches):
    def __getitems__(self, indices):
        return super().__getitems__(list(dict.fromkeys(indices)))


@pytest.mark.parametrize(
    ("wrong", "said"),
    [
        (Loop, "read 2,048 records one at a time"),
        (NoGetitems, "no __getitems__"),
        (Preloaded, "one at a time"),
        (Sorted, "is not store["),
        (Unique, "returned"),
    ],
    ids=["loop", "no __getitems__", "preloaded list", "sorted", "no repeats"],
)
def test_loops_and_wrong_batches_fail(wrong, said):
    verdict = check.batch_getitems(wrong)
    assert not verdict.passed and said in verdict.off[0], verdict.text()
    assert verdict.hint


def test_a_starter_that_raises_gets_a_verdict():
    def broken(store):
        raise RuntimeError("not written yet")

    verdict = check.batch_getitems(broken)
    assert not verdict.passed and "not written yet" in verdict.off[0]


def test_the_counting_store_counts_single_reads_and_bulk_calls(tmp_path):
    from mmlab.store import RecordStore

    path = batching._store(tmp_path, 10)
    with RecordStore.open(path) as store:
        counting = batching._CountingStore(store)
        counting[0], counting[2:5], counting.smiles(1)
        list(counting)
        counting.take([1, 2])
        counting.column("U0")
        assert counting.singles == 1 + 3 + 1 + 10
        assert counting.calls == {"take": 1, "column": 1}
        assert counting.fields == store.fields
