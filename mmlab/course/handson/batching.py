"""Notebook 09's second hands-on check: a DataLoader batch fetched by one call.

A ``DataLoader`` that batches (``batch_size=``, or a ``batch_sampler``) calls
``dataset.__getitems__(indices)`` once per batch when the dataset has it, and
``dataset[i]`` once per index when not: a Python loop per record. ``batch_getitems`` hands the
student's class a ``RecordStore`` that counts the records read one at a time (``store[i]``,
slices, iteration, ``smiles(i)``) and the bulk calls (``take``, ``column`` ...), checks a
batch against ``[store[i] for i in indices]``, and counts the single reads of building the
dataset and one epoch: a loop reads every record singly, one ``take`` per batch none. It
counts rather than times, so a busy machine cannot change the verdict; the speed against the
loop, in interleaved rounds, is reported beside it, not judged.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmlab.course.handson.verdict import Verdict, attempt
from mmlab.instruments.compare import quick_mode

__all__ = ["ReferenceBatches", "batch_getitems"]


class ReferenceBatches:
    """The reference: ``self[i]`` is ``store[i]``; a batch is one ``store.take``."""

    def __init__(self, store) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int):
        return self.store[i]

    def __getitems__(self, indices):
        smiles, values = self.store.take(indices)
        return list(zip(smiles, values, strict=True))


class _CountingStore:
    """A RecordStore that counts how it is read: ``singles``, the records read one at a time,
    and ``calls``, the other calls by name (``take``, ``column``, ``to_arrow`` ...)."""

    def __init__(self, store) -> None:
        self._store, self.singles, self.calls = store, 0, Counter()

    def __len__(self) -> int:
        return len(self._store)

    def __getitem__(self, index):
        got = self._store[index]
        self.singles += len(got) if isinstance(index, slice) else 1
        return got

    def __iter__(self):
        for record in self._store:
            self.singles += 1
            yield record

    def __getattr__(self, name: str):
        found = getattr(self._store, name)
        if not callable(found):
            return found

        def counted(*args, **kwargs):
            if name == "smiles":  # one record's string
                self.singles += 1
            else:
                self.calls[name] += 1
            return found(*args, **kwargs)

        return counted


def _keep(batch: list) -> list:
    return batch  # the records as the dataset returned them, uncollated


def _wrong_batch(dataset, store, indices: list[int]) -> str | None:
    """Why ``dataset.__getitems__(indices)`` differs from ``[store[i] for i in indices]``."""
    if not callable(getattr(dataset, "__getitems__", None)):
        return "the dataset has no __getitems__ method: the DataLoader calls it once per record"
    got = attempt(dataset.__getitems__, indices)
    if not got.ok:
        return f"__getitems__ raised:\n{got.error}"
    items = got.result
    try:
        if len(items) != len(indices):
            return f"__getitems__ of {len(indices)} indices returned {len(items)} items"
        for k, i in enumerate(indices):
            smiles, values = items[k]
            want = store[i]
            if smiles != want.smiles or not np.array_equal(np.asarray(values), want.values):
                return f"item {k} of the batch is not store[{i}] (the batch's index {k} is {i})"
    except Exception as error:  # whatever the student returned: say why it is not a batch
        return f"its batch is not a list of (smiles, values) pairs: {error!r}"
    return None


def _store(folder: Path, n: int) -> Path:
    from mmlab.data import peers, qm9
    from mmlab.store import RecordStore

    smiles, values = peers.qm9_columns(n)
    path = folder / "batches.mms"
    RecordStore.from_columns(path, smiles, values, qm9.FIELDS).close()
    return path


def batch_getitems(cls: Callable) -> Verdict:
    """Judge ``cls(store)``: ``__getitems__(indices)`` gives ``[store[i] for i in indices]``,
    and building the dataset and one ``DataLoader`` epoch read no record one at a time."""
    from mmlab.store import RecordStore

    name = "batch_getitems"
    n, batch = (2_048, 128) if quick_mode() else (8_192, 256)
    Path("data").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir="data") as folder:
        path = _store(Path(folder), n)
        with RecordStore.open(path) as store:
            counting = _CountingStore(store)
            built = attempt(cls, counting)
            if not built.ok:
                return Verdict(name, off=[f"{cls!r:.60}(store) raised:\n{built.error}"])
            rng = np.random.default_rng(14)
            indices = [*rng.integers(0, n, batch - 2).tolist(), 0, 0]  # repeats, any order
            counted = counting.singles, Counter(counting.calls)  # those of building it
            problem = _wrong_batch(built.result, store, indices)
            counting.singles, counting.calls = counted  # the epoch's are counted from here
            if problem:
                return Verdict(name, off=[problem], hint=_HINT_BATCH)
            verdict = Verdict(name, hint=_HINT_BATCH)
            verdict.right.append(
                f"a batch of {batch} random indices (repeats and all) gave [store[i] for i "
                "in indices], in order"
            )
            _judge_calls(verdict, built.result, counting, n, batch)
            if verdict.passed:
                _report_speed(verdict, cls, store, indices)
    return verdict


def _judge_calls(verdict: Verdict, dataset, counting: _CountingStore, n: int, batch: int):
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch, shuffle=True, collate_fn=_keep)
    epoch = attempt(lambda: sum(len(b) for b in loader))
    if not epoch.ok:
        verdict.off.append(f"one DataLoader epoch over it raised:\n{epoch.error}")
        return
    batches = -(-n // batch)
    calls = ", ".join(f"{k} x{v}" for k, v in counting.calls.most_common()) or "none"
    verdict.measured.update(singles=counting.singles, calls=dict(counting.calls), batches=batches)
    said = (
        f"building it and one epoch ({n:,} records in {batches} batches of {batch}) read "
        f"{counting.singles:,} records one at a time; its other calls to the store: {calls}"
    )
    # A loop reads every record singly; one call per batch reads none. Fewer than one single
    # read per batch leaves room for, say, reading store[0] once to learn the field count.
    if epoch.result != n:
        verdict.off.append(f"the epoch gave {epoch.result:,} records, not {n:,}")
    elif counting.singles < batches:
        verdict.right.append(f"{said}: each batch came from the store in bulk")
    else:
        verdict.off.append(f"{said}: a Python loop per record, not one call per batch")


def _report_speed(verdict: Verdict, cls: Callable, store, indices: list[int]) -> None:
    """One batch through the student's ``__getitems__`` beside a loop of ``store[i]``."""
    from mmlab.instruments.compare import compare

    built = attempt(cls, store)  # over the store itself: the loop pays no counting either
    if not built.ok:
        return
    dataset, loop = built.result, "a loop of store[i]"
    result = compare(
        {loop: lambda: [store[i] for i in indices], "yours": lambda: dataset.__getitems__(indices)},
        repeats=5 if quick_mode() else 9,
        title=f"one batch of {len(indices)} random records",
    )
    verdict.measured["speed_vs_loop"] = result.relative("yours", loop).median
    verdict.right.append(
        f"speed (reported, not judged): one batch of {len(indices)} records through yours was "
        f"{result.lead('yours', loop)}"
    )


_HINT_BATCH = (
    "store.take(indices) returns every string of the batch and a (len(indices), fields) array "
    "of their values in one call: pair them up, in the order of indices"
)
