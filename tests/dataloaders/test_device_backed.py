"""``DeviceBackedDataSplitter``: the resident path on a named device, scvi-tools' defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellvi.data import REGISTRY_KEYS
from cellvi.dataloaders import DataSplitter, DeviceBackedDataSplitter
from cellvi.dataloaders._resident_loader import ResidentLoader

from .test_lightning_integration import fit

COVS = REGISTRY_KEYS.CONT_COVS_KEY


def served_ages(loader) -> list[np.ndarray]:
    return [batch[COVS][:, 0].numpy() for batch in loader]


def test_each_split_is_one_sorted_minibatch_by_default(manager):
    splitter = DeviceBackedDataSplitter(manager, train_size=0.6, validation_size=0.2)
    assert isinstance(splitter, DataSplitter) and splitter.device == torch.device("cpu")
    for split in (splitter.train_idx, splitter.val_idx, splitter.test_idx):
        assert np.all(np.diff(split) > 0)
    splitter.setup()
    assert splitter.resident is not None and splitter.resident.device == torch.device("cpu")
    ages = manager.adata.obs["age"].to_numpy(np.float32)
    for loader, split in (
        (splitter.train_dataloader(), splitter.train_idx),
        (splitter.val_dataloader(), splitter.val_idx),
        (splitter.test_dataloader(), splitter.test_idx),
    ):
        assert isinstance(loader, ResidentLoader)
        (batch,) = served_ages(loader)
        np.testing.assert_array_equal(batch, ages[split])


def test_shuffle_and_batch_size(manager):
    splitter = DeviceBackedDataSplitter(
        manager, train_size=0.8, batch_size=8, shuffle=True, shuffle_test_val=False
    )
    assert not np.all(np.diff(splitter.train_idx) > 0)
    splitter.setup()
    train = splitter.train_dataloader()
    assert [len(b) for b in served_ages(train)] == [8] * 5
    assert not np.array_equal(
        np.concatenate(served_ages(train)), np.concatenate(served_ages(train))
    )
    val = splitter.val_dataloader()
    np.testing.assert_array_equal(*(np.concatenate(served_ages(val)) for _ in range(2)))


def test_host_options_and_a_missing_setup_are_refused(manager):
    with pytest.raises(ValueError, match="cannot honour pin_memory"):
        DeviceBackedDataSplitter(manager, pin_memory=True)
    with pytest.raises(TypeError, match="always holds the data on the device"):
        DeviceBackedDataSplitter(manager, device_resident=False)
    with pytest.raises(ValueError, match="accelerator='tpu'"):
        DeviceBackedDataSplitter(manager, accelerator="tpu")
    with pytest.raises(RuntimeError, match="call setup\\(\\) first"):
        DeviceBackedDataSplitter(manager).train_dataloader()


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*")
def test_lightning_fits_on_it(manager):
    splitter = DeviceBackedDataSplitter(manager, train_size=0.8, accelerator="cpu")
    trainer, module = fit(splitter)
    assert trainer.state.finished
    assert module.cells_seen == {"train": 40, "val": 10}
    assert splitter.resident is None  # released when the fit ended
