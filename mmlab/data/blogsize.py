"""The sizes behind the blog's QM9 example: its full file, and all of QM9 in PyG's memory.

The blog writes PyG's ``data.smiles``: PyG's ``QM9`` makes it with
``Chem.MolToSmiles(mol, isomericSmiles=True)`` from the SDF molecule, hydrogens explicit
(``'[H]C([H])([H])[H]'`` for methane, where qm9pack's CSV says ``'C'``). So the full file's data
size, its zero tail, the phantom records and the remainder mod 12 (which decides how the
doubling loop ends) need every one of those strings. ``pyg_counts`` computes them once for all
of QM9 with the generator ``qm9.prepare_pyg_root`` uses (bonds perceived by RDKit from
qm9pack's geometries, then PyG's own call) and caches them next to qm9pack's converted copy
(``MMLAB_CACHE_DIR``). A different generator gives different strings: the downloaded files
(bonds by Open Babel) differ in about 0.2% of molecules, so their remainder, and hence the
loop's last error, may differ too.

The same pass counts atoms and bonds, because an ``InMemoryDataset`` holds its tensors per
atom (``x``, ``pos``, ``z``), per directed edge (``edge_index``, ``edge_attr``: two per bond)
and per molecule (``y``, ``idx``, the strings, the slices): ``memory_estimate`` scales what a
small loaded dataset holds by those counts. QM9's first molecules are its smallest, so scaling
by molecules alone underestimates.

``extrapolate`` scales the scaled-down run of the program (``blog.run``) to the 100 MB file:
each phase's flushes (records written, records doubled, phantom records) at the median cost
per flush over the chunks of the phase, the chunks' quartiles as its spread; ``flushes``
checks that a flush costs the same in a 100 MB mapping as in the small one.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmlab.data import qm9
from mmlab.data.blog import PHANTOM_BYTES, Layout, Run

__all__ = [
    "FULL_RUN_MOLECULES",
    "Counts",
    "Estimate",
    "cached_counts",
    "extrapolate",
    "flushes",
    "full_layout",
    "in_memory_bytes",
    "load_in_child",
    "memory_estimate",
    "pyg_counts",
    "pyg_smiles",
    "scaled_flushes",
]


FULL_RUN_MOLECULES = 2_000  # notebook 05's scaled run of the blog's program, full size
# flushes per molecule of the scaled run on QM9: the fallback before the SMILES cache exists
APPROX_FLUSHES_PER_MOLECULE = 48
COMPARE_FLUSHES = 7 * 20_000  # 05 §6's flush-every arm, full size: ROUNDS x COMPARE_MOLECULES


@dataclass(frozen=True)
class Counts:
    """Per molecule, in QM9 order: UTF-8 bytes of PyG's SMILES, atoms, bonds."""

    smiles_bytes: np.ndarray
    atoms: np.ndarray
    bonds: np.ndarray

    def __len__(self) -> int:
        return len(self.smiles_bytes)

    def head(self, n: int) -> Counts:
        """The first ``n`` molecules' counts."""
        return Counts(self.smiles_bytes[:n], self.atoms[:n], self.bonds[:n])


def pyg_smiles(molblock: str) -> tuple[str, int, int]:
    """PyG's ``data.smiles`` for one SDF record, with its atom and bond counts (PyG parses
    the SDF with ``removeHs=False, sanitize=False``)."""
    from rdkit import Chem

    mol = Chem.MolFromMolBlock(molblock, removeHs=False, sanitize=False)
    return Chem.MolToSmiles(mol, isomericSmiles=True), mol.GetNumAtoms(), mol.GetNumBonds()


def _count(molecule: Any) -> tuple[int, int, int]:
    block, _ = qm9._molblock(molecule)
    smiles, atoms, bonds = pyg_smiles(block)
    return len(smiles.encode("utf-8")), atoms, bonds


def _cache_file() -> Path:
    versions = f"{importlib.metadata.version('qm9pack')}-rdkit{importlib.metadata.version('rdkit')}"
    return qm9._cache_path().with_name(f"qm9pack-{versions}-pyg-smiles.npz")


def cached_counts() -> Counts | None:
    """The counts ``pyg_counts`` cached, or None where they were never computed."""
    try:
        with np.load(_cache_file()) as saved:
            counts = Counts(saved["smiles_bytes"], saved["atoms"], saved["bonds"])
    except (OSError, KeyError, ValueError):
        return None  # missing or damaged
    return counts if len(counts) == qm9.QM9_MOLECULES else None


