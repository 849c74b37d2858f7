"""``AnnDataLoader``: order, coverage, batching, subsets, shuffling and sparse output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import cellvi
from cellvi.data import REGISTRY_KEYS
from cellvi.dataloaders import AnnDataLoader

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")

X = REGISTRY_KEYS.X_KEY
COVS = REGISTRY_KEYS.CONT_COVS_KEY


def cell_ids(loader, manager) -> np.ndarray:
    """The cell index of every served row, in serving order, read off a distinct covariate."""
    age = manager.adata.obs["age"].to_numpy(np.float32)
    assert np.unique(age).size == age.size, "the fixture's ages must identify cells"
    lookup = {value: i for i, value in enumerate(age.tolist())}
    batches = loader if isinstance(loader, list) else list(loader)
    return np.array([lookup[v] for b in batches for v in b[COVS][:, 0].tolist()], dtype=np.int64)


def test_is_a_dataloader_with_settings_defaults(manager):
    loader = AnnDataLoader(manager)
    assert isinstance(loader, DataLoader)
    assert loader.minibatch_size == cellvi.settings.batch_size == 128
    assert loader.num_workers == cellvi.settings.dl_num_workers
    assert len(loader) == 1


def test_unshuffled_batches_equal_the_anndata_rows_in_order(any_manager, expected_arrays):
    expected = expected_arrays(any_manager.adata)
    batches = list(AnnDataLoader(any_manager, batch_size=16))
    assert [len(b[X]) for b in batches] == [16, 16, 16, 2]
    for key, values in expected.items():
        np.testing.assert_array_equal(
            np.concatenate([b[key].numpy() for b in batches]), values, err_msg=key
        )


def test_csr_and_csc_serve_the_same_tensors_as_dense(make_manager):
    dense = list(AnnDataLoader(make_manager("dense"), batch_size=12))
    for x_format in ("csr", "csc"):
        loader = AnnDataLoader(make_manager(x_format), batch_size=12)
        for got, want in zip(loader, dense, strict=True):
            assert got.keys() == want.keys()
            for key in want:
                torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)


@pytest.mark.parametrize("x_format", ["dense", "csr"])
def test_shuffled_epochs_cover_each_cell_once_in_new_orders(make_manager, x_format):
    manager = make_manager(x_format)
    loader = AnnDataLoader(manager, batch_size=8, shuffle=True)
    first, second = cell_ids(loader, manager), cell_ids(loader, manager)
    for epoch in (first, second):
        np.testing.assert_array_equal(np.sort(epoch), np.arange(manager.adata.n_obs))
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, np.arange(manager.adata.n_obs))


def test_shuffled_batches_keep_fields_aligned(manager, expected_arrays):
    expected = expected_arrays(manager.adata)
    for batch in AnnDataLoader(manager, batch_size=8, shuffle=True):
        ids = cell_ids([batch], manager)
        for key, values in expected.items():
            np.testing.assert_array_equal(batch[key].numpy(), values[ids], err_msg=key)


@pytest.mark.parametrize(("drop_last", "sizes"), [(False, [16, 16, 16, 2]), (True, [16, 16, 16])])
def test_drop_last(manager, drop_last, sizes):
    for shuffle in (False, True):
        loader = AnnDataLoader(manager, batch_size=16, shuffle=shuffle, drop_last=drop_last)
        assert len(loader) == len(sizes)
        assert [len(b[X]) for b in loader] == sizes


def test_integer_indices_restrict_and_order_the_cells(manager, expected_arrays):
    indices = np.array([40, 3, 17, 5, 22])
    batches = list(AnnDataLoader(manager, indices=indices, batch_size=2))
    assert len(batches) == 3
    for key, values in expected_arrays(manager.adata).items():
        np.testing.assert_array_equal(
            np.concatenate([b[key].numpy() for b in batches]), values[indices], err_msg=key
        )


def test_boolean_mask_selects_cells(manager, expected_arrays):
    mask = np.zeros(manager.adata.n_obs, dtype=bool)
    mask[[1, 7, 30]] = True
    (batch,) = AnnDataLoader(manager, indices=mask)
    np.testing.assert_array_equal(batch[X].numpy(), expected_arrays(manager.adata)[X][[1, 7, 30]])


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ([0, 50], "index 50 is out of range for 50 cells"),
        ([-1, 2], "index -1 is out of range for 50 cells"),
        ([0.5, 1.0], "integer positions or a boolean mask"),
        (np.ones(49, dtype=bool), "mask of length 49 but there are 50 cells"),
        (np.zeros((2, 2), dtype=int), "must be 1-D"),
    ],
)
def test_invalid_indices_raise_clear_errors(manager, indices, message):
    with pytest.raises(ValueError, match=message):
        AnnDataLoader(manager, indices=indices)


def test_empty_indices_give_no_batches(manager):
    loader = AnnDataLoader(manager, indices=[])
    assert len(loader) == 0 and list(loader) == []


def test_shuffle_is_reproducible_under_settings_seed(manager, restore_seed):
    def two_epochs() -> list[np.ndarray]:
        loader = AnnDataLoader(manager, batch_size=8, shuffle=True)
        return [cell_ids(loader, manager) for _ in range(2)]

    cellvi.settings.seed = 3
    run_a, run_b = two_epochs(), two_epochs()
    cellvi.settings.seed = 4
    run_c = two_epochs()
    for a, b in zip(run_a, run_b, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(run_a[0], run_a[1])  # a new order each epoch
    assert not np.array_equal(run_a[0], run_c[0])


def test_load_sparse_tensor_yields_torch_csr(make_manager, expected_arrays):
    manager = make_manager("csr")
    batches = list(AnnDataLoader(manager, batch_size=16, load_sparse_tensor=True))
    assert all(b[X].layout == torch.sparse_csr for b in batches)
    dense = np.concatenate([b[X].to_dense().numpy() for b in batches])
    np.testing.assert_array_equal(dense, expected_arrays(manager.adata)[X])


def test_data_and_attributes_and_loader_kwargs_pass_through(manager):
    loader = AnnDataLoader(manager, batch_size=10, data_and_attributes=[X], num_workers=0)
    assert all(set(batch) == {X} for batch in loader)
    with pytest.raises(TypeError, match="batch_sampler"):
        AnnDataLoader(manager, batch_sampler=[[0, 1]])


def test_worker_processes_serve_the_same_batches(make_manager):
    manager = make_manager("csr")
    in_process = list(AnnDataLoader(manager, batch_size=16))
    with_workers = list(AnnDataLoader(manager, batch_size=16, num_workers=2))
    for got, want in zip(with_workers, in_process, strict=True):
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)


def test_shuffled_batches_are_ascending_unshuffled_keep_the_given_order(manager):
    shuffled = AnnDataLoader(manager, batch_size=8, shuffle=True)
    assert all(np.all(np.diff(batch) > 0) for batch in shuffled.sampler)
    given = np.array([5, 1, 3])
    (batch,) = AnnDataLoader(manager, indices=given).sampler
    np.testing.assert_array_equal(batch, given)


@pytest.mark.parametrize(
    ("batch_size", "error"), [(0, ValueError), (2.5, TypeError), (True, TypeError)]
)
def test_invalid_batch_size_is_refused(manager, batch_size, error):
    with pytest.raises(error, match="batch_size"):
        AnnDataLoader(manager, batch_size=batch_size)


def test_a_sampler_yields_positions_in_the_indices(manager, expected_arrays):
    indices = np.array([40, 3, 17, 5, 22])
    loader = AnnDataLoader(manager, indices=indices, sampler=[np.array([4, 0]), np.array([2])])
    batches = list(loader)
    assert len(loader) == 2 and [len(b[X]) for b in batches] == [2, 1]
    np.testing.assert_array_equal(
        np.concatenate([b[X].numpy() for b in batches]),
        expected_arrays(manager.adata)[X][[22, 40, 17]],
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sampler": [[0]], "distributed_sampler": True}, "both `sampler` and"),
        ({"sampler": [[0]], "shuffle": True}, "so shuffle cannot apply"),
        ({"sampler": [[0]], "batch_size": 4, "drop_last": True}, "so batch_size, drop_last"),
        ({"drop_dataset_tail": True}, "pass distributed_sampler=True too"),
        ({"iter_ndarray": True, "collate_fn": list}, "one or the other"),
    ],
)
def test_sampling_options_that_cannot_hold_together_are_refused(manager, options, message):
    with pytest.raises(ValueError, match=message):
        AnnDataLoader(manager, **options)


def test_iter_ndarray_yields_numpy_arrays(manager, expected_arrays):
    batches = list(AnnDataLoader(manager, batch_size=20, iter_ndarray=True))
    assert all(isinstance(value, np.ndarray) for batch in batches for value in batch.values())
    np.testing.assert_array_equal(
        np.concatenate([b[X] for b in batches]), expected_arrays(manager.adata)[X]
    )


@pytest.mark.filterwarnings("ignore:Sparse CSC tensor support is in beta")
def test_load_sparse_tensor_keeps_the_csc_layout(make_manager, expected_arrays):
    manager = make_manager("csc")
    indices = np.array([9, 2, 30])
    (batch,) = AnnDataLoader(manager, indices=indices, load_sparse_tensor=True)
    assert batch[X].layout == torch.sparse_csc
    np.testing.assert_array_equal(
        batch[X].to_dense().numpy(), expected_arrays(manager.adata)[X][indices]
    )
