"""The blog's QM9 example, re-created call by call, run as written on a scaled-down file.

The post is "Memory-mapped files for efficient data processing" (blopig.com, 28 August 2024,
``SOURCE``). Its program loads PyG's ``QM9``, preallocates a 100 MB sparse file, maps it, writes
each molecule as a native ``I`` length, the UTF-8 SMILES and a native ``d`` property with a
``flush()`` after every record, then rewinds and doubles every value in place, again flushing
after every record. ``PARTS`` holds that program as text, in the post's order of calls (written
here from the post's description, not copied), so that it runs exactly as written: ``program``
joins parts and applies only named substitutions (the file's name and size, the target that
``data.y.item()`` cannot pick, where the flush happens), and ``changes`` shows them as a diff.

What running it shows: ``while mmapped_file.tell() < filesize`` goes on past the real data
through the zero-filled tail, reading 12-byte "records" of length 0 and value 0.0, writing 0.0
back and flushing each, which allocates every block of the sparse file. When the tail is not
a whole number of 12-byte records, the last ``read`` comes back short and ``struct.unpack``
raises ``struct.error`` (``Layout.ending``). ``run`` executes the program on a file with the
100 MB file's proportions, shrunk, and the same tail remainder mod 12, so it ends as the
full-size one would, timing each phase in chunks (``Run.per_flush``);
``mmlab.data.blogsize.extrapolate`` scales that to the 100 MB file.
"""

from __future__ import annotations

import difflib
import os
import struct
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmlab.instruments.proc import Counters, counters

__all__ = [
    "BLOG_SIZE",
    "PARTS",
    "PHANTOM_BYTES",
    "RUN_PARTS",
    "SOURCE",
    "Layout",
    "Run",
    "blog_root",
    "changes",
    "layout",
    "program",
    "run",
    "runner",
    "scaled_size",
]

SOURCE = "https://www.blopig.com/blog/2024/08/memory-mapped-files-for-efficient-data-processing/"
BLOG_SIZE = 1024 * 1024 * 100  # "100 MB for example"
PHANTOM_BYTES = struct.calcsize("I") + struct.calcsize("d")  # a zero length, no SMILES, a value

PARTS: dict[str, str] = {
    "imports": "import mmap\nimport os\nimport struct\n",
    "load": (
        "from torch_geometric.datasets import QM9\n\n"
        "dataset = QM9(root=os.path.join(os.path.dirname(os.path.realpath(__file__)), "
        "'..', 'data', 'QM9'))\n"
    ),
    "create": (
        "filename = 'qm9_smiles_properties.dat'\n"
        "filesize = 1024 * 1024 * 100  # 100 MB for example\n\n"
        "with open(filename, 'wb') as f:\n"
        "    f.seek(filesize - 1)\n"
        "    f.write(b'\\x00')\n"
    ),
    "open": (
        "with open(filename, 'r+b') as f:\n"
        "    mmapped_file = mmap.mmap(f.fileno(), length=0, access=mmap.ACCESS_WRITE)\n"
    ),
    "write": (
        "    for index, data in enumerate(dataset):\n"
        "        smiles_string = data.smiles\n"
        "        property_value = data.y.item()\n"
        "        smiles_binary = smiles_string.encode('utf-8')\n"
        "        property_value_binary = struct.pack('d', property_value)\n"
        "        entry = struct.pack('I', len(smiles_binary)) + smiles_binary + "
        "property_value_binary\n"
        "        mmapped_file.write(entry)\n"
        "        mmapped_file.flush()\n"
    ),
    "double": (
        "    mmapped_file.seek(0)\n"
        "    while mmapped_file.tell() < filesize:\n"
        "        smiles_len = struct.unpack('I', mmapped_file.read(4))[0]\n"
        "        smiles_binary = mmapped_file.read(smiles_len)\n"
        "        property_value_binary = mmapped_file.read(8)\n"
        "        smiles_string = smiles_binary.decode('utf-8')\n"
        "        property_value = struct.unpack('d', property_value_binary)[0]\n"
        "        modified_property_value = property_value * 2\n"
        "        modified_property_value_binary = struct.pack('d', modified_property_value)\n"
        "        mmapped_file.seek(-8, os.SEEK_CUR)\n"
        "        mmapped_file.write(modified_property_value_binary)\n"
        "        mmapped_file.flush()\n"
    ),
    "close": "    mmapped_file.close()\n",
}
_EVERYTHING = ("imports", "load", "create", "open", "write", "double", "close")
RUN_PARTS = tuple(p for p in _EVERYTHING if p != "load")  # a dataset is given instead
_FLUSH_IN_LOOP = "        mmapped_file.flush()\n"


