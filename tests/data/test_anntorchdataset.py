"""``AnnTorchDataset`` in the data layer: numpy minibatches, backed data, its manager's dataset."""

from __future__ import annotations

import pickle

import anndata
import numpy as np
import pytest
import torch
from scipy import sparse
from torch.utils.data import Subset

from cellvi.data import REGISTRY_KEYS, AnnDataManager, AnnTorchDataset
from cellvi.dataloaders import AnnTorchDataset as FromDataloaders

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")


@pytest.fixture
def manager(any_adata, seed_fields, full_setup_kwargs):
    manager = AnnDataManager(seed_fields(**full_setup_kwargs))
    manager.register_fields(any_adata)
    return manager


def test_the_data_layer_owns_the_dataset():
    assert FromDataloaders is AnnTorchDataset  # the loaders re-export it


def test_minibatches_are_numpy_arrays_one_row_per_cell(manager):
    dataset = AnnTorchDataset(manager)
    assert dataset.adata_manager is manager
    assert list(dataset.registered_keys) == list(manager.data_registry)
    for indices, n in ((1, 1), ([3, 0, 3], 3), (slice(2, 7), 5)):
        batch = dataset[indices]
        assert list(batch) == list(manager.data_registry)
        for key, array in batch.items():
            assert isinstance(array, np.ndarray) and array.shape[0] == n, key
    assert dataset[1][REGISTRY_KEYS.BATCH_KEY].dtype == np.int64
    assert dataset[1][REGISTRY_KEYS.X_KEY].shape == (1, manager.summary_stats.n_vars)


def test_getitem_tensors_selects_keys_and_dtypes(manager):
    only = AnnTorchDataset(manager, getitem_tensors=[REGISTRY_KEYS.LABELS_KEY])
    assert list(only[0]) == [REGISTRY_KEYS.LABELS_KEY]
    typed = AnnTorchDataset(manager, getitem_tensors={REGISTRY_KEYS.X_KEY: np.int64})
    assert typed[0][REGISTRY_KEYS.X_KEY].dtype == np.int64
    with pytest.raises(ValueError, match="getitem_tensors must be"):
        AnnTorchDataset(manager, getitem_tensors=1)


def test_an_empty_field_is_not_served(adata, seed_fields):
    manager = AnnDataManager(seed_fields(batch_key="batch"))
    manager.register_fields(adata)
    with pytest.raises(KeyError, match="hold no registered data"):
        AnnTorchDataset(manager, getitem_tensors=[REGISTRY_KEYS.CAT_COVS_KEY])


def test_create_torch_dataset_and_its_subset(manager):
    dataset = manager.create_torch_dataset(data_and_attributes=[REGISTRY_KEYS.X_KEY])
    assert isinstance(dataset, AnnTorchDataset) and list(dataset.keys_and_dtypes) == ["X"]
    subset = manager.create_torch_dataset(indices=[5, 2])
    assert isinstance(subset, Subset) and len(subset) == 2
    np.testing.assert_array_equal(subset[0]["X"], AnnTorchDataset(manager)[5]["X"])
    x = manager.create_torch_dataset(load_sparse_tensor=True)[[0, 1]]["X"]
    # Sparse storage comes as a torch sparse tensor, dense storage stays a dense array.
    assert isinstance(x, torch.Tensor) == sparse.issparse(manager.adata.X)


def test_a_pickled_dataset_carries_its_arrays_not_the_manager(manager):
    dataset = AnnTorchDataset(manager)
    copy = pickle.loads(pickle.dumps(dataset))  # what a spawned worker process receives
    assert copy.adata_manager is None
    for key, array in copy[[4, 1]].items():
        np.testing.assert_array_equal(array, dataset[[4, 1]][key], err_msg=key)


@pytest.mark.parametrize("sparse_x", [False, True])
def test_backed_rows_are_read_from_the_file_in_the_order_asked(
    tmp_path, make_adata, seed_fields, sparse_x
):
    in_memory = make_adata(sparse_x=sparse_x)
    in_memory.write_h5ad(tmp_path / "data.h5ad")
    backed = anndata.read_h5ad(tmp_path / "data.h5ad", backed="r")
    manager = AnnDataManager(seed_fields(batch_key="batch"))
    manager.register_fields(backed)
    assert manager.adata.isbacked
    rows = np.array([9, 2, 31, 2, 0])  # unsorted, with a repeat
    expected = in_memory.X[rows]
    expected = expected.toarray() if sparse_x else expected
    np.testing.assert_array_equal(AnnTorchDataset(manager)[rows]["X"], expected)
    if sparse_x:
        x = AnnTorchDataset(manager, load_sparse_tensor=True)[rows]["X"]
        assert x.layout == torch.sparse_csr
        np.testing.assert_array_equal(x.to_dense().numpy(), expected)
