"""Shared fixtures: stores in a temporary directory on a disk filesystem."""

from __future__ import annotations

import pytest

from mmlab import RecordStore

FIELDS = ("mu", "alpha", "U0")


def value_row(i: int) -> list[float]:
    """The values record ``i`` gets in the fixtures, so any record can be checked."""
    return [float(i), i + 0.5, -2.0 * i]


def smiles_of(i: int) -> str:
    return "C" * (i % 7 + 1) + f"O{i}"


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "records.mms"


@pytest.fixture
def filled(store_path):
    """A flushed, closed store of 100 records; returns its path."""
    with RecordStore.create(store_path, FIELDS, capacity=16) as store:
        store.extend((smiles_of(i), value_row(i)) for i in range(100))
    return store_path


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Keep the QM9 conversion cache of test runs out of the user's own cache."""
    import os

    os.environ["MMLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("mmlab-cache"))