def program(
    parts: Sequence[str] = _EVERYTHING,
    *,
    filename: str | os.PathLike[str] | None = None,
    filesize: int | None = None,
    target: int | None = None,
    flush: str = "every",
) -> str:
    """The blog's program (the ``parts`` named, in the post's order) with only these changes:
    ``filename``/``filesize`` replace its file, ``target`` picks ``data.y[0, target]`` where
    ``data.y.item()`` fails, and ``flush="once"`` moves each loop's flush after the loops."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"no part {unknown}: the blog's parts are {list(PARTS)}")
    if flush not in ("every", "once"):
        raise ValueError(f"flush must be 'every' or 'once', got {flush!r}")
    text = "".join(PARTS[p] for p in _EVERYTHING if p in parts)
    if filename is not None:
        text = text.replace("'qm9_smiles_properties.dat'", repr(str(filename)))
    if filesize is not None:
        text = text.replace("1024 * 1024 * 100  # 100 MB for example", f"{filesize}  # scaled")
    if target is not None:
        text = text.replace("data.y.item()", f"data.y[0, {target}].item()  # y has 19 targets")
    if flush == "once":
        text = text.replace(_FLUSH_IN_LOOP, "")
        text = text.replace(PARTS["close"], "    mmapped_file.flush()\n" + PARTS["close"])
    return text


def changes(text: str, parts: Sequence[str] = _EVERYTHING) -> str:
    """``text`` against the blog's own program, as a diff: every line that was changed."""
    blog = program(parts).splitlines(keepends=True)
    diff = difflib.unified_diff(blog, text.splitlines(keepends=True), "the blog", "run here", n=0)
    return "".join(line for line in diff if not line.startswith("@@"))


def blog_root(namespace: dict[str, Any]) -> str:
    """Evaluate the blog's ``QM9(root=...)`` argument in ``namespace`` (a notebook's
    ``globals()``): a script has ``__file__``, a Jupyter kernel has none (NameError)."""
    expression = PARTS["load"].split("QM9(root=", 1)[1].rsplit(")", 1)[0]
    return eval(expression, {"os": os, **namespace})  # the blog's own expression


def runner(text: str, **names: Any):
    """A function that runs ``text`` (compiled once) in a fresh namespace holding ``names``."""
    code = compile(text, "<the blog's program>", "exec")

    def run_once() -> None:
        exec(code, dict(names))  # the blog's program, as written

    return run_once


# -- the layout's numbers --------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """The blog's file for ``records`` molecules: ``data_bytes`` of records in ``filesize``."""

    records: int
    data_bytes: int
    filesize: int = BLOG_SIZE

    @property
    def tail(self) -> int:
        """Zero bytes after the data, which the blog's loop reads as records."""
        return self.filesize - self.data_bytes

    @property
    def phantoms(self) -> int:
        """Whole 12-byte phantom records in the tail: each is read, doubled, written, flushed."""
        return self.tail // PHANTOM_BYTES

    @property
    def remainder(self) -> int:
        return self.tail % PHANTOM_BYTES

    @property
    def ending(self) -> str:
        """How the blog's loop ends on this file, from the remainder."""
        if self.remainder == 0:
            return "the loop ends at the end of the file, without an error"
        short = "I" if self.remainder < struct.calcsize("I") else "d"
        return f"struct.error: unpack requires a buffer of {struct.calcsize(short)} bytes"


def layout(smiles: Iterable[str], filesize: int = BLOG_SIZE) -> Layout:
    """The blog's layout of these SMILES (a native ``I``, the UTF-8 bytes, a native ``d``)."""
    lengths = [len(s.encode("utf-8")) for s in smiles]
    return Layout(len(lengths), sum(lengths) + PHANTOM_BYTES * len(lengths), filesize)


def scaled_size(data_bytes: int, full: Layout) -> int:
    """A file size for ``data_bytes`` of data in ``full``'s proportions (tail over data), with
    the same tail remainder mod 12, so the blog's loop ends on it as on the full file."""
    tail = round(data_bytes * full.tail / full.data_bytes)
    tail += (full.remainder - tail) % PHANTOM_BYTES
    return data_bytes + tail


# -- running the program as written ----------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """What running the blog's program measured, phase by phase (``Counters`` differences)."""

    layout: Layout
    writing: Counters  # the writing loop, a flush per record
    doubling: Counters  # the doubling loop over the real records
    phantom: Counters  # the doubling loop past the data, until it stopped
    error: str | None  # how the program ended: "struct.error: ..." or None
    end_position: int  # where the loop stood when it stopped
    allocated: tuple[int, int, int]  # bytes of blocks: sparse, after writing, at the end
    per_flush: dict[str, np.ndarray]  # by phase: wall seconds per flush in each chunk of it


