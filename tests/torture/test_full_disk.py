"""The record store on a full disk: NoSpaceError at the call that needed the space, never SIGBUS.

A page of a mapped file gets its disk block when it is first written; with no block left, the
kernel can only kill the writer with SIGBUS. The store prevents that by reserving every block
of a file (``posix_fallocate``) when it creates or grows it, so a full disk shows up as
``mmlab.NoSpaceError`` (an ``OSError`` with errno ENOSPC) from ``create`` or ``extend``, and a
write through the mapping never needs a new block. These tests fill small filesystems and
hold the store to that:

- a store grown until the disk is full stops with NoSpaceError, keeps every flushed record,
  still opens read-only and read-write, and leaves no temporary file;
- appends within capacity succeed on a disk with no byte left, as their space was reserved;
- ``create`` on a full disk fails and leaves nothing behind (nor replaces an existing store);
- growth on a full disk fails all or nothing, and the writer carries on once space is freed.

Every scenario runs on a 2 MiB tmpfs and on a 4 MiB ext4 on a loop device, both mounted for
the test, and in a forked child: a SIGBUS then shows as the child's death by a signal instead
of killing pytest. Quick: each scenario once per filesystem; full: 20 rounds of varied store
shapes and batch sizes.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Pipe
from pathlib import Path

import children
import numpy as np
import pytest
from budget import size

from mmlab import NoSpaceError, RecordStore

ROUND_TIMEOUT = 120  # seconds for one scenario in its child; a round takes well under one
FILLER = "filler"
METADATA_SLACK = 1 << 16  # bytes a filesystem may need besides a file's data blocks


# -- the filesystems ------------------------------------------------------------------------


@dataclass(frozen=True)
class Disk:
    label: str  # what the report calls it, e.g. "tmpfs 2 MiB"
    path: Path  # its mount point


def _run(command: list[str | Path]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def _unmount(mountpoint: Path) -> None:
    if _run(["umount", mountpoint]).returncode == 0:
        return
    # Busy: something still uses it. Detach it anyway so that no mount outlives the test.
    lazy = _run(["umount", "-l", mountpoint])
    pytest.fail(f"{mountpoint} was busy at teardown; lazy unmount: {lazy.stderr.strip() or 'ok'}")


@pytest.fixture(params=["tmpfs", "ext4"])
def disk(request, tmp_path) -> Iterator[Disk]:
    """A small, empty filesystem mounted in ``tmp_path`` for this test, unmounted after it."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root on Linux")
    if shutil.which("mount") is None:
        pytest.skip("mounting a small filesystem needs the mount command, which is missing")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    if request.param == "tmpfs":
        label = "tmpfs 2 MiB"
        command = ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mountpoint]
    else:
        label = "ext4 4 MiB"
        if shutil.which("mkfs.ext4") is None or shutil.which("losetup") is None:
            pytest.skip("a loop-mounted ext4 needs mkfs.ext4 and losetup, which are missing")
        image = tmp_path / "ext4.img"
        with image.open("wb") as f:
            f.truncate(4 << 20)
        made = _run(["mkfs.ext4", "-q", "-F", image])
        if made.returncode != 0:
            pytest.skip(f"mkfs.ext4 failed: {made.stderr.strip()}")
        command = ["mount", "-o", "loop", image, mountpoint]  # the loop device goes at umount
    mounted = _run(command)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {label}: {mounted.stderr.strip()}")
    try:
        yield Disk(label, mountpoint)
    finally:
        _unmount(mountpoint)


