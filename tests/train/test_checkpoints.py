"""``SaveCheckpoint``: checkpoints of a fit are model folders that ``Model.load`` reads."""

from __future__ import annotations

import math
import os
import re
import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import cellvi as scvi
from cellvi.dataloaders import DataSplitter
from cellvi.model import SCVI
from cellvi.train import NonFiniteLossError, SaveCheckpoint, TrainingPlan

from ._fit_helpers import STEPS_PER_EPOCH, TRAIN_KW, latent, new_model, scvi_data


def _folders(path) -> list[str]:
    return sorted(os.listdir(path))


def test_checkpoints_are_model_folders_and_the_best_is_kept(tmp_path) -> None:
    adata = scvi_data()
    model = new_model(adata)
    callback = SaveCheckpoint(dirpath=tmp_path / "ckpt", monitor="elbo_validation", save_top_k=-1)
    model.train(max_epochs=3, callbacks=[callback], check_val_every_n_epoch=1, **TRAIN_KW)

    # One folder per epoch, named by Lightning's placeholders, without a .ckpt file.
    names = _folders(tmp_path / "ckpt")
    assert len(names) == 3, names
    assert all(name.startswith("epoch=") and not name.endswith(".ckpt") for name in names)
    for name in names:
        assert os.path.isdir(tmp_path / "ckpt" / name)

    history = model.history["elbo_validation"]["elbo_validation"]
    assert callback.best_model_score is not None
    assert float(callback.best_model_score) == pytest.approx(float(history.min()), rel=1e-5)
    best_epoch = int(history.idxmin())
    assert os.path.basename(callback.best_model_path).startswith(f"epoch={best_epoch}-")

    loaded = SCVI.load(callback.best_model_path, adata=adata)
    assert loaded.is_trained_
    # The checkpoint records the training so far: its validation history ends at its epoch.
    # (It is written at the end of the training epoch, before Lightning hands that epoch's
    # training metrics to the loggers, so its elbo_train stops one epoch earlier.)
    assert list(loaded.history["elbo_validation"].index) == list(range(best_epoch + 1))
    # Without load_best_on_end the model keeps its last weights (epoch 2's).
    last = [name for name in names if name.startswith("epoch=2-")]
    assert len(last) == 1
    last_loaded = SCVI.load(str(tmp_path / "ckpt" / last[0]), adata=adata)
    torch.testing.assert_close(latent(model, adata), latent(last_loaded, adata))


def test_load_best_on_end_puts_the_best_weights_in_the_module(tmp_path) -> None:
    adata = scvi_data()
    model = new_model(adata)
    # The largest validation ELBO is the worst one: the first epoch's, not the last one's.
    callback = SaveCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="elbo_validation", mode="max", load_best_on_end=True
    )
    model.train(max_epochs=3, callbacks=[callback], check_val_every_n_epoch=1, **TRAIN_KW)

    history = model.history["elbo_validation"]["elbo_validation"]
    best_epoch = int(history.idxmax())
    assert best_epoch != 2, "the test needs a best checkpoint that is not the last epoch"
    assert os.path.basename(callback.best_model_path).startswith(f"epoch={best_epoch}-")
    best = SCVI.load(callback.best_model_path, adata=adata)
    torch.testing.assert_close(latent(model, adata), latent(best, adata))
    for name, value in best.module.state_dict().items():
        torch.testing.assert_close(model.module.state_dict()[name], value, msg=name)
    # The model is still the trained model of the whole fit.
    assert model.is_trained_ and len(history) == 3


def test_save_top_k_removes_the_checkpoints_that_drop_out(tmp_path) -> None:
    adata = scvi_data()
    model = new_model(adata)
    callback = SaveCheckpoint(dirpath=tmp_path / "ckpt", monitor="elbo_train", save_top_k=1)
    model.train(max_epochs=3, callbacks=[callback], **TRAIN_KW)

    names = _folders(tmp_path / "ckpt")
    assert names == [os.path.basename(callback.best_model_path)]
    history = model.history["elbo_train"]["elbo_train"]
    assert float(callback.best_model_score) == pytest.approx(float(history.min()), rel=1e-5)
    assert SCVI.load(callback.best_model_path, adata=adata).is_trained_


def test_save_top_k_two_keeps_the_two_best(tmp_path) -> None:
    adata = scvi_data()
    model = new_model(adata)
    callback = SaveCheckpoint(dirpath=tmp_path / "ckpt", monitor="elbo_train", save_top_k=2)
    model.train(max_epochs=3, callbacks=[callback], **TRAIN_KW)

    history = model.history["elbo_train"]["elbo_train"]
    two_best = sorted(int(epoch) for epoch in history.nsmallest(2).index)
    names = _folders(tmp_path / "ckpt")
    assert len(names) == 2
    assert sorted(int(re.match(r"epoch=(\d+)-", name).group(1)) for name in names) == two_best


def test_default_dirpath_and_filename_follow_settings_and_the_monitor() -> None:
    callback = SaveCheckpoint(monitor="elbo_train")
    assert str(callback.dirpath).startswith(str(scvi.settings.logging_dir))
    assert str(callback.dirpath).endswith("_elbo_train")
    assert callback.filename == "{epoch}-{step}-{elbo_train}"


@pytest.mark.parametrize("ignored", ["save_weights_only", "save_last"])
def test_unsupported_arguments_are_ignored_with_a_warning(ignored) -> None:
    with pytest.warns(RuntimeWarning, match=ignored):
        callback = SaveCheckpoint(monitor="elbo_train", **{ignored: True})
    assert not callback.save_weights_only and not callback.save_last


