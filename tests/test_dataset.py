"""StoreDataset: the store behind a PyTorch DataLoader with worker processes."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
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


def test_getitems_is_the_items_of_one_take(filled):
    dataset = StoreDataset(filled)
    indices = [5, 99, -1, 0, 5, 42]
    batch = dataset.__getitems__(indices)
    items = [dataset[i] for i in indices]
    assert [s for s, _ in batch] == [s for s, _ in items]
    for (_, got), (_, want) in zip(batch, items, strict=True):
        assert got.dtype == np.float32 and got.shape == want.shape == (3,)
        np.testing.assert_array_equal(got, want)
    assert dataset.__getitems__([]) == []


class CountingDataset(StoreDataset):
    """Records which indices each batch call got, and counts single-item calls."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.batches: list[list[int]] = []
        self.single_calls = 0

    def __getitem__(self, index):
        self.single_calls += 1
        return super().__getitem__(index)

    def __getitems__(self, indices):
        self.batches.append(list(indices))
        return super().__getitems__(indices)


@pytest.mark.parametrize("how", ["batch_sampler", "batch_size"])
def test_a_batching_dataloader_fetches_each_batch_in_one_call(filled, how):
    import torch
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    dataset = CountingDataset(filled)
    if how == "batch_sampler":
        shuffled = RandomSampler(dataset, generator=torch.Generator().manual_seed(0))
        loader = DataLoader(dataset, batch_sampler=BatchSampler(shuffled, 16, drop_last=False))
    else:
        loader = DataLoader(dataset, batch_size=16, shuffle=True)
    batches = list(loader)
    assert len(dataset.batches) == len(batches) == 7 and dataset.single_calls == 0
    for indices, (smiles, values) in zip(dataset.batches, batches, strict=True):
        want = [StoreDataset.__getitem__(dataset, i) for i in indices]
        assert list(smiles) == [s for s, _ in want]
        assert values.dtype == torch.float32
        np.testing.assert_array_equal(values.numpy(), np.stack([v for _, v in want]))
