"""QM9, the blog example's dataset: through torch_geometric as the blog loads it, or offline.

QM9 holds 130,831 small organic molecules, each with a SMILES string and 19 regression
targets. The blog loads it with ``torch_geometric.datasets.QM9(root)``, which downloads it;
lab machines are often offline, and PyG's download is known to fail. So there are two
sources of the same numbers:

* ``"pyg"``: the unchanged ``QM9(root)``, reading ``data.smiles`` and ``data.y[0]``. (The
  blog calls ``data.y.item()``, which fails: ``y`` has shape ``[1, 19]``, one row of 19
  targets, and ``item()`` only converts a tensor of one element.)
* ``"qm9pack"``: the PyPI package ``qm9pack`` (MIT, by QM9's original author) ships QM9 as
  CSV. Its columns are converted to PyG's order and units here; the first conversion is
  cached as a ``RecordStore``, so later calls do not parse the CSV again.

``prepare_pyg_root`` writes PyG's three raw files from qm9pack, so the unchanged
``QM9(root)`` processes them without touching the network.
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import math
import multiprocessing
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mmlab.store import RecordStore, StoreError

__all__ = [
    "FIELDS",
    "HAR2EV",
    "KCALMOL2EV",
    "QM9_MOLECULES",
    "TARGETS",
    "PreparedRoot",
    "QM9FormatError",
    "Target",
    "columns",
    "prepare_pyg_root",
    "records",
    "to_store",
]

HAR2EV = 27.211386246  # PyG's factors, so both sources give the same numbers
KCALMOL2EV = 0.04336414
HAR2KCALMOL = 627.509474  # how QM9's published CSV states atomization energies
QM9_MOLECULES = 130_831
QM9_INDICES = 133_885  # molecules numbered in QM9, of which 3,054 are uncharacterized
_TAKE_BLOCK = 16_384  # molecules read from the cache per progress update


class Target(NamedTuple):
    """One of QM9's 19 regression targets, in PyG's order."""

    name: str
    unit: str
    description: str


TARGETS: tuple[Target, ...] = (
    Target("mu", "D", "dipole moment"),
    Target("alpha", "a0^3", "isotropic polarizability"),
    Target("HOMO", "eV", "highest occupied molecular orbital energy"),
    Target("LUMO", "eV", "lowest unoccupied molecular orbital energy"),
    Target("gap", "eV", "gap between HOMO and LUMO"),
    Target("R2", "a0^2", "electronic spatial extent"),
    Target("ZPVE", "eV", "zero point vibrational energy"),
    Target("U0", "eV", "internal energy at 0 K"),
    Target("U", "eV", "internal energy at 298.15 K"),
    Target("H", "eV", "enthalpy at 298.15 K"),
    Target("G", "eV", "free energy at 298.15 K"),
    Target("Cv", "cal/mol K", "heat capacity at 298.15 K"),
    Target("U0_atom", "eV", "atomization energy at 0 K"),
    Target("U_atom", "eV", "atomization energy at 298.15 K"),
    Target("H_atom", "eV", "atomization enthalpy at 298.15 K"),
    Target("G_atom", "eV", "atomization free energy at 298.15 K"),
    Target("A", "GHz", "rotational constant A"),
    Target("B", "GHz", "rotational constant B"),
    Target("C", "GHz", "rotational constant C"),
)
FIELDS: tuple[str, ...] = tuple(t.name for t in TARGETS)

# The columns of the CSV that PyG reads (QM9 as MoleculeNet publishes it), in its units:
# energies in hartree, atomization energies in kcal/mol. PyG reorders and converts them.
_RAW_COLUMNS = (
    "A B C mu alpha homo lumo gap r2 zpve u0 u298 h298 g298 cv "
    "u0_atom u298_atom h298_atom g298_atom"
).split()
_PYG_ORDER = [*range(3, 19), 0, 1, 2]
_PYG_CONVERSION = (1, 1, HAR2EV, HAR2EV, HAR2EV, 1, HAR2EV, HAR2EV, HAR2EV, HAR2EV, HAR2EV, 1)
_PYG_CONVERSION += (KCALMOL2EV,) * 4 + (1, 1, 1)

# qm9pack's columns for the first 15 raw values, in _RAW_COLUMNS order.
_QM9PACK_COLUMNS = (
    "RotA_GHz RotB_GHz RotC_GHz Dipole_debye Polarizability_bohr3 HOMO_au LUMO_au "
    "HOMO_LUMO_gap_au R2_bohr2 ZPVE_au InternalEnergy_0K_au InternalEnergy_298K_au "
    "Enthalphy_298K_au GibbsFreeEnergy_298K_au Heatcapacity_Cv_cal_mol_K"
).split()
_QM9PACK_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
# Free-atom energies (hartree) at B3LYP/6-31G(2df,p), QM9's atomref table, for U0, U, H, G;
# in the order of qm9pack's Stoichiometry column: H, C, N, O, F.
_ATOM_REFERENCE = (
    (-0.500273, -0.498857, -0.497912, -0.510927),
    (-37.846772, -37.845355, -37.844411, -37.861317),
    (-54.583861, -54.582445, -54.581501, -54.598897),
    (-75.064579, -75.063163, -75.062219, -75.079532),
    (-99.718730, -99.717314, -99.716370, -99.733544),
)
_ELEMENTS = ("H", "C", "N", "O", "F")
_PYG_PROCESSED = Path("processed") / "data_v3.pt"
_PYG_RAW = ("gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt")


class QM9FormatError(ValueError):
    """A QM9 source file holds a row that cannot be read."""


class _Molecule(NamedTuple):
    index: int  # QM9's own numbering, 1..133,885
    smiles: str
    raw: tuple[float, ...]  # the 19 values in _RAW_COLUMNS order and units
    elements: tuple[str, ...]
    xyz: tuple[float, ...]


def _to_pyg(raw: tuple[float, ...]) -> list[float]:
    """Reorder and convert raw values into PyG's y: the targets of ``TARGETS``."""
    return [raw[k] * f for k, f in zip(_PYG_ORDER, _PYG_CONVERSION, strict=True)]