def test_monitoring_validation_without_validation_data_fails_at_setup(tmp_path) -> None:
    adata = scvi_data()
    model = new_model(adata)
    steps = []
    model.module.register_forward_pre_hook(lambda *args: steps.append(1))
    callback = SaveCheckpoint(dirpath=tmp_path / "ckpt", monitor="elbo_validation")
    with pytest.raises(ValueError, match=r"'elbo_validation'.*needs a validation set"):
        model.train(max_epochs=2, train_size=1.0, callbacks=[callback], **TRAIN_KW)
    assert steps == [] and not model.is_trained_
    assert not os.path.exists(tmp_path / "ckpt") or _folders(tmp_path / "ckpt") == []


def test_validation_monitor_with_validation_turned_off_fails_at_setup(tmp_path) -> None:
    adata = scvi_data()
    model = new_model(adata)
    callback = SaveCheckpoint(dirpath=tmp_path / "ckpt", monitor="elbo_validation")
    with pytest.raises(ValueError, match="needs a validation set"):
        model.train(max_epochs=2, callbacks=[callback], limit_val_batches=0, **TRAIN_KW)


@pytest.mark.parametrize("trainer_cls", [pl.Trainer, scvi.train.Trainer])
def test_without_a_model_it_fails_clearly(tmp_path, trainer_cls) -> None:
    adata = scvi_data()
    model = new_model(adata)
    plan = TrainingPlan(model.module)
    splitter = DataSplitter(model.adata_manager)
    trainer = trainer_cls(
        max_epochs=1,
        accelerator="cpu",
        callbacks=[SaveCheckpoint(dirpath=tmp_path / "ckpt", monitor="elbo_train")],
        enable_progress_bar=False,
        logger=False,
    )
    with pytest.raises(RuntimeError, match=r"SaveCheckpoint saves the model.*train\(callbacks"):
        trainer.fit(plan, datamodule=splitter)


class _PoisonAtEpoch(pl.Callback):
    """Make the decoder's weights NaN when epoch ``epoch`` starts: its first loss is NaN."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                for parameter in pl_module.module.decoder.parameters():
                    parameter.fill_(math.nan)


def test_check_nan_gradients_names_the_best_checkpoint_when_training_fails(tmp_path) -> None:
    adata = scvi_data()
    model = new_model(adata)
    callback = SaveCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="elbo_validation", check_nan_gradients=True
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(NonFiniteLossError):
            model.train(
                max_epochs=4,
                callbacks=[callback, _PoisonAtEpoch(2)],
                check_val_every_n_epoch=1,
                **TRAIN_KW,
            )
    assert callback.best_model_path
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    named = [m for m in messages if callback.best_model_path in m]
    assert named, messages
    assert "NonFiniteLossError" in named[0]
    # The checkpoint holds the progress of the failed fit (the model itself is put back).
    assert not model.is_trained_
    best = SCVI.load(callback.best_model_path, adata=adata)
    assert best.is_trained_
    assert all(torch.isfinite(value).all() for value in best.module.state_dict().values())


def test_check_nan_gradients_off_says_nothing(tmp_path) -> None:
    adata = scvi_data()
    model = new_model(adata)
    callback = SaveCheckpoint(dirpath=tmp_path / "ckpt", monitor="elbo_train")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(NonFiniteLossError):
            model.train(max_epochs=3, callbacks=[callback, _PoisonAtEpoch(1)], **TRAIN_KW)
    assert not [w for w in caught if "best checkpoint" in str(w.message)]


def test_enable_checkpointing_adds_a_checkpoint_of_the_monitored_metric() -> None:
    adata = scvi_data()
    model = new_model(adata)
    model.train(
        max_epochs=2, enable_checkpointing=True, checkpointing_monitor="elbo_train", **TRAIN_KW
    )
    callbacks = [c for c in model.trainer.callbacks if isinstance(c, SaveCheckpoint)]
    assert len(callbacks) == 1 and callbacks[0].monitor == "elbo_train"
    assert str(callbacks[0].dirpath).startswith(str(scvi.settings.logging_dir))
    loaded = SCVI.load(callbacks[0].best_model_path, adata=adata)
    assert loaded.is_trained_
    assert model.trainer.global_step == 2 * STEPS_PER_EPOCH


def test_checkpoints_record_the_split_and_continue_an_earlier_history(tmp_path) -> None:
    adata = scvi_data()
    model = new_model(adata)
    model.train(max_epochs=2, **TRAIN_KW)
    callback = SaveCheckpoint(dirpath=tmp_path / "ckpt", monitor="elbo_validation")
    model.train(max_epochs=1, callbacks=[callback], check_val_every_n_epoch=1, **TRAIN_KW)
    loaded = SCVI.load(callback.best_model_path, adata=adata)
    assert os.path.basename(callback.best_model_path).startswith("epoch=0-")
    # The second fit's epoch 0 is the model's third: the history goes on from the first fit.
    assert list(loaded.history["elbo_validation"].index) == [2]
    assert list(loaded.history["elbo_train"].index)[:2] == [0, 1]
    for name in ("train_indices", "validation_indices", "test_indices"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))


def test_a_pyro_model_checkpoint_loads_its_best_weights(tmp_path) -> None:
    from ..model._user_modules import TinyPyroModel

    scvi.settings.seed = 0
    adata = scvi.data.synthetic_iid(seed=0)
    TinyPyroModel.setup_anndata(adata)
    model = TinyPyroModel(adata)
    callback = SaveCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="elbo_validation", mode="max", load_best_on_end=True
    )
    model.train(max_epochs=3, callbacks=[callback], check_val_every_n_epoch=1, **TRAIN_KW)
    best = TinyPyroModel.load(callback.best_model_path, adata=adata)
    for name, value in best.module.state_dict().items():
        torch.testing.assert_close(model.module.state_dict()[name], value, msg=name)
