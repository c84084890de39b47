"""The page cache, told truly: residency and eviction (0% after evict on disk, 100% after a
full read, impossible on tmpfs), files whose page cache the kernel hides from a process that
may not write them, cachestat refused by a sandbox, and dirty pages turning clean over time."""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_in_child

from mmlab import pagecache


@pytest.fixture
def disk_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(4 * 2**20 + 100))  # not a whole number of pages
    if pagecache.on_tmpfs(path):
        pytest.skip("the temporary directory is on tmpfs here")
    return path


def test_evict_then_read_fully(disk_file):
    report = pagecache.evict(disk_file)
    assert report.resident_after == 0 and report.reason is None
    resident = pagecache.residency(disk_file)
    assert len(resident) == -(-disk_file.stat().st_size // mmap.PAGESIZE)
    assert resident.mean() == 0.0
    disk_file.read_bytes()
    assert pagecache.residency(disk_file).mean() == 1.0


def test_cache_stats_agree_with_residency(disk_file):
    disk_file.read_bytes()
    try:
        stats = pagecache.cache_stats(disk_file)
    except pagecache.UnsupportedPlatformError:
        pytest.skip("this kernel has no cachestat")
    assert stats.cached == pagecache.residency(disk_file).sum()


def test_eviction_is_impossible_on_tmpfs():
    shm = Path("/dev/shm")
    if not shm.is_dir() or not pagecache.on_tmpfs(shm):
        pytest.skip("no tmpfs at /dev/shm")
    path = shm / f"mmlab-test-{os.getpid()}.bin"
    try:
        path.write_bytes(b"y" * 2**20)
        with pytest.warns(pagecache.EvictionWarning, match="tmpfs"):
            report = pagecache.evict(path)
        assert report.resident_after == report.pages and "tmpfs" in report.reason
    finally:
        path.unlink(missing_ok=True)


def test_a_mapping_held_open_is_named_as_the_reason(disk_file):
    with open(disk_file, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        mm.madvise(mmap.MADV_WILLNEED)
        bytes(mm)  # fault every page into this process
        with pytest.warns(pagecache.EvictionWarning, match="still mapped by this process"):
            report = pagecache.evict(disk_file)
    assert report.resident_after > 0


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty"
    empty.touch()
    assert len(pagecache.residency(empty)) == 0
    with pytest.raises(FileNotFoundError):
        pagecache.residency(tmp_path / "missing")


def _refuse_what_is_not_a_file(directory: Path) -> None:
    fifo = directory / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, directory):
        for instrument in (pagecache.residency, pagecache.cache_hidden, pagecache.cache_stats):
            with pytest.raises(OSError, match="not a regular file") as caught:
                instrument(path)
            assert caught.value.errno == errno.EINVAL


def test_a_fifo_or_directory_is_refused_at_once(tmp_path):
    run_in_child(_refuse_what_is_not_a_file, tmp_path, timeout=20)  # a FIFO could hang open()


def test_plot_residency(disk_file):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pagecache.evict(disk_file)
    with open(disk_file, "rb") as f:
        f.read(2**20)
    ax = pagecache.plot_residency(pagecache.residency(disk_file))
    assert "pages cached" in ax.get_title()
    plt.close(ax.figure)


# -- files whose page cache the kernel hides -------------------------------------------------

NOBODY = 65534


@pytest.fixture
def shared_dir():
    """A directory on the default temporary file system that every user may enter.

    pytest's own ``tmp_path`` sits in a directory only its owner may enter, so a process that
    dropped root could not even open the files there.
    """
    path = Path(tempfile.mkdtemp(prefix="mmlab-shared-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _as_nobody(fn, *args) -> None:
    """Run ``fn(*args)`` in a forked child that dropped root for uid and gid 65534."""

    def dropped(*args) -> None:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        fn(*args)

    dropped.__name__ = fn.__name__
    run_in_child(dropped, *args)


def _make_shared_file(directory: Path, owner: int, mode: int) -> tuple[Path, bool]:
    """An 8 MiB file with this owner and mode, evicted where that is possible."""
    path = directory / "dataset.bin"
    path.write_bytes(os.urandom(8 * 2**20))
    os.chown(path, owner, owner)
    path.chmod(mode)
    evicted = not pagecache.on_tmpfs(path)
    if evicted:
        assert pagecache.evict(path).resident_after == 0
    return path, evicted


def _kernel() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()))


def _hidden_from_nobody(path: Path, evicted: bool) -> None:
    pages = -(-path.stat().st_size // mmap.PAGESIZE)
    with pytest.raises(pagecache.PageCacheHiddenError) as caught:
        pagecache.residency(path)
    message = str(caught.value)
    for needed in (str(path), "uid 65534", "uid 0", "may not write", "Linux 5.2", "made-up 100%"):
        assert needed in message
    assert "copy you own" in message  # the remedy
    assert caught.value.errno == errno.EPERM and isinstance(caught.value, PermissionError)
    assert "may not write" in pagecache.cache_hidden(path)

    try:
        stats = pagecache.cache_stats(path)
    except pagecache.PageCacheHiddenError as e:
        assert "cachestat refused" in str(e) and "uid 65534" in str(e) and "6.14" in str(e)
    except pagecache.UnsupportedPlatformError as e:
        assert _kernel() < (6, 5) and "Linux 6.5" in str(e)
    else:
        # Kernels from 6.5 until the 2025 fix answer cachestat for any file: the real count.
        assert _kernel() < (6, 14)
        assert stats.cached == (0 if evicted else pages)

    report = pagecache.evict(path)  # it still evicts, but cannot count
    assert report.resident_before is None and report.resident_after is None
    assert "hides" in report.reason and "unknown" in str(report)


def _visible_to_nobody(path: Path, evicted: bool) -> None:
    pages = -(-path.stat().st_size // mmap.PAGESIZE)
    assert pagecache.cache_hidden(path) is None
    assert pagecache.residency(path).sum() == (0 if evicted else pages)
    path.read_bytes()
    assert pagecache.residency(path).all()
    try:
        assert pagecache.cache_stats(path).cached == pages
    except pagecache.UnsupportedPlatformError:
        assert _kernel() < (6, 5)


@pytest.mark.parametrize(
    "owner, mode, visible",
    [
        (0, 0o644, False),  # a shared dataset: readable, someone else's, not writable
        (0, 0o666, True),  # someone else's, but anyone may write it
        (NOBODY, 0o444, True),  # read-only, but nobody owns it
    ],
    ids=["others-read-only", "others-writable", "own-read-only"],
)
def test_residency_never_reports_a_hidden_page_cache(shared_dir, owner, mode, visible):
    if os.geteuid() != 0:
        pytest.skip("needs root, to drop to another user in a child (CI runs as root)")
    path, evicted = _make_shared_file(shared_dir, owner, mode)
    _as_nobody(_visible_to_nobody if visible else _hidden_from_nobody, path, evicted)
    if evicted and not visible:  # the truth nobody was not told: still not one page cached
        assert pagecache.residency(path).sum() == 0


def test_own_files_are_not_hidden(disk_file):
    assert pagecache.cache_hidden(disk_file) is None


# -- cachestat refused by a sandbox rather than by the permission rule --------------------------


def _refuse_cachestat_with(err: int) -> None:
    """Install a seccomp filter that fails every cachestat call with ``err``, as a container's
    sandbox does for calls its profile does not list (or as a kernel without it would)."""
    import ctypes

    class Instruction(ctypes.Structure):
        _fields_ = [
            ("code", ctypes.c_uint16),
            ("jt", ctypes.c_uint8),
            ("jf", ctypes.c_uint8),
            ("k", ctypes.c_uint32),
        ]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Instruction))]

    load_nr, jump_if_equal, ret = 0x20, 0x15, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
    program = (Instruction * 4)(
        Instruction(load_nr, 0, 0, 0),  # seccomp_data.nr, the system call's number
        Instruction(jump_if_equal, 0, 1, 451),  # cachestat on x86-64 and arm64 alike
        Instruction(ret, 0, 0, 0x00050000 | err),  # SECCOMP_RET_ERRNO
        Instruction(ret, 0, 0, 0x7FFF0000),  # SECCOMP_RET_ALLOW
    )
    libc = ctypes.CDLL(None, use_errno=True)
    no_new_privs, set_seccomp, mode_filter = 38, 22, 2
    if libc.prctl(no_new_privs, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(set_seccomp, mode_filter, ctypes.byref(Program(4, program))) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def _cachestat_blocked(path: Path, err: int) -> None:
    _refuse_cachestat_with(err)
    with pytest.raises(pagecache.UnsupportedPlatformError) as caught:
        pagecache.cache_stats(path)
    # A kernel older than cachestat answers ENOSYS itself, and is named as the cause.
    old_kernel = err == errno.ENOSYS and _kernel() < (6, 5)
    assert ("Linux 6.5" if old_kernel else "seccomp filter") in str(caught.value)
    assert "residency() still counts" in str(caught.value)
    assert "6.14" not in str(caught.value)  # not blamed on the permission rule
    with pytest.raises(pagecache.UnsupportedPlatformError):
        pagecache.CacheSampler(path).start()
    assert len(pagecache.residency(path)) == 2048  # mincore is not blocked


@pytest.mark.parametrize("err", [errno.EPERM, errno.ENOSYS], ids=["EPERM", "ENOSYS"])
def test_cachestat_blocked_by_a_sandbox_is_not_called_a_permission_problem(tmp_path, err):
    if not Path("/proc/sys/kernel/seccomp/actions_avail").exists():
        pytest.skip("this kernel has no seccomp filters")
    path = tmp_path / "mine.bin"
    path.write_bytes(bytes(8 * 2**20))
    run_in_child(_cachestat_blocked, path, err)


# -- dirty and writeback pages over time --------------------------------------------------------


def _write_through_write(path: Path, data: bytes):
    fd = os.open(path, os.O_WRONLY)
    os.write(fd, data)
    return lambda: (os.fsync(fd), os.close(fd))


def _write_through_a_mapping(path: Path, data: bytes):
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), len(data))
    mm[:] = data
    return lambda: (mm.flush(), mm.close())  # flush is msync(MS_SYNC)


