"""The blog example's sizes: PyG's SMILES, the full file, QM9 in memory, the extrapolation,
and what notebook 05 prints from them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from test_blog import molecules

from mmlab import blog
from mmlab.data import blogreport, blogsize


def test_pygs_smiles_have_explicit_hydrogens():
    pytest.importorskip("rdkit")
    from rdkit import Chem

    methane = Chem.AddHs(Chem.MolFromSmiles("C"))
    smiles, atoms, bonds = blogsize.pyg_smiles(Chem.MolToMolBlock(methane))
    assert smiles == "[H]C([H])([H])[H]" and (atoms, bonds) == (5, 4)


def counts(lengths, atoms, bonds):
    return blogsize.Counts(np.array(lengths), np.array(atoms), np.array(bonds))


def test_full_layout_and_head():
    c = counts([17, 12, 7], [5, 4, 3], [4, 3, 2])
    layout = blogsize.full_layout(c)
    assert layout == blog.Layout(3, 36 + 36, blog.BLOG_SIZE)
    assert blogsize.full_layout(c.head(1), filesize=100) == blog.Layout(1, 29, 100)


def test_memory_is_scaled_per_atom_edge_and_molecule():
    import torch

    small, full = counts([3, 3], [2, 2], [1, 1]), counts([3, 3, 5], [2, 2, 6], [1, 1, 5])
    data = {
        "pos": torch.zeros(4, 3),  # per atom: 48 bytes for 4 atoms
        "edge_index": torch.zeros(2, 4, dtype=torch.int64),  # per directed edge: 64 bytes
        "y": torch.zeros(2, 19),  # per molecule: 152 bytes
        "smiles": ["CCC", "CCO"],
    }
    dataset = SimpleNamespace(_data=SimpleNamespace(to_dict=lambda: data), slices={})
    import sys

    expected = 48 * 10 / 4 + 64 * 14 / 4 + 152 * 3 / 2 + 3 * sys.getsizeof("") + 11
    assert blogsize.memory_estimate(dataset, small, full) == round(expected)
    same = blogsize.memory_estimate(dataset, small, small)
    assert same == blogsize.in_memory_bytes(dataset)


def test_extrapolate_scales_each_phases_median_flush(tmp_path):
    data = molecules(4)
    data_bytes = blog.layout(d.smiles for d in data).data_bytes
    run = blog.run(data, tmp_path / "b.dat", data_bytes + 12 * 100 + 11, progress=False)
    full = blog.Layout(400, data_bytes * 100, (data_bytes + 12 * 100 + 11) * 100)
    estimate = blogsize.extrapolate(run, full)
    assert estimate.counts == {"writing": 400, "doubling": 400, "phantom": full.phantoms}
    median = float(np.median(run.per_flush["phantom"]))
    assert estimate.seconds["phantom"] == pytest.approx(median * full.phantoms)
    assert estimate.flushes == 800 + full.phantoms
    # a small file's whole blocks overstate the ratio: never more blocks than the full file
    assert 0 < estimate.allocated_bytes <= -(-full.filesize // 4096) * 4096
    low, high = estimate.spread_seconds
    assert low <= estimate.total_seconds <= high
    lines = blogreport.estimate_lines(estimate, 1.0, None)
    assert "phantom" in lines[2] and "in all about" in lines[3]


def test_scaled_flushes_need_the_cached_counts(monkeypatch, tmp_path):
    monkeypatch.setenv("MMLAB_CACHE_DIR", str(tmp_path))
    assert blogsize.cached_counts() is None and blogsize.scaled_flushes() is None


def measurement(write_bytes):
    return SimpleNamespace(read_bytes=0, write_bytes=write_bytes)


class Rows(dict):
    """A stand-in for a bench.compare result: names, and rows with measurements."""

    @property
    def names(self) -> list[str]:
        return list(self)

    def __getitem__(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(measurements=dict.__getitem__(self, name))


def test_storage_lines_and_folios():
    import mmap

    rows = {"every": [measurement(10 * mmap.PAGESIZE)], "once": [measurement(None)]}
    result = Rows(rows)
    lines = blogreport.storage_lines(result, {"every": 10})
    assert "written MiB" in lines[0] and lines[1].split()[-1] == "1.0" and "n/a" in lines[2]
    fact = SimpleNamespace(value=True)
    assert "about one" in blogreport.folio_line(result, "every", 10, fact)
    assert "large folio" in blogreport.folio_line(result, "every", 1, fact)
    assert "cannot tell" in blogreport.folio_line(result, "once", 1, fact)