# -- qm9pack ----------------------------------------------------------------------------------


def _qm9pack_data() -> Path:
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the offline QM9 source needs the package qm9pack, which ships QM9 as CSV: "
            f"{sys.executable} -m pip install qm9pack",
            name="qm9pack",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _parse_row(row: dict[str, str]) -> _Molecule:
    stoichiometry = [int(n) for n in row["Stoichiometry"].strip("[]").split(",")]
    if len(stoichiometry) != len(_ELEMENTS):
        raise ValueError(f"Stoichiometry {row['Stoichiometry']!r} does not count H, C, N, O, F")
    measured = tuple(float(row[column]) for column in _QM9PACK_COLUMNS)
    atomization = []
    for k, energy in enumerate(measured[10:14]):
        reference = sum(n * ref[k] for n, ref in zip(stoichiometry, _ATOM_REFERENCE, strict=True))
        atomization.append((energy - reference) * HAR2KCALMOL)
    elements = tuple(e.strip().strip("'\"") for e in row["Elements"].strip("[]").split(","))
    xyz = tuple(float(v) for v in row["XYZ_Ang"].replace("[", "").replace("]", "").split(","))
    if len(xyz) != 3 * len(elements) or sum(stoichiometry) != len(elements):
        raise ValueError("Elements, XYZ_Ang and Stoichiometry disagree on the number of atoms")
    return _Molecule(int(row["Index"]), row["SMILES"], measured + tuple(atomization), elements, xyz)


def _qm9pack_molecules(limit: int | None = None) -> Iterator[_Molecule]:
    """Parse qm9pack's CSV files in order, naming the file and line of any bad row."""
    csv.field_size_limit(sys.maxsize)
    data = _qm9pack_data()
    produced = 0
    for name in _QM9PACK_FILES:
        path = data / name
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                if limit is not None and produced >= limit:
                    return
                try:
                    molecule = _parse_row(row)
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    raise QM9FormatError(f"{path}, line {reader.line_num}: {exc}") from exc
                produced += 1
                yield molecule