class _Watch:
    """Notes the phases of the running program without changing it: ``dataset`` is iterated
    through it (the writing loop), and a thread follows ``mmapped_file.tell()`` (doubling)."""

    def __init__(
        self, dataset: Any, path: Path, filesize: int, namespace: dict, progress: bool
    ) -> None:
        from tqdm.std import tqdm  # text bars: a saved notebook keeps their final state

        self.dataset, self.path, self.ns = dataset, path, namespace
        self.marks: dict[str, Counters] = {}
        self.blocks: dict[str, int] = {}
        self.data_bytes = 0
        self.done = threading.Event()
        self.written = threading.Event()
        self.write_times: list[float] = []  # when each record was written
        self.samples: list[tuple[float, int]] = []  # (time, position) during the doubling loop
        bar = {"disable": not progress, "file": sys.stdout, "mininterval": 2.0}
        # the second bar opens when the first closes: one line each in a saved notebook
        self.bars = [tqdm(total=len(dataset), desc="writing loop", unit="rec", **bar)]
        self.second = lambda: tqdm(
            total=filesize, desc="doubling loop", unit="B", unit_scale=True, **bar
        )

    def mark(self, name: str) -> None:
        self.marks[name] = counters()
        self.blocks[name] = self.path.stat().st_blocks * 512

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self):
        self.mark("start")
        self.write_times.append(time.perf_counter())
        for item in self.dataset:
            yield item
            self.write_times.append(time.perf_counter())
            self.bars[0].update()
        self.data_bytes = self.ns["mmapped_file"].tell()
        self.mark("written")
        self.samples.append((time.perf_counter(), 0))
        self.written.set()

    def follow(self) -> None:
        self.written.wait()
        self.bars[0].close()
        self.bars.append(self.second())
        while not self.done.wait(0.002):
            try:
                position = self.ns["mmapped_file"].tell()
            except (KeyError, ValueError):  # closed
                return
            self.samples.append((time.perf_counter(), position))
            if position >= self.data_bytes and "data end" not in self.marks:
                self.marks["data end"] = counters()
            self.bars[1].update(max(0, position - self.bars[1].n))


def run(
    dataset: Any,
    filename: str | os.PathLike[str],
    filesize: int,
    *,
    target: int = 7,
    progress: bool = True,
) -> Run:
    """Run the blog's program (all but its loading line) on ``dataset`` into ``filename`` of
    ``filesize`` bytes; the exception it ends with is caught and reported in ``Run.error``."""
    path = Path(filename)
    text = program(RUN_PARTS, filename=path, filesize=filesize, target=target)
    namespace: dict[str, Any] = {}
    watch = _Watch(dataset, path, filesize, namespace, progress)
    namespace["dataset"] = watch
    follower = threading.Thread(target=watch.follow, daemon=True)
    follower.start()
    error = None
    try:
        exec(compile(text, "<the blog's program>", "exec"), namespace)
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        kind = type(exc).__name__ if type(exc).__module__ == "builtins" else "struct.error"
        error = f"{kind}: {exc}"
    finally:
        watch.mark("end")
        watch.written.set()
        watch.done.set()
        follower.join()
        for bar in watch.bars:
            bar.close()
        mapped = namespace.get("mmapped_file")
        end = mapped.tell() if mapped is not None and not mapped.closed else filesize
        if mapped is not None:
            mapped.close()
    m = watch.marks
    data_end = m.get("data end", m["end"])
    times, positions = np.array([*watch.samples, (time.perf_counter(), end)]).T
    records = len(dataset)
    per_record = watch.data_bytes / max(records, 1)  # mean bytes of a record
    return Run(
        layout=Layout(len(dataset), watch.data_bytes, filesize),
        writing=m["written"] - m["start"],
        doubling=data_end - m["written"],
        phantom=m["end"] - data_end,
        error=error,
        end_position=end,
        allocated=(watch.blocks["start"], watch.blocks["written"], watch.blocks["end"]),
        per_flush={
            "writing": _per_item(np.array(watch.write_times), np.arange(records + 1.0), 1.0),
            "doubling": _per_item(times, positions, per_record, 0, watch.data_bytes),
            "phantom": _per_item(times, positions, PHANTOM_BYTES, watch.data_bytes, end),
        },
    )


def _per_item(
    times: np.ndarray, where: np.ndarray, size: float, start: float = 0, stop: float | None = None
) -> np.ndarray:
    """Seconds per item (``size`` units of ``where`` each) in up to 20 equal chunks of
    ``[start, stop]``, the times at the chunk boundaries interpolated from the samples."""
    stop = where[-1] if stop is None else stop
    inside = int(((where >= start) & (where <= stop)).sum())
    chunks = max(1, min(20, inside // 3))
    if stop - start < size:
        return np.array([])
    bounds = np.linspace(start, stop, chunks + 1)
    at = np.interp(bounds, np.maximum.accumulate(where), times)
    return np.diff(at) / (np.diff(bounds) / size)