@pytest.mark.parametrize("write", [_write_through_write, _write_through_a_mapping])
def test_sampler_sees_pages_turn_dirty_then_clean(tmp_path, write):
    if pagecache.on_tmpfs(tmp_path):
        pytest.skip("tmpfs writes nothing back: its pages never turn clean")
    path = tmp_path / "written.bin"
    pages = 2048
    with open(path, "wb") as f:
        f.truncate(pages * mmap.PAGESIZE)  # a hole: nothing cached, nothing dirty
    try:
        pagecache.cache_stats(path)
    except pagecache.UnsupportedPlatformError as e:
        pytest.skip(str(e))

    def samples_after(count: int) -> None:
        deadline = time.monotonic() + 10
        while len(sampler) < count and time.monotonic() < deadline:
            time.sleep(0.002)

    with pagecache.CacheSampler(path, interval=0.002) as sampler:
        samples_after(3)
        sampler.mark("write")
        sync = write(path, os.urandom(pages * mmap.PAGESIZE))
        right_after = pagecache.cache_stats(path)
        samples_after(len(sampler) + 3)
        sampler.mark("fsync")
        sync()
        synced = pagecache.cache_stats(path)
    assert right_after.dirty > 0 and right_after.cached == pages
    assert synced.dirty == synced.writeback == 0 and synced.cached == pages

    (t_write, _), (t_sync, _) = sampler.marks
    times, dirty = sampler.times, sampler.dirty
    assert len(times) == len(dirty) == len(sampler.cached) == len(sampler.writeback)
    assert np.all(np.diff(times) > 0)
    assert dirty[times < t_write].max() == 0
    assert 0 < dirty[(times > t_write) & (times < t_sync)].max() <= pages
    assert dirty[-1] == sampler.writeback[-1] == 0 and sampler.cached[-1] == pages
    assert "peak dirty" in repr(sampler) and "stopped" in repr(sampler)