def _cache_path() -> Path:
    root = (
        os.environ.get("MMLAB_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmlab"
    )
    version = importlib.metadata.version("qm9pack")
    return Path(root) / f"qm9pack-{version}-pyg-units.mms"


def _cached_qm9pack() -> Path:
    """The converted qm9pack data as a RecordStore, built on first use."""
    _qm9pack_data()
    cache = _cache_path()
    try:
        with RecordStore.open(cache) as store:
            if len(store) == QM9_MOLECULES and store.fields == FIELDS:
                return cache
    except (OSError, StoreError):
        pass  # missing or damaged: rebuild it
    cache.parent.mkdir(parents=True, exist_ok=True)
    from tqdm.std import tqdm  # text bars: a saved notebook keeps their final state

    molecules = tqdm(
        _qm9pack_molecules(), total=QM9_MOLECULES, desc="converting qm9pack (once)", unit="mol"
    )
    smiles, rows = [], []
    for m in molecules:
        smiles.append(m.smiles)
        rows.append(_to_pyg(m.raw))
    # Written whole under a temporary name, then renamed over the cache.
    RecordStore.from_columns(cache, smiles, _matrix(rows), FIELDS, overwrite=True).close()
    return cache


def _matrix(rows: list[list[float]]) -> np.ndarray:
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(FIELDS))


def _qm9pack_records(limit: int | None) -> Iterator[tuple[str, list[float]]]:
    if limit is not None and not _cache_path().exists():
        # A few molecules parse faster than the whole cache builds.
        for m in _qm9pack_molecules(limit):
            yield m.smiles, _to_pyg(m.raw)
        return
    with RecordStore.open(_cached_qm9pack()) as store:
        for record in store[: len(store) if limit is None else limit]:
            yield record.smiles, record.values.tolist()


# -- PyG ----------------------------------------------------------------------------------------


def _has_processed(root: Path) -> bool:
    return (root / _PYG_PROCESSED).is_file()


def _check_pyg_root(root: str | os.PathLike[str] | None) -> Path:
    if root is None:
        raise ValueError("source='pyg' needs root=, the folder QM9(root) uses")
    root = Path(root)
    raw = [root / "raw" / name for name in _PYG_RAW]
    if not _has_processed(root) and not all(p.is_file() for p in raw):
        raise FileNotFoundError(
            f"{root} holds neither PyG's processed QM9 ({_PYG_PROCESSED}) nor its raw files "
            f"(raw/{', raw/'.join(_PYG_RAW)}). Two ways to get them: online, let "
            "torch_geometric.datasets.QM9(root) download them; offline, write the raw files "
            "from qm9pack with mmlab.qm9.prepare_pyg_root(root), then QM9(root) processes them."
        )
    return root


def _pyg_records(root: Path, limit: int | None) -> Iterator[tuple[str, list[float]]]:
    from torch_geometric.datasets import QM9

    dataset = QM9(str(root))
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for i in range(count):
        data = dataset[i]
        # data.y has shape [1, 19]: data.y[0] is the molecule's 19 targets.
        yield data.smiles, data.y[0].tolist()


# -- public API -------------------------------------------------------------------------------


def _resolve(source: str, root: str | os.PathLike[str] | None) -> str:
    if source not in ("auto", "pyg", "qm9pack"):
        raise ValueError(f"source must be 'auto', 'pyg' or 'qm9pack', got {source!r}")
    if source == "auto":
        return "pyg" if root is not None and _has_processed(Path(root)) else "qm9pack"
    return source


