"""StoreDataset: the store behind a PyTorch DataLoader with worker processes."""

from __future__ import annotations

import pickle

import numpy as np
from conftest import smiles_of, value_row

from mmlab.data.dataset import StoreDataset


def test_items_and_pickling(filled):
    dataset = StoreDataset(filled)
    assert len(dataset) == 100
    smiles, values = dataset[7]
    assert smiles == smiles_of(7) and values.dtype == np.float32
    np.testing.assert_array_equal(values, np.float32(value_row(7)))
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone[-1][0] == smiles_of(99)


def test_dataloader_with_workers(filled):
    from torch.utils.data import DataLoader

    loader = DataLoader(StoreDataset(filled), batch_size=10, num_workers=2)
    smiles, values = [], []
    for batch_smiles, batch_values in loader:
        smiles += list(batch_smiles)
        values.append(batch_values.numpy())
    assert smiles == [smiles_of(i) for i in range(100)]
    np.testing.assert_array_equal(np.concatenate(values)[:, 0], np.arange(100, dtype=np.float32))
