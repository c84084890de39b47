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
_SPAN_1_2 = math.ceil((200_000 - _GRANULARITY) / _PAGE)
_FILE_5_1, _DATA_5_1 = 1_000_000, 123_451  # a tail of 876,549 bytes: 9 mod 12


def _phantoms_5_1() -> tuple[int, int]:
    tail = _FILE_5_1 - _DATA_5_1
    short = 4 if tail % 12 < 4 else 8  # the read that comes back short: the length or the value
    return tail // 12, short if tail % 12 else 0


def _is_phantoms(answer: Any) -> bool:
    try:
        phantoms, size = answer
    except (TypeError, ValueError):
        return False
    return (_number(phantoms), _number(size)) == _phantoms_5_1()


EXERCISES: dict[str, Exercise] = {
    e.name: e
    for e in [
        Exercise(
            "exercise_1_2",
            "A file of 200,000 bytes is mapped from offset=mmap.ALLOCATIONGRANULARITY to its "
            "end. How many pages does the mapping span?",
            _is_number(_SPAN_1_2),
            lambda: _SPAN_1_2,
            f"The mapping covers the {200_000 - _GRANULARITY:,} bytes after the offset "
            f"({_GRANULARITY:,} here), in whole pages: ceil({200_000 - _GRANULARITY:,} / "
            f"{_PAGE:,}) = {_SPAN_1_2}.",
        ),
        Exercise(
            "exercise_1_3",
            "A process maps a 3-page file with ACCESS_WRITE; another truncates the file to one "
            "page; the first then writes to the third page of its mapping. Which signal?",
            lambda a: _word(a).upper().removeprefix("SIG") == "BUS",
            lambda: "SIGBUS",
            "SIGBUS: the VMA still allows the write, but the page past the file's new end has "
            "no data behind it. SIGSEGV is for an access the VMA itself does not allow.",
        ),
        Exercise(
            "exercise_2_2",
            "How many bytes of the last page are unused when a 250,000-byte file is mapped?",
            _is_number(-250_000 % _PAGE),
            lambda: -250_000 % _PAGE,
            f"250,000 bytes fill {250_000 // _PAGE} pages and {250_000 % _PAGE:,} bytes of "
            f"one more; {-250_000 % _PAGE:,} bytes of it are waste: "
            f"{-250_000 % _PAGE / 250_000:.2%} of the file, with {_PAGE:,}-byte pages.",
        ),
        Exercise(
            "exercise_3_1",
            "You map a 1 GiB file (cold cache) and read one byte at offset 0. Does RSS grow by "
            "(a) about 1 GiB, (b) a few pages up to a few MiB, or (c) nothing at all?",
            _is_word("b", "(b)"),
            lambda: "b",
            "RSS counts pages mapped into this process. The fault maps the touched page and "
            "what the kernel maps with it: neighbours already read, up to fault_around_bytes "
            "(64 KiB by default), and the rest of its folio if it sits in a large one (up to "
            "2 MiB; in-order readahead builds those, a lone fault's read-around does not). "
            "Readahead may read megabytes into the page cache (read_ahead_kb), but a cached "
            "page joins RSS only once mapped; never nothing, since the touched page is mapped.",
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
            f"The blog's program writes {_DATA_5_1:,} bytes of records into its "
            f"{_FILE_5_1:,}-byte file. How many phantom records does its doubling loop process, "
            "and how many bytes does the `struct.unpack` that stops it ask for? Answer "
            "(phantoms, bytes).",
            _is_phantoms,
            lambda: _phantoms_5_1(),
            f"The zero tail is {_FILE_5_1 - _DATA_5_1:,} bytes = {_phantoms_5_1()[0]:,} records "
            f"of 12 bytes (4 for a zero length, 8 for the value) + "
            f"{(_FILE_5_1 - _DATA_5_1) % 12} bytes: read(4) still gets its length, but read(8) "
            "comes back short, so unpack('d') asks for 8 bytes and raises struct.error.",
        ),
        Exercise(
            "exercise_6_1",
            "Four processes map one 100 MiB file and each reads all of it. What do their PSS "
            "values for that file add up to, in MiB?",
            _is_number(100, rel=0.02),
            lambda: 100,
            "PSS gives each process 1/N of every page N processes share, so the PSS values "
            "add up to the memory the file's pages really use, once; RSS counts them in each.",
        ),
        Exercise(
            "exercise_6_3",
            "One process, alone, maps a 50 MiB file and reads all of it; its USS is 60 MiB. "
            "It exits and nothing else needs memory. How many MiB of that file are still in "
            "the page cache?",
            _is_number(50, rel=0.05),
            lambda: 50,
            "File pages belong to the page cache, not to the process: they count in its USS "
            "while no one else maps them, yet its exit frees only its anonymous memory; the "
            "file's pages stay cached until the kernel needs the room (section 2's last reader).",
        ),
        Exercise(
            "exercise_7_1",
            "A process limited to 100 MiB by a cgroup maps a 1 GiB file and reads all of it in "
            "order, twice. Does its second pass read (a) nothing from storage, (b) about "
            "100 MiB, or (c) about the whole 1 GiB again?",
            _is_word("c", "(c)"),
            lambda: "c",
            "Only about 100 MiB of the file fit in the cgroup's page cache, and the kernel "
            "evicts the pages used longest ago: by the time the second pass comes back to a "
            "page, 900 MiB of later pages have pushed it out. A loop over more than the "
            "memory it may use re-reads almost everything, every pass: that is thrashing.",
        ),
        Exercise(
            "exercise_7_2",
            "A process sets its RLIMIT_DATA to 64 MiB above the private writable memory it "
            "already has (Linux 4.7 or later). Which then fails: (a) f.read() of a 256 MiB "
            "file, (b) mapping that file read-only and summing every byte, or (c) both?",
            _is_word("a", "(a)"),
            lambda: "a",
            "RLIMIT_DATA caps the size of private writable mappings (VmData: the heap, "
            "anonymous mappings, copy-on-write file mappings): read() needs a 256 MiB buffer "
            "of it, so it raises MemoryError. A read-only mapping of the file is not writable "
            "and its pages are page cache, which RLIMIT_DATA does not count. (The limit is "
            "set above what the process has: a Python with numpy already holds tens of MiB.)",
        ),
        Exercise(
            "exercise_8_1",
            "A process writes one byte into each of 10 pages of a MAP_SHARED mapping of a "
            "file and is killed with SIGKILL before any flush. How many of the 10 writes does "
            "another process then read from the file?",
            _is_number(10),
            lambda: 10,
            "All 10: a write through a shared mapping lands in the file's page cache at once, "
            "and those pages belong to the file, not to the process. Only a crash of the whole "
            "machine (or a power loss) before writeback would lose them.",
        ),
        Exercise(
            "exercise_8_2",
            "With 4 KiB pages and no large folios, a loop writes 100 records of 12 bytes one "
            "after another from the start of a mapped file, and calls flush() after each. At "
            "least how many bytes does it have the kernel write to storage?",
            _is_number(100 * 4096),
            lambda: 100 * 4096,
            "All 100 records (1,200 bytes) sit in the first page. Each flush writes that dirty "
            "page whole, and the next record dirties it again: 100 flushes x 4,096 bytes = "
            "409,600 bytes for 1,200 bytes of data, 341x. Flushing once writes the page once.",
        ),
        Exercise(
            "exercise_9_1",
            "A Dataset holds a numpy.memmap of a 2 GiB file (np.load(path, mmap_mode='r')). A "
            "DataLoader with 4 workers started by spawn gets a pickled copy of it. About how "
            "many GiB of private memory do the 4 workers hold together once it is unpickled?",
            _is_number(8, rel=0.1),
            lambda: 8,
            "A numpy.memmap pickles like any ndarray: its bytes, not its file name. Each spawned "
            "worker unpickles a 2 GiB array in its own anonymous memory: 4 x 2 GiB = 8 GiB, "
            "where a dataset that pickles only its path and maps the file in each worker "
            "shares the same page-cache pages and holds almost nothing private.",
        ),
        Exercise(
            "exercise_9_2",
            "Through its library's own API, which of these can double one float64 column of a "
            "130,000-record file in place, writing only that column's pages: (a) an Arrow IPC "
            "file with pyarrow, (b) a RecordStore with mmlab, or (c) a Parquet file with pyarrow?",
            _is_word("b", "(b)"),
            lambda: "b",
            "A RecordStore maps its file writable and keeps each column as one array of raw "
            "float64 at a fixed place: doubling it dirties about 1 MiB of pages. pyarrow maps an "
            "IPC file read-only and its arrays are immutable, so a changed column means a new "
            "file (its bytes are raw float64 too, but no Arrow API patches them, and its readers "
            "assume the file never changes); Parquet is encoded and compressed page by page, so "
            "it is rewritten whole.",
        ),
    ]
}


def reference(name: str) -> Any:
    """The reference answer of one exercise, e.g. ``reference("exercise_2_2")``."""
    return EXERCISES[name].answer()


# exercise_1_1, exercise_1_2, ...: each exercise is a function of this module.
globals().update(EXERCISES)
__all__ = ["EXERCISES", "Exercise", "reference", *EXERCISES]


def __getattr__(name: str) -> Any:
    """The hands-on checks (``check.touch_stride`` ...), found in ``mmlab.course.handson``
    and imported on first use: each may need matplotlib or torch, which this module does not."""
    import importlib

    from mmlab.course.handson import MODULES

    for module in MODULES:
        try:
            found = importlib.import_module(f"mmlab.course.handson.{module}")
        except ModuleNotFoundError as error:
            if error.name == f"mmlab.course.handson.{module}":
                continue  # that notebook has no hands-on module yet
            raise
        if name in getattr(found, "__all__", ()):
            return getattr(found, name)
    raise AttributeError(f"mmlab.course.check has no exercise {name!r}")
