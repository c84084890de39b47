"""Self-checking exercises for the lab notebooks: ``check.exercise_3_1(answer)``.

Each function says whether the answer is right and why, and returns True or False. Answers
that depend on the machine (its page size, say) are checked against this machine. Leave
``answer = None`` to see the question again.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _word(answer: Any) -> str:
    return str(answer).strip().lower().replace("mmap.", "").replace("'", "").replace('"', "")


def _number(answer: Any) -> float | None:
    try:
        return float(answer)
    except (TypeError, ValueError):
        return None


def _is_number(expected: float, rel: float = 0.0) -> Callable[[Any], bool]:
    def accept(answer: Any) -> bool:
        value = _number(answer)
        return value is not None and math.isclose(value, expected, rel_tol=rel, abs_tol=1e-9)

    return accept


def _is_word(*accepted: str) -> Callable[[Any], bool]:
    return lambda answer: _word(answer) in accepted


@dataclass(frozen=True)
class Exercise:
    """A question, a test for its answer, the reference answer and the explanation."""

    name: str
    question: str
    accept: Callable[[Any], bool]
    answer: Callable[[], Any]
    why: str

    def __call__(self, answer: Any = None) -> bool:
        if answer is None:
            print(f"{self.name}: {self.question}\nPut your answer in `answer` and run again.")
            return False
        right = bool(self.accept(answer))
        verdict = "Right." if right else f"Not quite: {answer!r} is not it."
        print(f"{self.name}: {verdict} {self.why}")
        return right


_PAGE = mmap.PAGESIZE
_GRANULARITY = mmap.ALLOCATIONGRANULARITY
_OFFSETS = (0, 100, 4096, 6000, 8192, 65536)
_U0_PAGES = math.ceil(130_831 * 8 / _PAGE)


def _map_limits() -> tuple[int | None, int | None]:
    """This machine's vm.max_map_count and RLIMIT_NOFILE soft limit (None: none or unknown)."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read())
    except (OSError, ValueError):
        limit = None
    return limit, None if soft == resource.RLIM_INFINITY else soft


_MAP_LIMITS = _map_limits()
_FIRST_REFUSAL = (
    "EMFILE"
    if _MAP_LIMITS[1] is not None and (_MAP_LIMITS[0] is None or _MAP_LIMITS[1] < _MAP_LIMITS[0])
    else "ENOMEM"
)