def scaled_flushes(molecules: int = FULL_RUN_MOLECULES) -> int | None:
    """Flushes of notebook 05's scaled run of the blog's program on its first ``molecules``
    (one per record written, per record doubled, per phantom record); None before the
    counts were computed."""
    from mmlab.data.blog import scaled_size

    counts = cached_counts()
    if counts is None:
        return None
    full, small = full_layout(counts), full_layout(counts.head(molecules))
    scaled = Layout(molecules, small.data_bytes, scaled_size(small.data_bytes, full))
    return 2 * molecules + scaled.phantoms


def pyg_counts(*, workers: int | None = None, progress: bool = True) -> Counts:
    """Counts for all of QM9, as a root made by ``prepare_pyg_root`` gives them; computed once
    (about a minute on two cores) and cached."""
    counts = cached_counts()
    if counts is not None:
        return counts
    import multiprocessing

    from tqdm.std import tqdm

    molecules = qm9._qm9pack_molecules()
    context = multiprocessing.get_context(
        "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    )
    with context.Pool(workers or os.cpu_count() or 1, initializer=qm9._quiet_worker) as pool:
        rows = list(
            tqdm(
                pool.imap(_count, molecules, chunksize=256),
                total=qm9.QM9_MOLECULES,
                desc="PyG's SMILES for all of QM9 (once)",
                unit="mol",
                disable=not progress,
                file=sys.stdout,
                mininterval=5,
            )
        )
    table = np.array(rows, dtype=np.int64)
    counts = Counts(
        table[:, 0].astype(np.uint16), table[:, 1].astype(np.uint8), table[:, 2].astype(np.uint8)
    )
    cache = _cache_file()
    cache.parent.mkdir(parents=True, exist_ok=True)
    building = cache.with_name(cache.name + f".{os.getpid()}.npz")
    np.savez(building, smiles_bytes=counts.smiles_bytes, atoms=counts.atoms, bonds=counts.bonds)
    os.replace(building, cache)
    return counts


def full_layout(counts: Counts, filesize: int | None = None) -> Layout:
    """The blog's file for these molecules: a native ``I``, the SMILES, a native ``d`` each."""
    records = len(counts)
    data = int(counts.smiles_bytes.sum(dtype=np.int64)) + PHANTOM_BYTES * records
    return Layout(records, data) if filesize is None else Layout(records, data, filesize)


# PyG's QM9 stores these per atom and per directed edge (two per bond); the rest per molecule
_PER_ATOM = ("x", "pos", "z")
_PER_EDGE = ("edge_index", "edge_attr")


def memory_estimate(dataset: Any, small: Counts, full: Counts) -> int:
    """Bytes ``dataset`` (an ``InMemoryDataset`` of ``small``'s molecules) would hold with
    ``full``'s molecules: each tensor scaled by what it is stored per (atom, directed edge,
    molecule); the strings by their lengths; the slices per molecule."""
    n = len(small)
    per_atom = int(full.atoms.sum(dtype=np.int64)) / int(small.atoms.sum())
    per_edge = int(full.bonds.sum(dtype=np.int64)) / max(int(small.bonds.sum()), 1)
    per_molecule = len(full) / n
    scale = dict.fromkeys(_PER_ATOM, per_atom) | dict.fromkeys(_PER_EDGE, per_edge)
    total = 0.0
    for key, value in dataset._data.to_dict().items():
        if hasattr(value, "nbytes"):
            total += int(value.nbytes) * scale.get(key, per_molecule)
        elif key == "smiles":  # a str object: a fixed header plus one byte per ASCII character
            header = sys.getsizeof("")
            total += header * len(full) + int(full.smiles_bytes.sum(dtype=np.int64))
        elif isinstance(value, list):
            total += sum(sys.getsizeof(v) for v in value) * per_molecule
    for value in (getattr(dataset, "slices", None) or {}).values():
        total += int(value.nbytes) * per_molecule
    return round(total)


@dataclass(frozen=True)
class Estimate:
    """The blog's program on ``full``, each phase scaled from ``run`` by its count."""

    full: Layout
    seconds: dict[str, float]  # by phase: writing, doubling, phantom
    cpu_seconds: dict[str, float]
    write_bytes: dict[str, float | None]
    allocated_bytes: float  # blocks at the end, at the small file's share of its size
    per_flush: dict[str, tuple[float, float, float]]  # by phase: chunks' quartiles, seconds
    chunks: dict[str, int]  # by phase: how many chunks those quartiles come from
    counts: dict[str, int]  # flushes by phase in the full file

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    @property
    def spread_seconds(self) -> tuple[float, float]:
        """The total if every flush cost what the chunks' lower (upper) quartile cost."""

        def phase(p: str, k: int) -> float:
            cost = self.per_flush[p][k]
            return self.seconds[p] if np.isnan(cost) else self.counts[p] * cost

        return tuple(sum(phase(p, k) for p in self.counts) for k in (0, 2))  # type: ignore[return-value]

    @property
    def flushes(self) -> int:
        """One per record written, per record doubled and per phantom record."""
        return 2 * self.full.records + self.full.phantoms


def extrapolate(small: Run, full: Layout) -> Estimate:
    """Scale each phase of ``small`` to ``full``: writing and doubling per record, the part
    past the data per phantom record (each flushes once, whatever the file's size). Time per
    flush is the median over the phase's chunks, with their quartiles as the spread."""
    counts = {
        "writing": (small.writing, full.records / small.layout.records),
        "doubling": (small.doubling, full.records / small.layout.records),
        "phantom": (small.phantom, full.phantoms / max(small.layout.phantoms, 1)),
    }
    written = {
        name: None if c.write_bytes is None else c.write_bytes * k
        for name, (c, k) in counts.items()
    }
    flushes = {"writing": full.records, "doubling": full.records, "phantom": full.phantoms}
    quartiles = {
        name: tuple(float(q) for q in np.percentile(chunks, [25, 50, 75]))
        if len(chunks)
        else (np.nan,) * 3
        for name, chunks in small.per_flush.items()
    }
    return Estimate(
        full,
        {  # the median chunk's cost per flush, or the phase's mean where it had no chunk
            name: c.wall_s * k if np.isnan(quartiles[name][1]) else quartiles[name][1] * n
            for (name, (c, k)), n in zip(counts.items(), flushes.values(), strict=True)
        },
        {name: c.cpu_s * k for name, (c, k) in counts.items()},
        written,
        min(  # a ratio measured on a small file can exceed 1: never more than the whole file
            small.allocated[2] / small.layout.filesize * full.filesize,
            -(-full.filesize // 4096) * 4096,
        ),
        quartiles,  # type: ignore[arg-type]
        {name: len(chunks) for name, chunks in small.per_flush.items()},
        flushes,
    )


def flushes(path: str | os.PathLike[str], size: int, count: int = 200):
    """A function that maps a fresh sparse file of ``size`` bytes at ``path`` and writes and
    flushes 8 bytes ``count`` times, 12 bytes apart, as the phantom loop does: to check that
    a flush costs the same on the scaled file as on the blog's 100 MB one."""
    import mmap

    def write_and_flush() -> None:
        with open(path, "wb") as f:
            f.truncate(size)
        with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
            for k in range(count):
                mm[12 * k + 4 : 12 * k + 12] = bytes(8)
                mm.flush()

    return write_and_flush


def in_memory_bytes(dataset: Any) -> int:
    """Bytes an ``InMemoryDataset`` holds in RAM: its tensors and its strings."""
    total = 0
    for store in (dataset._data.to_dict(), getattr(dataset, "slices", None) or {}):
        for value in store.values():
            if hasattr(value, "nbytes"):
                total += int(value.nbytes)
            elif isinstance(value, list):
                total += sum(sys.getsizeof(v) for v in value)
    return total


_LOAD_IN_CHILD = """
import json, sys
import torch_geometric.datasets
from mmlab.data.blogsize import in_memory_bytes
from mmlab.instruments.proc import memory_by_kind
before = memory_by_kind().rss_anon
dataset = torch_geometric.datasets.QM9(sys.argv[1])
after = memory_by_kind().rss_anon
print(json.dumps({"anon_growth": after - before, "held": in_memory_bytes(dataset),
                  "molecules": len(dataset), "in_memory": type(dataset).__mro__[1].__name__}))
"""


def load_in_child(root: str | os.PathLike[str]) -> dict:
    """Load PyG's ``QM9(root)`` (already processed) in a fresh Python process, where no memory
    freed earlier can be reused: its anonymous RSS growth, the bytes it holds, its base class."""
    import json
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", _LOAD_IN_CHILD, str(root)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"loading QM9({root}) in a child failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])