def fill(directory: Path) -> None:
    """Write a file in ``directory`` until the filesystem refuses one more byte."""
    fd = os.open(directory / FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    chunk = 1 << 16
    try:
        while chunk:
            try:
                os.write(fd, bytes(chunk))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk //= 2  # down to single bytes, so not one block is left
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_files(directory: Path) -> list[str]:
    """The store's temporary files (``.<name>.<token>.creating`` or ``.growing``) left here."""
    return [
        name
        for name in os.listdir(directory)
        if name.startswith(".") and name.endswith((".creating", ".growing"))
    ]


# -- stores and their records ---------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A store's shape and how a scenario writes to it."""

    n_fields: int
    capacity: int  # the store's capacity when created
    smiles_length: int  # strings are 1 to this many bytes long
    batch: int  # records per extend (and flush)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(f"f{k}" for k in range(self.n_fields))

    def create(self, path: Path) -> RecordStore:
        # A heap big enough that only the record count makes the store grow.
        heap = self.capacity * self.smiles_length
        return RecordStore.create(path, self.fields, self.capacity, heap_capacity=heap)


BASIC = Shape(n_fields=3, capacity=2000, smiles_length=12, batch=500)


def shapes(rounds: int) -> list[Shape]:
    """The basic shape first, then shapes from a seeded generator, so every run is the same.

    The largest (8 fields, 4,000 records of up to 120 bytes) is a 1.1 MiB file: it fits on the
    tmpfs once, but cannot grow there.
    """
    rng = random.Random(20261125)
    drawn = [
        Shape(
            n_fields=rng.choice([1, 2, 3, 8]),
            capacity=rng.choice([1, 16, 700, 4000]),
            smiles_length=rng.choice([1, 8, 40, 120]),
            batch=rng.choice([50, 333, 1000, 4096]),
        )
        for _ in range(rounds - 1)
    ]
    return [BASIC, *drawn]


def smiles_of(i: int, shape: Shape) -> str:
    length = 1 + i * 7919 % shape.smiles_length
    return (f"C{i}N" * length)[:length]


def values_of(start: int, stop: int, shape: Shape) -> np.ndarray:
    """The values of records ``start`` to ``stop - 1``, one row each."""
    i = np.arange(start, stop, dtype=np.float64)[:, None]
    k = np.arange(shape.n_fields)
    return i * (k + 1) - k / 8


def records(start: int, stop: int, shape: Shape) -> list[tuple[str, np.ndarray]]:
    smiles = [smiles_of(i, shape) for i in range(start, stop)]
    return list(zip(smiles, values_of(start, stop, shape), strict=True))


def check_records(store: RecordStore, shape: Shape, n: int) -> None:
    """The store holds exactly the first ``n`` records, as generated."""
    assert len(store) == n
    assert [store.smiles(i) for i in range(n)] == [smiles_of(i, shape) for i in range(n)]
    expected = values_of(0, n, shape)
    for k, name in enumerate(shape.fields):
        np.testing.assert_array_equal(store.column(name), expected[:, k])


def check_reopens(path: Path, shape: Shape, n: int) -> None:
    """The closed store at ``path`` holds its ``n`` records and opens both ways, temps gone."""
    with RecordStore.open(path) as reader:
        check_records(reader, shape, n)
    with RecordStore.open(path, "r+") as writer:  # reserves its file's space again
        assert len(writer) == n
    assert not temp_files(path.parent)


def check_no_space(exc: NoSpaceError) -> None:
    assert isinstance(exc, OSError) and exc.errno == errno.ENOSPC, repr(exc)


# -- the scenarios: each runs in a child, in a fresh directory, and returns its counts ------


@dataclass
class Counts:
    no_space: int = 0  # NoSpaceErrors raised where the scenario expected them
    checked: int = 0  # records read back and compared with the generator

    def __iadd__(self, other: Counts) -> Counts:
        self.no_space += other.no_space
        self.checked += other.checked
        return self


def grow_until_full(directory: Path, shape: Shape) -> Counts:
    """Append and flush batches until growth finds no room: NoSpaceError, nothing lost."""
    path = directory / "store.mms"
    flushed = 0
    with shape.create(path) as store:
        while True:
            try:
                store.extend(records(flushed, flushed + shape.batch, shape))
            except NoSpaceError as exc:
                check_no_space(exc)
                break
            store.flush()
            flushed += shape.batch
        assert len(store) == flushed, "the extend that failed added records"
        assert not temp_files(directory)
    check_reopens(path, shape, flushed)
    return Counts(no_space=1, checked=flushed)


def append_on_full_disk(directory: Path, shape: Shape) -> Counts:
    """Fill the disk after creating the store: appends up to its capacity still succeed."""
    path = directory / "store.mms"
    n = shape.capacity
    with shape.create(path) as store:
        fill(directory)
        for start in range(0, n, shape.batch):
            store.extend(records(start, min(start + shape.batch, n), shape))
            store.flush()
    check_reopens(path, shape, n)
    return Counts(checked=n)


def create_on_full_disk(directory: Path, shape: Shape) -> Counts:
    """``create`` on a full disk: NoSpaceError, no file at the path, an old store kept."""
    old = directory / "old.mms"
    n = min(shape.capacity, shape.batch)
    with shape.create(old) as store:
        store.extend(records(0, n, shape))
    fill(directory)
    new = directory / "new.mms"
    with pytest.raises(NoSpaceError) as new_store:
        shape.create(new)
    check_no_space(new_store.value)
    assert not new.exists()
    with pytest.raises(NoSpaceError) as replacement:
        RecordStore.create(old, shape.fields, shape.capacity, overwrite=True)
    check_no_space(replacement.value)
    assert not temp_files(directory)
    check_reopens(old, shape, n)
    return Counts(no_space=2, checked=n)


def grow_on_full_disk(directory: Path, shape: Shape) -> Counts:
    """Growth on a full disk: NoSpaceError from ``extend``, all or nothing; then it resumes."""
    path = directory / "store.mms"
    capacity, flushed = shape.capacity, shape.capacity // 2
    past_capacity = records(capacity, capacity + shape.batch, shape)
    with shape.create(path) as store:
        store.extend(records(0, flushed, shape))
        store.flush()
        store.extend(records(flushed, capacity, shape))  # fills the capacity, not yet flushed
        reader = RecordStore.open(path)  # mapped before the failure, refreshed after it
        fill(directory)
        with pytest.raises(NoSpaceError) as info:
            store.extend(past_capacity)
        check_no_space(info.value)
        assert len(store) == capacity, "the extend that failed changed the writer's count"
        assert not temp_files(directory)
        assert reader.refresh() == flushed
        check_records(reader, shape, flushed)
        with RecordStore.open(path) as late_reader:
            check_records(late_reader, shape, flushed)
        (directory / FILLER).unlink()  # with room again, the same writer carries on
        store.flush()
        assert reader.refresh() == capacity
        # One more record doubles the store into a new file beside the old one: wherever the
        # freed room holds that file, growth must succeed now.
        room = shutil.disk_usage(directory).free >= 2 * store.nbytes + METADATA_SLACK
        try:
            store.append(*past_capacity[0])
        except NoSpaceError:
            assert not room, "growth failed although the disk had room for the new file"
            assert len(store) == capacity
        total = len(store)
    assert reader.refresh() == total  # follows the store into its bigger file, if it grew
    check_records(reader, shape, total)
    reader.close()
    check_reopens(path, shape, total)
    return Counts(no_space=1, checked=2 * flushed + capacity + 2 * total)


# -- running a scenario in a child process -------------------------------------------------


@dataclass
class ChildEnd:
    counts: Counts | None = None  # what the scenario returned
    failure: str | None = None  # its traceback, or why it never reported
    signal: str | None = None  # the signal that killed it


def run_in_child(
    scenario: Callable[[Path, Shape], Counts], directory: Path, shape: Shape
) -> ChildEnd:
    """Run ``scenario`` in a forked child; a signal that kills it is reported, not suffered."""
    results, sender = Pipe(duplex=False)
    pid = children.fork()
    if pid == 0:
        try:
            results.close()
            try:
                message = (scenario(directory, shape), None)
            except BaseException:
                message = (None, traceback.format_exc())
            sender.send(message)
        finally:
            os._exit(0)  # never return into pytest
    sender.close()
    end, grace = ChildEnd(), 10  # seconds it may take to exit once it has reported
    try:
        if results.poll(ROUND_TIMEOUT):
            end.counts, end.failure = results.recv()
        else:
            end.failure, grace = f"no result in {ROUND_TIMEOUT} s: killed", 0
    except EOFError:
        end.failure = "died before reporting"
    finally:
        results.close()
        status = children.reap(pid, time.monotonic() + grace)
    if os.WIFSIGNALED(status):
        end.signal = signal.Signals(os.WTERMSIG(status)).name
    return end


def run_rounds(disk: Disk, scenario: Callable[[Path, Shape], Counts], report) -> None:
    """Run ``scenario`` once per shape, each in a fresh directory; report, then assert."""
    rounds = shapes(size(1, 20))
    total, deaths, failures = Counts(), [], []
    for number, shape in enumerate(rounds):
        directory = disk.path / f"round{number}"
        directory.mkdir()
        end = run_in_child(scenario, directory, shape)
        shutil.rmtree(directory)  # the next round gets the whole disk
        if end.signal:
            deaths.append(f"round {number} ({shape}): killed by {end.signal}")
        elif end.failure:
            failures.append(f"round {number} ({shape}):\n{end.failure}")
        else:
            total += end.counts
    name = scenario.__name__.replace("_", " ")
    report(
        f"{name} on {disk.label}: {len(rounds)} round(s), {total.no_space} NoSpaceError(s) "
        f"as expected, {total.checked:,} records checked, {len(deaths)} deaths, "
        f"{len(failures)} failures"
    )
    assert not deaths, "\n".join(deaths)
    assert not failures, failures[0]


# -- the tests --------------------------------------------------------------------------------


def test_growing_until_the_disk_is_full_raises_no_space_error_and_loses_nothing(disk, report):
    run_rounds(disk, grow_until_full, report)


def test_appends_within_capacity_succeed_on_a_full_disk(disk, report):
    run_rounds(disk, append_on_full_disk, report)


def test_create_on_a_full_disk_raises_no_space_error_and_leaves_nothing(disk, report):
    run_rounds(disk, create_on_full_disk, report)


def test_growth_on_a_full_disk_is_all_or_nothing(disk, report):
    run_rounds(disk, grow_on_full_disk, report)
