"""``DataSplitter``: split sizes, their validation, disjointness, order and reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

import cellvi
from cellvi.data import REGISTRY_KEYS
from cellvi.dataloaders import AnnDataLoader, DataSplitter
from cellvi.dataloaders._data_splitter import split_sizes


@pytest.mark.parametrize(
    ("n_cells", "train_size", "validation_size", "sizes"),
    [
        (50, 0.9, None, (45, 5, 0)),
        (50, 0.8, 0.1, (40, 5, 5)),
        (50, 0.75, 0.15, (38, 7, 5)),  # ceil(37.5) train, floor(7.5) validation
        (50, 0.5, 0.0, (25, 0, 25)),
        (50, 0.7, 0.3, (35, 15, 0)),
        (50, 1.0, None, (50, 0, 0)),
        (50, 1.0, 0.0, (50, 0, 0)),
        (50, 0.01, None, (1, 49, 0)),
        (10, 0.7, 0.29, (7, 2, 1)),  # 0.7 * 10 is 7.000000000000001 in floating point
        (100, 0.6, 0.29, (60, 29, 11)),  # 0.29 * 100 is 28.999999999999996
    ],
)
def test_split_sizes(make_manager, n_cells, train_size, validation_size, sizes):
    splitter = DataSplitter(
        make_manager(n_cells=n_cells), train_size=train_size, validation_size=validation_size
    )
    got = (splitter.train_idx.size, splitter.val_idx.size, splitter.test_idx.size)
    assert got == sizes
    assert (splitter.n_train, splitter.n_val) == sizes[:2]
    everything = np.concatenate([splitter.train_idx, splitter.val_idx, splitter.test_idx])
    np.testing.assert_array_equal(np.sort(everything), np.arange(n_cells))  # disjoint, covering
    assert all(idx.dtype == np.int64 for idx in (splitter.train_idx, splitter.val_idx))


@pytest.mark.parametrize(
    ("train_size", "validation_size", "message"),
    [
        (0.0, None, r"train_size must be in \(0, 1\]"),
        (1.2, None, r"train_size must be in \(0, 1\]"),
        (-0.1, None, r"train_size must be in \(0, 1\]"),
        (0.5, 1.0, r"validation_size must be in \[0, 1\)"),
        (0.5, -0.2, r"validation_size must be in \[0, 1\)"),
        (0.8, 0.3, "train_size \\+ validation_size must be at most 1"),
    ],
)
def test_invalid_sizes_raise(manager, train_size, validation_size, message):
    with pytest.raises(ValueError, match=message):
        DataSplitter(manager, train_size=train_size, validation_size=validation_size)


def test_no_cells_means_no_training_cell():
    with pytest.raises(ValueError, match="leaves no training cell"):
        split_sizes(0, 0.9)


def test_shuffle_set_split_false_keeps_cell_order(manager):
    splitter = DataSplitter(manager, train_size=0.6, validation_size=0.2, shuffle_set_split=False)
    np.testing.assert_array_equal(splitter.train_idx, np.arange(30))
    np.testing.assert_array_equal(splitter.val_idx, np.arange(30, 40))
    np.testing.assert_array_equal(splitter.test_idx, np.arange(40, 50))


def test_random_split_is_reproducible_under_settings_seed(manager, restore_seed):
    cellvi.settings.seed = 11
    first = DataSplitter(manager, train_size=0.6, validation_size=0.2)
    second = DataSplitter(manager, train_size=0.6, validation_size=0.2)
    cellvi.settings.seed = 12
    other = DataSplitter(manager, train_size=0.6, validation_size=0.2)
    for name in ("train_idx", "val_idx", "test_idx"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert not np.array_equal(first.train_idx, other.train_idx)
    assert not np.array_equal(np.sort(first.train_idx), np.arange(30))  # really shuffled


def test_loaders_serve_their_split_with_forwarded_kwargs(manager):
    splitter = DataSplitter(
        manager, train_size=0.6, validation_size=0.2, batch_size=7, drop_last=True
    )
    train, val, test = (
        splitter.train_dataloader(),
        splitter.val_dataloader(),
        splitter.test_dataloader(),
    )
    assert all(isinstance(loader, AnnDataLoader) for loader in (train, val, test))
    assert train.shuffle and not val.shuffle and not test.shuffle
    assert [len(b[REGISTRY_KEYS.X_KEY]) for b in train] == [7] * 4  # 30 cells, last 2 dropped
    assert [len(b[REGISTRY_KEYS.X_KEY]) for b in val] == [7, 3]  # drop_last is for training
    np.testing.assert_array_equal(val.indices, splitter.val_idx)
    np.testing.assert_array_equal(test.indices, splitter.test_idx)


def test_empty_splits_give_no_loaders(manager):
    splitter = DataSplitter(manager, train_size=1.0)
    assert splitter.val_dataloader() == [] and splitter.test_dataloader() == []


def test_load_sparse_tensor_and_pin_memory_reach_the_loaders(make_manager):
    splitter = DataSplitter(make_manager("csr"), load_sparse_tensor=True, pin_memory=False)
    loader = splitter.train_dataloader()
    assert loader.load_sparse_tensor and loader.pin_memory is False