def records(
    source: str = "auto", root: str | os.PathLike[str] | None = None, limit: int | None = None
) -> Iterator[tuple[str, list[float]]]:
    """Yield ``(smiles, y)`` per molecule, ``y`` the 19 targets of ``TARGETS`` in PyG's units.

    ``source="auto"`` reads PyG's QM9 where ``root`` already holds it processed, else qm9pack.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be a count, got {limit}")
    if _resolve(source, root) == "pyg":
        return _pyg_records(_check_pyg_root(root), limit)
    _qm9pack_data()  # fail now, not at the first molecule, if qm9pack is missing
    return _qm9pack_records(limit)


def to_store(
    path: str | os.PathLike[str],
    source: str = "auto",
    root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> RecordStore:
    """Write QM9 into a RecordStore at ``path`` and return it opened read-only.

    The molecules are read into columns first (SMILES, and a 130,831 x 19 array), then
    written by ``RecordStore.from_columns`` in one go. An existing store at ``path`` is
    replaced only once the new one is complete, and never while a writer holds it.
    """
    from tqdm.std import tqdm  # text bars: a saved notebook keeps their final state

    total = QM9_MOLECULES if limit is None else min(limit, QM9_MOLECULES)
    with tqdm(total=total, desc="QM9 -> store", unit="mol") as progress:
        smiles, values = columns(source, root, limit, progress)
    RecordStore.from_columns(path, smiles, values, FIELDS, overwrite=True).close()
    return RecordStore.open(path)


def columns(
    source: str = "auto",
    root: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    progress: Any = None,
) -> tuple[list[str], np.ndarray]:
    """QM9's SMILES and its (n, 19) targets, as ``records`` would give them, as columns.

    ``source`` and ``root`` as in ``records``; ``limit``: the first molecules only;
    ``progress``: anything with ``update(n=1)`` (a tqdm bar), or None for no progress."""
    if progress is None:
        progress = _NoProgress()
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be a count, got {limit}")
    if _resolve(source, root) == "qm9pack":
        _qm9pack_data()
        if limit is None or _cache_path().exists():  # as _qm9pack_records decides
            return _cached_columns(limit, progress)
    smiles, rows = [], []
    for molecule_smiles, y in records(source, root, limit):
        smiles.append(molecule_smiles)
        rows.append(y)
        progress.update()
    return smiles, _matrix(rows)


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass


def _cached_columns(limit: int | None, progress: Any) -> tuple[list[str], np.ndarray]:
    smiles: list[str] = []
    blocks = [np.empty((0, len(FIELDS)))]
    with RecordStore.open(_cached_qm9pack()) as store:
        count = len(store) if limit is None else min(limit, len(store))
        for start in range(0, count, _TAKE_BLOCK):
            block_smiles, block = store.take(range(start, min(start + _TAKE_BLOCK, count)))
            smiles += block_smiles
            blocks.append(block)
            progress.update(len(block_smiles))
    return smiles, np.concatenate(blocks)


# -- PyG's raw files, offline -----------------------------------------------------------------


@dataclass(frozen=True)
class PreparedRoot:
    """What ``prepare_pyg_root`` wrote, and how the bonds of its molecules were found."""

    root: Path
    molecules: int
    placeholders: int
    bonds_with_huckel: int
    connectivity_only: int


_PLACEHOLDER = "gdb_{}\n  uncharacterized in QM9: placeholder\n\n  0  0  0  0  0  0  0  0  0  0999 V2000\nM  END\n$$$$\n"  # noqa: E501


def _molblock(molecule: _Molecule) -> tuple[str, str]:
    """An SDF record with bonds perceived from the geometry; and which method found them."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    lines = [str(len(molecule.elements)), ""]
    for k, element in enumerate(molecule.elements):
        x, y, z = molecule.xyz[3 * k : 3 * k + 3]
        lines.append(f"{element} {x:.10f} {y:.10f} {z:.10f}")
    block = "\n".join(lines) + "\n"
    method = "charge 0"
    mol = Chem.MolFromXYZBlock(block)
    try:
        rdDetermineBonds.DetermineBonds(mol, charge=0)
    except (ValueError, RuntimeError):
        mol, method = Chem.MolFromXYZBlock(block), "huckel"
        try:
            rdDetermineBonds.DetermineBonds(mol, charge=0, useHueckel=True)
        except (ValueError, RuntimeError):
            mol, method = Chem.MolFromXYZBlock(block), "connectivity"
            rdDetermineBonds.DetermineConnectivity(mol)
    mol.SetProp("_Name", f"gdb_{molecule.index}")
    return Chem.MolToMolBlock(mol) + "$$$$\n", method


