"""``train(datamodule=...)``: a DataSplitter or a user's LightningDataModule replaces the split."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest

from cellvi.dataloaders import AnnDataLoader, DataSplitter

from ._fit_helpers import TRAIN_KW, new_model, scvi_data


class CellsModule(pl.LightningDataModule):
    """Train on the first ``n_train`` cells, validate on the last 40, counting loader calls."""

    def __init__(self, manager, n_train: int = 200, n_obs: int | None = None) -> None:
        super().__init__()
        self.manager = manager
        self.n_train = n_train
        self.train_calls = 0
        if n_obs is not None:
            self.n_obs = n_obs

    def train_dataloader(self) -> AnnDataLoader:
        self.train_calls += 1
        return AnnDataLoader(self.manager, indices=np.arange(self.n_train), batch_size=50)

    def val_dataloader(self) -> AnnDataLoader:
        return AnnDataLoader(self.manager, indices=np.arange(360, 400), batch_size=50)


def test_a_data_splitter_as_datamodule() -> None:
    model = new_model(scvi_data())
    splitter = DataSplitter(model.adata_manager, train_size=0.5, validation_size=0.25)
    model.train(max_epochs=2, datamodule=splitter, check_val_every_n_epoch=1, **TRAIN_KW)
    assert model.trainer.datamodule is splitter
    np.testing.assert_array_equal(model.train_indices, splitter.train_idx)
    np.testing.assert_array_equal(model.validation_indices, splitter.val_idx)
    assert len(model.train_indices) == 200 and len(model.validation_indices) == 100
    # 200 training cells in minibatches of 128: two steps an epoch.
    assert model.trainer.global_step == 4
    assert list(model.history["elbo_validation"].index) == [0, 1]


def test_a_custom_datamodule_is_what_training_reads() -> None:
    model = new_model(scvi_data())
    datamodule = CellsModule(model.adata_manager)
    model.train(max_epochs=2, datamodule=datamodule, check_val_every_n_epoch=1, **TRAIN_KW)
    assert datamodule.train_calls >= 1
    assert model.trainer.global_step == 2 * 4  # 200 cells in minibatches of 50
    assert list(model.history["elbo_validation"].index) == [0, 1]
    assert model.is_trained_ and model.train_indices is None
    assert model.get_latent_representation().shape == (400, 4)


def test_max_epochs_is_required_when_the_datamodule_has_no_n_obs() -> None:
    model = new_model(scvi_data())
    with pytest.raises(ValueError, match=r"no n_obs.*pass max_epochs"):
        model.train(datamodule=CellsModule(model.adata_manager), **TRAIN_KW)
    with pytest.raises(ValueError, match="max_epochs"):
        model.train(datamodule=DataSplitter(model.adata_manager), **TRAIN_KW)
    assert not model.is_trained_


def test_max_epochs_defaults_from_the_datamodule_n_obs() -> None:
    model = new_model(scvi_data())
    # min(round(20_000 / n_obs * 400), 400) is 2 for 4 million cells.
    datamodule = CellsModule(model.adata_manager, n_train=50, n_obs=4_000_000)
    model.train(datamodule=datamodule, **TRAIN_KW)
    assert model.trainer.max_epochs == 2
    assert list(model.history["elbo_train"].index) == [0, 1]


def test_datasplitter_kwargs_with_a_datamodule_are_refused() -> None:
    model = new_model(scvi_data())
    with pytest.raises(ValueError, match="datasplitter_kwargs.*datamodule"):
        model.train(
            max_epochs=1,
            datamodule=CellsModule(model.adata_manager),
            datasplitter_kwargs={"drop_last": True},
            **TRAIN_KW,
        )
    assert not model.is_trained_
