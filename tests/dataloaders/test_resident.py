"""The device-resident data path: same minibatches as the host loader, gathered on the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse

import cellvi
from cellvi.data import AnnTorchDataset
from cellvi.dataloaders import AnnDataLoader, DataSplitter
from cellvi.dataloaders._resident import ResidentCSR, ResidentTensors
from cellvi.dataloaders._resident_loader import ResidentLoader


def test_resident_rows_equal_host_rows(any_manager, expected_arrays) -> None:
    dataset = AnnTorchDataset(any_manager)
    resident = ResidentTensors(dataset, "cpu")
    rows = np.array([7, 0, 49, 7, 12])
    host = dataset[rows]
    gathered = resident.take(torch.as_tensor(rows))
    assert list(gathered) == list(host)
    expected = expected_arrays(any_manager.adata)
    for key, values in gathered.items():
        assert values.dtype == torch.from_numpy(host[key]).dtype, key
        np.testing.assert_array_equal(values.numpy(), expected[key][rows], err_msg=key)


def test_resident_csr_handles_empty_rows_and_an_empty_matrix() -> None:
    matrix = sparse.csr_matrix(
        np.array([[0, 0, 0], [1, 0, 2], [0, 0, 0], [0, 5, 0]], dtype=np.float32)
    )
    resident = ResidentCSR(matrix, torch.float32, torch.device("cpu"))
    rows = torch.tensor([0, 3, 1, 2])
    np.testing.assert_array_equal(
        resident.dense_rows(rows).numpy(), matrix.toarray()[rows.numpy()]
    )
    empty = ResidentCSR(
        sparse.csr_matrix((3, 4), dtype=np.float32), torch.float32, torch.device("cpu")
    )
    assert torch.equal(empty.dense_rows(torch.tensor([2, 0])), torch.zeros(2, 4))


@pytest.mark.parametrize("drop_last", [False, True])
def test_every_cell_once_per_epoch(manager, drop_last, restore_seed) -> None:
    cellvi.settings.seed = 3
    resident = ResidentTensors(AnnTorchDataset(manager), "cpu")
    indices = np.arange(5, 48)
    loader = ResidentLoader(resident, indices, batch_size=8, shuffle=True, drop_last=drop_last)
    assert len(loader) == (43 // 8 if drop_last else 6)
    epochs = []
    for _ in range(2):
        seen = torch.cat([batch["size_factor"].ravel() for batch in loader])
        epochs.append(seen)
    sizes = manager.adata.obs["size_factor"].to_numpy(np.float32)
    for seen in epochs:
        expected = np.sort(sizes[indices])
        if drop_last:
            assert len(seen) == 40 and set(seen.numpy()) <= set(expected)
        else:
            np.testing.assert_array_equal(np.sort(seen.numpy()), expected)
    assert not torch.equal(epochs[0], epochs[1])  # a new order every epoch


def test_resident_order_is_reproducible_under_the_seed(manager, restore_seed) -> None:
    resident = ResidentTensors(AnnTorchDataset(manager), "cpu")
    orders = []
    for _ in range(2):
        cellvi.settings.seed = 11
        loader = ResidentLoader(resident, np.arange(50), batch_size=50, shuffle=True)
        orders.append(next(iter(loader))["size_factor"])
    assert torch.equal(*orders)


def _setup_splitter(manager, **kwargs) -> DataSplitter:
    splitter = DataSplitter(manager, batch_size=16, **kwargs)
    splitter.setup("fit")
    return splitter


def test_splitter_chooses_the_resident_path_by_default_on_cpu(manager) -> None:
    assert isinstance(_setup_splitter(manager).train_dataloader(), ResidentLoader)
    assert isinstance(_setup_splitter(manager).val_dataloader(), ResidentLoader)
    assert isinstance(
        _setup_splitter(manager, device_resident=False).train_dataloader(), AnnDataLoader
    )
    assert isinstance(
        _setup_splitter(manager, load_sparse_tensor=True).train_dataloader(), AnnDataLoader
    )


def test_auto_falls_back_to_the_host_when_data_do_not_fit(manager, monkeypatch) -> None:
    monkeypatch.setattr(
        "cellvi.dataloaders._data_splitter.fits_on_device", lambda nbytes, device: False
    )
    assert isinstance(_setup_splitter(manager).train_dataloader(), AnnDataLoader)
    assert isinstance(
        _setup_splitter(manager, device_resident=True).train_dataloader(), ResidentLoader
    )


def test_bad_device_resident_options(manager) -> None:
    with pytest.raises(ValueError, match="device_resident must be True, False or 'auto'"):
        DataSplitter(manager, device_resident="yes")
    with pytest.raises(ValueError, match="device_resident=True cannot honour load_sparse_tensor"):
        DataSplitter(manager, device_resident=True, load_sparse_tensor=True)


@pytest.mark.parametrize(
    "option",
    [{"pin_memory": True}, {"num_workers": 1}, {"timeout": 5.0}],
)
def test_host_only_options_are_honoured_or_refused(manager, option) -> None:
    """An option the resident path cannot honour picks the host loader, or is an error."""
    (name,) = option
    with pytest.raises(ValueError, match=f"device_resident=True cannot honour {name}"):
        DataSplitter(manager, device_resident=True, **option)
    splitter = _setup_splitter(manager, device_resident="auto", **option)
    assert splitter.resident is None
    loader = splitter.train_dataloader()
    assert isinstance(loader, AnnDataLoader)
    assert getattr(loader, name) == option[name]


def test_unknown_loader_options_fail_listing_the_valid_names(manager) -> None:
    with pytest.raises(TypeError, match=r"'presistent_workers' \(did you mean 'persistent_wo"):
        DataSplitter(manager, presistent_workers=True)
    with pytest.raises(TypeError, match="Valid names: .*num_workers"):
        AnnDataLoader(manager, bogus=1)


def test_minibatch_order_is_not_the_weight_initialisation_stream(manager, restore_seed) -> None:
    # settings.seed seeds torch's global generator, which draws the initial weights; an order
    # generator seeded with the same number would shuffle with those very random numbers.
    n_cells, batch_size = 50, 10
    sizes = manager.adata.obs["size_factor"].to_numpy(np.float32)
    weight_stream_order = torch.randperm(
        n_cells, generator=torch.Generator().manual_seed(5)
    ).numpy()
    weight_stream_batches = [
        set(sizes[weight_stream_order[i : i + batch_size]]) for i in range(0, n_cells, batch_size)
    ]
    cellvi.settings.seed = 5
    resident = ResidentTensors(AnnTorchDataset(manager), "cpu")
    loaders = {
        "resident": ResidentLoader(
            resident, np.arange(n_cells), batch_size=batch_size, shuffle=True
        ),
        "host": AnnDataLoader(
            manager, indices=np.arange(n_cells), batch_size=batch_size, shuffle=True
        ),
    }
    for name, loader in loaders.items():
        served_batches = [set(batch["size_factor"].ravel().numpy()) for batch in loader]
        assert len(set(sizes[:n_cells])) == n_cells  # cells are told apart by their size factor
        assert served_batches != weight_stream_batches, name
