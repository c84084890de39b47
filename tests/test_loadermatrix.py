"""mmlab.course.loadermatrix and matrixviews: the holders' pickles, the matrix, its verdicts."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest

from mmlab.course import loadermatrix, matrixviews, traps, workers
from mmlab.data import peers

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="smaps_rollup")
MiB = 2**20


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    pytest.importorskip("pyarrow")
    n = 60_000  # enough records that the list's objects stand far above a worker's own noise
    smiles = [f"C{'C' * (i % 7)}O{i}" for i in range(n)]
    values = np.arange(n * len(peers.FIELDS), dtype=np.float64).reshape(n, -1)
    return loadermatrix.prepare(tmp_path_factory.mktemp("m"), smiles, values)


@pytest.fixture(scope="module")
def holders(paths):
    return loadermatrix.holders(paths)


def test_prepare_reuses_what_exists(paths):
    again = loadermatrix.prepare(paths["store"].parent, ["x"], np.zeros((1, 19)))
    assert again == paths  # built once: the second call found every peer


def test_holders_return_the_same_items(holders):
    first = {name: d[123] for name, d in holders.items()}
    assert {len(d) for d in holders.values()} == {60_000}
    for smiles, vals in first.values():
        assert smiles == first["RecordStore"][0]
        np.testing.assert_array_equal(vals, first["RecordStore"][1])
        assert vals.dtype == np.float32


def test_memmap_pickle_carries_the_whole_data(holders, paths):
    held = holders["numpy.memmap"]
    data = held.values.nbytes + held.heap.nbytes + held.offsets.nbytes
    size = loadermatrix.pickled_bytes(held)
    assert isinstance(size, int) and size >= data
    copy = pickle.loads(pickle.dumps(held))
    assert copy.values._mmap is None  # a plain copy in memory, not a map of the file
    line = traps.unpickled_line(held.values)
    assert "filename None, an array in RAM; equal bytes: True" in line
    assert str(held.values.filename) in line
    np.testing.assert_array_equal(copy.values, held.values)
    lazy = peers.PeerDataset("memmap-rows", paths["memmap-rows"])
    assert loadermatrix.pickled_bytes(lazy) < data / 100  # the fix: the path only


def test_arrow_table_pickle_carries_its_buffers(holders):
    held = holders["Arrow table"]
    held[0]  # the per-process views are made, and must not be pickled
    size = loadermatrix.pickled_bytes(held)
    assert size >= held.table.nbytes
    copy = pickle.loads(pickle.dumps(held))
    assert copy._views is None and copy[5][0] == held[5][0]


def test_pickled_bytes_reports_the_error():
    import threading

    said = loadermatrix.pickled_bytes(threading.Lock())
    assert isinstance(said, str) and said.startswith("TypeError: ")


def test_list_workers_grow_under_fork_while_the_store_does_not(holders):
    pytest.importorskip("torch")
    arms = {n: holders[n] for n in ("Python list", "NumPy in RAM", "RecordStore")}
    objects = workers.footprint(arms["Python list"])["objects"]
    matrix = loadermatrix.run_matrix(arms, methods=("fork",), objects=objects)
    runs = matrix.runs["fork"]
    assert runs["Python list"].growth() - runs["RecordStore"].growth() > 0.5 * objects
    assert abs(runs["NumPy in RAM"].growth() - runs["RecordStore"].growth()) < 0.25 * objects
    assert "copied on read" in _line(matrixviews.matrix_lines(matrix), "-> fork:")


def _line(lines, start):
    (line,) = (x for x in lines if x.startswith(start))
    return line


def test_a_running_fork_server_is_restarted_and_its_workers_are_frozen(holders):
    import gc
    import multiprocessing
    import subprocess

    pytest.importorskip("torch")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([])  # a server already running without the preload
    with context.Pool(1) as pool:
        assert pool.apply(gc.get_freeze_count) == 0
    said = loadermatrix.preload_fork_server()
    assert "already ran, preloading nothing: stopped" in said
    arms = {"RecordStore": holders["RecordStore"]}
    matrix = loadermatrix.run_matrix(arms, methods=("forkserver",), max_batches=2)
    assert matrix.server == ""  # the server now running preloads FORKSERVER_PRELOAD
    assert matrix.frozen("forkserver") > 0  # the last preload froze the server's heap
    assert "not frozen" not in _line(matrixviews.matrix_lines(matrix), "-> fork server frozen")
    code = "import gc, mmlab.course.loadermatrix; print(gc.get_freeze_count())"
    here = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert here.stdout.strip() == "0"  # importing the matrix elsewhere freezes nothing


def test_spawned_memmap_worker_holds_a_copy_the_store_worker_does_not(holders):
    pytest.importorskip("torch")
    arms = {n: holders[n] for n in ("numpy.memmap", "RecordStore")}
    seen = []
    matrix = loadermatrix.run_matrix(
        arms, methods=("spawn",), max_batches=3, on_cell=lambda m: seen.append(m.done)
    )
    assert seen == [1, 2] and list(matrix.runs["spawn"]) == ["RecordStore", "numpy.memmap"]
    assert matrixviews.copied(matrix, "spawn", "numpy.memmap")
    assert not matrixviews.copied(matrix, "spawn", "RecordStore")


def _run(label, method, uss, growth=0, first=0.5, frozen=()):
    before = [{"private_dirty": uss - growth, "private_clean": 0, "uss": uss - growth,
               "pss_file": MiB}] * 2  # fmt: skip
    after = [{"private_dirty": uss, "private_clean": 0, "uss": uss, "pss_file": MiB}] * 2
    run = workers.EpochRun(label, 1.0, first, 1000, 4, before, after, 1.0, 0.5, method)
    run.frozen = list(frozen)
    return run


def _matrix(memmap_spawn_extra=40, list_fork_extra=30, objects=40):
    pickled = {"Python list": 20 * MiB, "NumPy in RAM": 10 * MiB, "numpy.memmap": 30 * MiB,
               "Arrow table": 30 * MiB, "RecordStore": 150}  # fmt: skip
    m = loadermatrix.Matrix(
        loadermatrix.METHODS, loadermatrix.HOLDERS, pickled, 10 * MiB, objects * MiB
    )
    for method in m.methods:
        base = 10 * MiB if method == "fork" else 150 * MiB
        m.runs[method] = {}
        for name in m.names:
            extra = 0 if method == "fork" or name == "RecordStore" else pickled[name]
            if name == "numpy.memmap" and method == "spawn":
                extra = memmap_spawn_extra * MiB
            if name == "Python list" and method == "fork":
                extra = list_fork_extra * MiB
            first = 0.2 if name == "NumPy in RAM" else 0.5
            frozen = (5000, 5000) if method == "forkserver" else ()
            m.runs[method][name] = _run(name, method, base + extra, first=first, frozen=frozen)
    return m


def test_verdicts_follow_the_numbers():
    m = _matrix()
    assert matrixviews.memmap_gap(m) == 40.0 and matrixviews.arrow_outcome(m) == "copied"
    lines = matrixviews.matrix_lines(m)
    assert "copied on read" in _line(lines, "-> fork:")
    assert "within 0.0 MiB of the store" in _line(lines, "-> fork:")
    spawn = _line(lines, "-> spawn: copied")
    assert "Python list, NumPy in RAM, numpy.memmap, Arrow table; not: RecordStore" in spawn
    assert "150.0 MiB" in _line(lines, "-> baseline") and "USS is private dirty" in lines[1]
    assert "rebuilt 40.0 MiB of objects" in _line(lines, "-> spawn: a list worker")
    assert "and little more" in _line(lines, "-> spawn: a list worker")  # 20 MiB over the store
    m.runs["spawn"]["Python list"] = _run("Python list", "spawn", 250 * MiB)
    said = _line(matrixviews.matrix_lines(m), "-> spawn: a list worker")
    assert "the other 60.0 MiB is not live objects" in said
    assert "fork server frozen: 5,000 objects" in _line(lines, "-> fork server frozen")
    assert "heap is frozen" in _line(lines, "-> forkserver: copied")
    assert "fork 0.20 s (NumPy in RAM)" in _line(lines, "-> the workers' start")
    for run in m.runs["forkserver"].values():
        run.frozen = [0, 0]
    unfrozen = matrixviews.matrix_lines(m)
    assert "not frozen here" in _line(unfrozen, "-> fork server frozen")
    assert "not frozen here" in _line(unfrozen, "-> forkserver: copied")
    m.server = "this process's fork server already ran, preloading nothing: stopped"
    assert f"-> {m.server}" in matrixviews.matrix_lines(m)
    values, claims = matrixviews.summary(m)
    assert values["matrix_spawn_numpy_memmap_uss"] == 190 * MiB
    verdicts = {c["key"]: c["verdict"] for c in claims}
    assert verdicts["matrix_fork_list"] == "true" and verdicts["matrix_memmap_spawn"] == "true"
    assert verdicts["matrix_mapped_flat"].startswith("only for a holder that pickles its path")
    assert "copy of the whole file" in matrixviews.why_memmap_gap(m, 30 * MiB)
    assert "serializing its buffers" in matrixviews.why_arrow(m, 30 * MiB)
    assert "compare again" not in matrixviews.why_arrow(m, 30 * MiB)  # 30 MiB over, pickle 30
    m.runs["spawn"]["Arrow table"] = _run("Arrow table", "spawn", 250 * MiB)  # 100 MiB over
    assert "pyarrow's own import" in matrixviews.why_arrow(m, 30 * MiB)

    quiet = _matrix(memmap_spawn_extra=1, list_fork_extra=2)
    verdicts = {c["key"]: c["verdict"] for c in matrixviews.summary(quiet)[1]}
    assert verdicts["matrix_fork_list"] == "not shown by this run"
    assert verdicts["matrix_memmap_spawn"] == "not shown"
    assert "cannot show copy-on-read" in _line(matrixviews.matrix_lines(quiet), "-> fork:")
    assert "noise hid the copy" in matrixviews.why_memmap_gap(quiet, 30 * MiB)


def test_small_data_is_too_small_to_tell_and_a_lighter_holder_refutes_the_store():
    m = _matrix()
    m.pickled = dict(m.pickled, **{"NumPy in RAM": MiB // 2})  # a full copy within the noise
    assert matrixviews.verdict(m, "spawn", "NumPy in RAM") == "too small to tell"
    assert "too small to tell at this size: NumPy in RAM" in _line(
        matrixviews.matrix_lines(m), "-> spawn: copied"
    )
    noisy = _matrix()  # two store workers 8 MiB apart: a 10 MiB copy no longer stands out
    run = noisy.runs["spawn"]["RecordStore"]
    run.end = [dict(run.end[0], uss=run.end[0]["uss"] + 8 * MiB), run.end[1]]
    assert matrixviews.threshold(noisy, "spawn", "NumPy in RAM") == 24 * MiB
    lighter = _matrix()
    lighter.runs["spawn"]["Arrow table"] = _run("Arrow table", "spawn", 100 * MiB)
    verdict = {c["key"]: c["verdict"] for c in matrixviews.summary(lighter)[1]}
    assert verdict["matrix_mapped_flat"].startswith("not shown: a holder carrying data held less")


def test_heat_map_draws_a_partial_matrix():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = _matrix()
    del m.runs["spawn"]
    m.runs["fork"]["NumPy in RAM"] = _run("NumPy in RAM", "fork", 10 * MiB - 20_000)
    _, ax = plt.subplots()
    matrixviews.draw(m, "pss_file")(ax)
    assert "10 of 15 cells" in ax.get_title()
    assert sum(t.get_text() == "…" for t in ax.texts) == 5
    del m.runs["forkserver"]["RecordStore"]  # no baseline yet: values without a difference
    matrixviews.draw(m)(ax)
    assert not any("nan" in t.get_text() for t in ax.texts)
    assert sum("\n" in t.get_text() for t in ax.texts) == 5
    assert len(ax.figure.axes) == 2  # one colour bar, however often the map is redrawn
    assert ax.figure.axes[1].get_yticklabels()[-1].get_text() == "≥2 (clipped)"
    assert "Arrow table\n(+ pyarrow import)" in [t.get_text() for t in ax.get_yticklabels()]
    assert "10 MiB\n0.0" in [t.get_text() for t in ax.texts]  # -0.02 MiB over: not "-0.0"
    image = ax.images[0].get_array()
    assert image[m.names.index("Python list"), 0] == 0.75  # 30 MiB over, of 40 MiB of objects
    plt.close("all")
