"""Gathering many records at once: what ``RecordStore.take`` (and the peers' ``take``) run.

``positions`` checks and wraps the indices in one pass (negative ones counted from the end,
an ``IndexError`` naming the first one out of range, as ``store[i]`` would); ``strings_at``
gathers the offsets of all records at once, then makes each string from one slice of the
heap (a ``str`` per record has to be made anyway). The values are one fancy index, the
caller's.
"""

from __future__ import annotations

import mmap
import operator
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["positions", "strings_at"]

_GATHER_MIN = 32  # strings_at decodes a batch at least this long in one go


def _out_of_range(index: int, count: int) -> IndexError:
    # The message of store[i], so a batch fails as its first bad get would.
    return IndexError(f"record index {index} out of range for a store of {count} records")


def positions(indices: Iterable[int], count: int) -> np.ndarray:
    """``indices`` as record positions (negative ones counted from the end), range-checked.

    Any iterable of ints: a generator or a set is listed first (``np.asarray`` would make a
    0-d object array of it)."""
    if not isinstance(indices, np.ndarray | Sequence) and isinstance(indices, Iterable):
        indices = list(indices)
    try:
        array = np.asarray(indices)
    except OverflowError:  # Python ints past int64: out of range, found below
        array = np.asarray(list(indices), dtype=object)
    if array.ndim != 1:
        if array.ndim == 0:
            raise TypeError("take needs a sequence of indices; for one record use store[i]")
        raise ValueError(f"indices must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        return np.empty(0, dtype=np.intp)
    kind = array.dtype.kind
    if kind == "b":
        raise TypeError("indices are booleans; for a mask pass np.flatnonzero(mask)")
    if kind == "O":
        for index in array:
            index = operator.index(index)
            if not -count <= index < count:
                raise _out_of_range(index, count)
        array = array.astype(np.int64)
    elif kind not in "iu":
        raise TypeError(f"record indices must be integers, got an array of {array.dtype}")
    bad = array >= count if kind == "u" else (array < -count) | (array >= count)
    if bad.any():
        raise _out_of_range(array[bad.argmax()].item(), count)
    array = array.astype(np.intp, copy=False)
    return array if kind == "u" else np.where(array < 0, array + count, array)


def strings_at(
    offsets: np.ndarray, heap: np.ndarray, mm: mmap.mmap, heap_base: int, rows: np.ndarray
) -> list[str] | None:
    """The strings of records ``rows``; None if one has bad offsets or bytes (the caller
    then finds which, to say so). ``heap`` is the heap's view, at ``heap_base`` in ``mm``."""
    starts, ends = offsets[rows], offsets[rows + 1]
    if ((starts < 0) | (starts > ends) | (ends > len(heap))).any():
        return None
    if len(rows) >= _GATHER_MIN:
        strings = _gathered_strings(heap, starts, ends)
        if strings is not None:
            return strings
    if len(heap):
        # Touch every string's first bytes in one gather, so that their cache misses overlap
        # rather than come one at a time in the loop below (a third faster on a cold cache).
        heap[np.minimum(starts, len(heap) - 1)]
    starts += heap_base
    ends += heap_base
    try:
        return [mm[a:b].decode() for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
    except UnicodeDecodeError:
        return None


def _gathered_strings(heap: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[str] | None:
    """The strings ``heap[starts[k]:ends[k]]``, gathered with a NUL after each by one numpy
    index, decoded once and split in C: no Python step per string (a slice and a decode each).

    None if a string holds a NUL itself (the split would cut it) or is not UTF-8 (the
    caller's slower path then decides). A NUL never joins two strings' bytes into one
    character, so each string decodes exactly as it would alone.
    """
    sizes = ends - starts + 1  # each string and its NUL
    stops = np.cumsum(sizes)  # where each string's NUL ends, in the gathered bytes
    total = int(stops[-1])
    if total == len(sizes):
        return [""] * len(sizes)
    # gathered byte j comes from heap[j + shift], shift constant along each string
    index = np.arange(total) + np.repeat(starts - (stops - sizes), sizes)
    nuls = stops - 1
    index[nuls] = 0  # the NUL slots: any byte, overwritten below
    gathered = heap[index]
    gathered[nuls] = 0
    if np.count_nonzero(gathered) != total - len(sizes):
        return None
    try:
        return gathered[:-1].tobytes().decode().split("\x00")
    except UnicodeDecodeError:
        return None