def test_sampler_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = tmp_path / "data.bin"
    path.write_bytes(bytes(2**20))
    try:
        with pagecache.CacheSampler(path) as sampler:
            sampler.mark("now")
    except pagecache.UnsupportedPlatformError as e:
        pytest.skip(str(e))
    ax = sampler.plot()
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["cached", "dirty", "writeback"] and len(ax.get_lines()) == 4  # and the mark
    assert "MiB" in ax.get_ylabel() and "data.bin" in ax.get_title()
    with pytest.raises(ValueError, match="unknown series"):
        sampler.plot(ax, series=("clean",))
    plt.close(ax.figure)


def test_sampler_reports_a_file_that_vanished(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(2**20))
    try:
        sampler = pagecache.CacheSampler(path, interval=0.001).start()
    except pagecache.UnsupportedPlatformError as e:
        pytest.skip(str(e))
    path.unlink()
    deadline = time.monotonic() + 10
    while sampler._thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.001)
    with pytest.raises(FileNotFoundError) as caught:
        sampler.stop()
    assert "stopped sampling" in caught.value.__notes__[0]
    assert len(sampler) >= 1 and not sampler.running


def test_sampler_rejects_a_bad_interval(tmp_path):
    with pytest.raises(ValueError, match="positive"):
        pagecache.CacheSampler(tmp_path / "x", interval=0)
