"""``DataSplitter``: split sizes, their validation, order, reproducibility and loader options."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import cellvi
from cellvi.data import REGISTRY_KEYS
from cellvi.dataloaders import AnnDataLoader, DataSplitter
from cellvi.dataloaders._split_sizes import split_sizes

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CS. tensor support is in beta")


@pytest.mark.parametrize(
    ("n_cells", "train_size", "validation_size", "sizes"),
    [
        (50, 0.9, None, (45, 5, 0)),
        (50, 0.8, 0.1, (40, 5, 5)),
        (50, 0.75, 0.15, (38, 7, 5)),  # ceil(37.5) train, floor(7.5) validation
        (50, 0.5, 0.0, (25, 0, 25)),
        (50, 0.7, 0.3, (35, 15, 0)),
        (50, 1.0, None, (50, 0, 0)),
        (50, 0.01, None, (1, 49, 0)),
        (100, 0.6, 0.29, (60, 28, 12)),  # 0.29 * 100 is 28.999999999999996: floor gives 28
        (100, 0.07, 0.2, (8, 20, 72)),  # 0.07 * 100 is 7.000000000000001: ceil gives 8
    ],
)
def test_split_sizes_follow_the_floating_point_products(
    make_manager, n_cells, train_size, validation_size, sizes
):
    # scvi-tools rounds the raw products, so both libraries split exactly the same cells.
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
        (1.2, None, "Invalid train_size. Must be: 0 < train_size <= 1"),
        (-0.1, None, "Invalid train_size. Must be: 0 < train_size <= 1"),
        (0.5, 1.0, "Invalid validation_size. Must be 0 <= validation_size < 1"),
        (0.5, -0.2, "Invalid validation_size. Must be 0 <= validation_size < 1"),
        (0.8, 0.3, "train_size + validation_size must be between 0 and 1"),
    ],
)
def test_invalid_sizes_raise_scvi_tools_messages(manager, train_size, validation_size, message):
    with pytest.raises(ValueError) as error:
        DataSplitter(manager, train_size=train_size, validation_size=validation_size)
    assert str(error.value) == message


def test_no_cells_means_no_training_cell():
    with pytest.raises(ValueError, match="the training set is empty"):
        split_sizes(0, 0.9)


def test_shuffle_set_split_false_takes_validation_then_train_then_test(manager):
    splitter = DataSplitter(manager, train_size=0.6, validation_size=0.2, shuffle_set_split=False)
    np.testing.assert_array_equal(splitter.val_idx, np.arange(10))
    np.testing.assert_array_equal(splitter.train_idx, np.arange(10, 40))
    np.testing.assert_array_equal(splitter.test_idx, np.arange(40, 50))


def test_random_split_is_numpys_randomstate_permutation_of_the_seed(manager, restore_seed):
    cellvi.settings.seed = 11
    first = DataSplitter(manager, train_size=0.6, validation_size=0.2)
    second = DataSplitter(manager, train_size=0.6, validation_size=0.2)
    order = np.random.RandomState(seed=11).permutation(50)
    np.testing.assert_array_equal(first.val_idx, order[:10])
    np.testing.assert_array_equal(first.train_idx, order[10:40])
    np.testing.assert_array_equal(first.test_idx, order[40:])
    for name in ("train_idx", "val_idx", "test_idx"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    cellvi.settings.seed = 12
    assert not np.array_equal(DataSplitter(manager, train_size=0.6).train_idx, first.train_idx)


@pytest.mark.parametrize("train_size", [None, 0])
def test_default_train_size_moves_a_tiny_last_batch_to_validation(make_manager, train_size):
    # 50 * 0.9 = 45 training cells; batches of 22 would leave one cell alone.
    manager = make_manager(n_cells=50)
    with pytest.warns(UserWarning, match="1 cells moved from the training set"):
        splitter = DataSplitter(manager, train_size=train_size, batch_size=22)
    assert (splitter.n_train, splitter.n_val) == (44, 6)
    assert not splitter.drop_last
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert DataSplitter(manager, batch_size=20).n_train == 45


def test_default_train_size_without_validation_moves_the_cells_to_test(manager):
    splitter = DataSplitter(manager, validation_size=0.0, batch_size=22)
    assert (splitter.n_train, splitter.n_val, splitter.test_idx.size) == (44, 0, 6)


def test_a_chosen_train_size_keeps_its_cells_with_a_warning(manager):
    with pytest.warns(UserWarning, match="has 2 cells"):
        two_left = DataSplitter(manager, train_size=0.9, batch_size=43)
    assert two_left.n_train == 45 and not two_left.drop_last
    # One cell alone breaks batch norm in training mode: refused before training, clearly.
    with pytest.raises(ValueError, match="would hold 1 cell.*drop_last"):
        DataSplitter(manager, train_size=0.9, batch_size=22)
    one_left = DataSplitter(manager, train_size=0.9, batch_size=22, drop_last=True)
    assert [len(b[REGISTRY_KEYS.X_KEY]) for b in one_left.train_dataloader()] == [22, 22]


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


def test_anndataloader_options_reach_the_host_loaders(manager):
    splitter = DataSplitter(manager, train_size=0.8, batch_size=16, iter_ndarray=True)
    splitter.setup()
    assert splitter.resident is None  # iter_ndarray only exists on the host path
    batch = next(iter(splitter.val_dataloader()))
    assert isinstance(batch[REGISTRY_KEYS.X_KEY], np.ndarray)
    with pytest.raises(ValueError, match="iter_ndarray"):
        DataSplitter(manager, device_resident=True, iter_ndarray=True)


def test_splitter_refuses_a_sampler_and_a_lone_drop_dataset_tail(manager):
    with pytest.raises(TypeError, match="builds the sampler of each split"):
        DataSplitter(manager, sampler=[np.arange(3)])
    with pytest.raises(ValueError, match="pass distributed_sampler=True too"):
        DataSplitter(manager, drop_dataset_tail=True)
    with pytest.raises(TypeError, match="Valid names: .*distributed_sampler.*iter_ndarray"):
        DataSplitter(manager, iter_ndarrays=True)


@pytest.mark.parametrize(
    ("x_format", "layout"), [("csr", torch.sparse_csr), ("csc", torch.sparse_csc)]
)
def test_sparse_tensors_keep_their_layout_until_the_device(make_manager, x_format, layout):
    splitter = DataSplitter(make_manager(x_format), load_sparse_tensor=True, pin_memory=False)
    loader = splitter.train_dataloader()
    assert loader.load_sparse_tensor and loader.pin_memory is False
    batch = next(iter(loader))
    assert batch[REGISTRY_KEYS.X_KEY].layout == layout
    expected = batch[REGISTRY_KEYS.X_KEY].to_dense()
    # Semi-supervised loaders yield tuples of minibatches: each is made dense.
    dense = splitter.on_after_batch_transfer((batch, [batch]), 0)
    for got in (dense[0], dense[1][0]):
        assert got[REGISTRY_KEYS.X_KEY].layout == torch.strided
        torch.testing.assert_close(got[REGISTRY_KEYS.X_KEY], expected)
    assert DataSplitter(make_manager(x_format)).on_after_batch_transfer(batch, 0) is batch