EXERCISES: dict[str, Exercise] = {
    e.name: e
    for e in [
        Exercise(
            "exercise_1_1",
            "Which `access=` mode gives a mapping whose writes never reach the file?",
            _is_word("access_copy", "copy", "c", str(mmap.ACCESS_COPY), "map_private"),
            lambda: mmap.ACCESS_COPY,
            "ACCESS_COPY maps the file MAP_PRIVATE: the first write to a page copies it, and "
            "the copy belongs to this process alone.",
        ),
        Exercise(
            "exercise_1_2",
            "A file of 10,000 bytes is mapped in full. How many pages does the mapping span?",
            _is_number(math.ceil(10_000 / _PAGE)),
            lambda: math.ceil(10_000 / _PAGE),
            f"Mappings cover whole pages: ceil(10,000 / {_PAGE:,}) = "
            f"{math.ceil(10_000 / _PAGE)} on this machine.",
        ),
        Exercise(
            "exercise_2_1",
            f"Which of the offsets {_OFFSETS} does mmap accept? Answer with a set.",
            lambda a: _as_set(a) == {o for o in _OFFSETS if o % _GRANULARITY == 0},
            lambda: {o for o in _OFFSETS if o % _GRANULARITY == 0},
            f"An offset must be a multiple of mmap.ALLOCATIONGRANULARITY ({_GRANULARITY:,} "
            "here); anything else fails with EINVAL.",
        ),
        Exercise(
            "exercise_2_2",
            "How many bytes of the last page are unused when a 1,000,000-byte file is mapped?",
            _is_number(-1_000_000 % _PAGE),
            lambda: -1_000_000 % _PAGE,
            f"1,000,000 bytes fill {1_000_000 // _PAGE} pages and {1_000_000 % _PAGE:,} bytes of "
            f"one more; {-1_000_000 % _PAGE:,} bytes of it are waste: under 0.4% of the file.",
        ),
        Exercise(
            "exercise_2_3",
            "A program keeps making one-page mmap.mmap mappings of a file, holding each. Which "
            "error stops it first on this machine: EMFILE or ENOMEM?",
            lambda a: _word(a).upper() == _FIRST_REFUSAL,
            lambda: _FIRST_REFUSAL,
            "Each mmap.mmap of a file holds a VMA (vm.max_map_count: {} here) and a duplicated "
            "file descriptor (RLIMIT_NOFILE soft limit: {} here); the lower limit is met first: "
            "{}.".format(*(f"{v:,}" if v else "none" for v in _MAP_LIMITS), _FIRST_REFUSAL),
        ),
        Exercise(
            "exercise_3_1",
            "You map a 1 GiB file (cold cache) and read one byte at offset 0. Does RSS grow by "
            "(a) about 1 GiB, (b) a few pages up to a few MiB, or (c) nothing at all?",
            _is_word("b", "(b)"),
            lambda: "b",
            "RSS counts pages mapped into this process. The fault maps the touched page and "
            "what the kernel maps with it: the rest of its folio (up to 2 MiB with large "
            "folios) and cached neighbours up to fault_around_bytes (64 KiB by default). "
            "Readahead may read megabytes into the page cache (read_ahead_kb), but a cached "
            "page joins RSS only once mapped; never nothing, since the touched page is mapped.",
        ),
        Exercise(
            "exercise_3_2",
            "Which madvise hint turns readahead off for a mapping?",
            _is_word("madv_random", "random"),
            lambda: "MADV_RANDOM",
            "MADV_RANDOM tells the kernel the accesses are random, so each fault reads just "
            "the page it needs: many more major faults, far fewer bytes from storage.",
        ),
        Exercise(
            "exercise_4_1",
            "Which column of the race table (or which counter of `measure()`) shows a cold "
            "read went to storage even when the major-fault count is tiny?",
            _is_word(
                "storage_bytes",
                "storage bytes",
                "storage mib",
                "storage",
                "read_bytes",
                "read bytes",
                "row.storage_bytes",
                "m.read_bytes",
            ),
            lambda: "storage_bytes",
            "storage_bytes (the race table's 'storage MiB'; measure() calls it read_bytes) "
            "counts what the process fetched from storage; one major fault with read-around "
            "can bring in megabytes, so faults alone undercount I/O.",
        ),
        Exercise(
            "exercise_4_2",
            "Random 4 KiB blocks of a cold file, mapped with MADV_RANDOM: how many major "
            "faults does mmap take per block?",
            _is_number(1),
            lambda: 1,
            "Without readahead each block is a page nobody has brought in yet: one major fault, "
            "one trip to storage, per block.",
        ),
        Exercise(
            "exercise_5_1",
            "How many numbers does `data.y` hold for one QM9 molecule (so `.item()` fails)?",
            _is_number(19),
            lambda: 19,
            "data.y has shape [1, 19]: the 19 targets. item() only converts a one-element "
            "tensor; data.y[0, 7] is U0.",
        ),
        Exercise(
            "exercise_5_2",
            "Doubling U0 for all 130,831 molecules of a RecordStore writes how many pages?",
            _is_number(_U0_PAGES),
            lambda: _U0_PAGES,
            f"U0 is one contiguous float64 column: ceil(130,831 x 8 / {_PAGE:,}) = "
            f"{_U0_PAGES} pages, and no page of the other 18 fields.",
        ),
        Exercise(
            "exercise_6_1",
            "Four processes map one 100 MiB file and each reads all of it. What do their PSS "
            "values for that file add up to, in MiB?",
            _is_number(100, rel=0.02),
            lambda: 100,
            "PSS splits each shared page between the processes sharing it: 4 x 25 MiB = 100 "
            "MiB, the memory really used. Their RSS adds up to 400 MiB.",
        ),
        Exercise(
            "exercise_6_2",
            "Which measure counts a page shared by several processes in full in each: RSS, "
            "USS or PSS?",
            _is_word("rss"),
            lambda: "RSS",
            "RSS counts every resident page of the process; USS only its private pages; PSS "
            "a fair share of each shared one.",
        ),
    ]
}


def _as_set(answer: Any) -> set | None:
    try:
        return {int(x) for x in answer}
    except (TypeError, ValueError):
        return None


def reference(name: str) -> Any:
    """The reference answer of one exercise, e.g. ``reference("exercise_2_1")``."""
    return EXERCISES[name].answer()


# exercise_1_1, exercise_1_2, ...: each exercise is a function of this module.
globals().update(EXERCISES)
__all__ = ["EXERCISES", "Exercise", "reference", *EXERCISES]
