"""``AnnTorchDataset``: keys, dtypes, shapes and values of the arrays a minibatch holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse

from cellvi.data import REGISTRY_KEYS, AnnTorchDataset

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")

CATEGORICAL = {REGISTRY_KEYS.BATCH_KEY, REGISTRY_KEYS.LABELS_KEY, REGISTRY_KEYS.CAT_COVS_KEY}


def test_every_registered_field_is_served_with_its_dtype_and_shape(manager):
    batch = AnnTorchDataset(manager)[np.arange(6)]
    assert set(batch) == set(manager.data_registry)
    widths = {
        REGISTRY_KEYS.X_KEY: 7,
        REGISTRY_KEYS.BATCH_KEY: 1,
        REGISTRY_KEYS.LABELS_KEY: 1,
        REGISTRY_KEYS.SIZE_FACTOR_KEY: 1,
        REGISTRY_KEYS.CAT_COVS_KEY: 2,
        REGISTRY_KEYS.CONT_COVS_KEY: 2,
        REGISTRY_KEYS.PROTEIN_EXP_KEY: 3,
    }
    for key, array in batch.items():
        assert isinstance(array, np.ndarray) and array.flags.c_contiguous
        assert array.dtype == (np.int64 if key in CATEGORICAL else np.float32), key
        assert array.shape == (6, widths[key]), key


def test_values_match_the_anndata_rows_in_the_order_asked(any_manager, expected_arrays):
    rows = np.array([9, 2, 31, 2, 0])  # unsorted, with a repeat
    batch = AnnTorchDataset(any_manager)[rows]
    for key, expected in expected_arrays(any_manager.adata).items():
        np.testing.assert_array_equal(batch[key], expected[rows], err_msg=key)


def test_sparse_storage_stays_sparse_and_csc_becomes_csr(make_manager):
    assert AnnTorchDataset(make_manager("csr")).data[REGISTRY_KEYS.X_KEY].format == "csr"
    assert AnnTorchDataset(make_manager("csc")).data[REGISTRY_KEYS.X_KEY].format == "csr"
    assert isinstance(AnnTorchDataset(make_manager("dense")).data["X"], np.ndarray)


def test_data_and_attributes_selects_keys_and_overrides_dtypes(manager):
    keys = [REGISTRY_KEYS.X_KEY, REGISTRY_KEYS.BATCH_KEY]
    assert set(AnnTorchDataset(manager, getitem_tensors=keys)[[0, 1]]) == set(keys)
    dtypes = {REGISTRY_KEYS.X_KEY: np.float64, REGISTRY_KEYS.BATCH_KEY: np.int32}
    batch = AnnTorchDataset(manager, getitem_tensors=dtypes)[[0, 1]]
    assert batch[REGISTRY_KEYS.X_KEY].dtype == np.float64
    assert batch[REGISTRY_KEYS.BATCH_KEY].dtype == np.int32


def test_data_and_attributes_rejects_unregistered_keys(manager):
    with pytest.raises(KeyError, match="'nope'.*available"):
        AnnTorchDataset(manager, getitem_tensors=["X", "nope"])
    with pytest.raises(ValueError, match="must be a list of registry keys"):
        AnnTorchDataset(manager, getitem_tensors="X")


def test_int_and_slice_indexing_and_out_of_range(manager, expected_arrays):
    dataset = AnnTorchDataset(manager)
    assert len(dataset) == manager.adata.n_obs
    expected = expected_arrays(manager.adata)["X"]
    np.testing.assert_array_equal(dataset[3]["X"], expected[[3]])
    np.testing.assert_array_equal(dataset[2:5]["X"], expected[2:5])
    with pytest.raises(ValueError, match="index 50 is out of range for 50 cells"):
        dataset[[0, 50]]


def test_load_sparse_tensor_serves_torch_csr_for_sparse_fields(make_manager, expected_arrays):
    manager = make_manager("csr")
    rows = np.array([4, 1, 8])
    batch = AnnTorchDataset(manager, load_sparse_tensor=True)[rows]
    x = batch[REGISTRY_KEYS.X_KEY]
    assert x.layout == torch.sparse_csr and x.dtype == torch.float32
    np.testing.assert_array_equal(x.to_dense().numpy(), expected_arrays(manager.adata)["X"][rows])
    assert isinstance(batch[REGISTRY_KEYS.BATCH_KEY], np.ndarray)  # dense fields stay dense


def test_non_canonical_csr_is_summed_for_the_sparse_tensor(make_manager):
    manager = make_manager("dense")
    # Two entries for one (row, column) pair: the sparse tensor must carry their sum.
    matrix = sparse.csr_matrix(
        (np.array([1.0, 2.0], np.float32), np.array([3, 3]), np.array([0, 2] + [2] * 49)),
        shape=(50, 7),
    )
    manager.adata.X = matrix
    x = AnnTorchDataset(manager, load_sparse_tensor=True)[[0]][REGISTRY_KEYS.X_KEY]
    assert x.to_dense()[0, 3].item() == 3.0


def test_a_manager_without_anndata_is_refused():
    from cellvi.data import AnnDataManager
    from cellvi.dataloaders import DataSplitter

    with pytest.raises(ValueError, match="holds no AnnData"):
        AnnTorchDataset(AnnDataManager(fields=[]))
    with pytest.raises(ValueError, match="holds no AnnData"):
        DataSplitter(AnnDataManager(fields=[]))