def _quiet_worker() -> None:
    # RDKit's Hueckel code prints warnings from C++ straight to the terminal.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")


def _raw_csv_line(name: str, raw: tuple[float, ...]) -> str:
    return ",".join([name, *(repr(v) for v in raw)]) + "\n"


def prepare_pyg_root(
    root: str | os.PathLike[str],
    limit: int | None = None,
    *,
    workers: int | None = None,
    overwrite: bool = False,
) -> PreparedRoot:
    """Write PyG's raw QM9 files from qm9pack, so the unchanged ``QM9(root)`` needs no network.

    ``raw/gdb9.sdf`` gets one record per QM9 index (placeholders at the 3,054
    uncharacterized ones, so ``idx`` and ``name`` agree with a downloaded QM9), with bonds
    perceived from each geometry by RDKit's ``rdDetermineBonds`` (charge 0, then a Hueckel
    retry, then connectivity alone). ``raw/gdb9.sdf.csv`` holds the targets in MoleculeNet's
    units and ``raw/uncharacterized.txt`` the skipped indices, laid out as PyG parses them.
    ``limit`` keeps the first N molecules, for tests and quick runs.

    Known difference from the downloaded files (reported for this method; the originals
    cannot be fetched offline to re-check it): about 0.2% of molecules get a different bond set
    or SMILES than the Open Babel-made original, mostly charge-separated forms such as a
    zwitterion drawn neutral; their ``y`` is identical, taken from the same values. On all of
    qm9pack, 6,808 molecules needed the Hueckel retry and 2 got connectivity only.
    """
    from tqdm.std import tqdm  # text bars: a saved notebook keeps their final state

    root = Path(root)
    raw_dir = root / "raw"
    processed = root / "processed"
    if not overwrite and (_has_processed(root) or (raw_dir / _PYG_RAW[0]).exists()):
        raise FileExistsError(
            f"{root} already holds a QM9; pass overwrite=True to replace it (and drop "
            "PyG's processed files, which would be stale)"
        )
    if processed.is_dir():
        for stale in processed.iterdir():
            stale.unlink()
    raw_dir.mkdir(parents=True, exist_ok=True)
    molecules = list(_qm9pack_molecules(limit))
    workers = workers or os.cpu_count() or 1
    # fork where there is one: spawn would re-run a student's unguarded script in each worker.
    context = multiprocessing.get_context(
        "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    )
    methods: dict[str, int] = {"charge 0": 0, "huckel": 0, "connectivity": 0}
    last_index = molecules[-1].index if molecules else 0
    by_index = {m.index: m for m in molecules}
    with (
        context.Pool(workers, initializer=_quiet_worker) as pool,
        open(raw_dir / "gdb9.sdf", "w") as sdf,
        open(raw_dir / "gdb9.sdf.csv", "w") as table,
    ):
        table.write(",".join(["mol_id", *_RAW_COLUMNS]) + "\n")
        blocks = pool.imap(_molblock, molecules, chunksize=64)
        progress = tqdm(total=len(molecules), desc="perceiving bonds", unit="mol")
        for index in range(1, last_index + 1):
            name = f"gdb_{index}"
            molecule = by_index.get(index)
            if molecule is None:
                sdf.write(_PLACEHOLDER.format(index))
                table.write(_raw_csv_line(name, (math.nan,) * len(_RAW_COLUMNS)))
                continue
            block, method = next(blocks)
            methods[method] += 1
            sdf.write(block)
            table.write(_raw_csv_line(name, molecule.raw))
            progress.update()
        progress.close()
    missing = [i for i in range(1, last_index + 1) if i not in by_index]
    with open(raw_dir / "uncharacterized.txt", "w") as f:
        # PyG reads the indices from the 10th line to the second-last one.
        f.write("Molecules of QM9 that failed its consistency check (written by mmlab)\n")
        f.write("from qm9pack, where these indices are missing.\n" + "\n" * 7)
        f.writelines(f"{i:>7}\n" for i in missing)
        f.write(f"{len(missing)} molecules\n")
    return PreparedRoot(
        root, len(molecules), len(missing), methods["huckel"], methods["connectivity"]
    )
