"""Trainer options of ``train()``: early stopping, resuming, validation, logging, history."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor

from cellvi.dataloaders import DataSplitter
from cellvi.train import HistoryLogger, LoudEarlyStopping, Trainer, TrainingPlan

from ._fit_helpers import STEPS_PER_EPOCH, TRAIN_KW, new_model, scvi_data

# Early stopping --------------------------------------------------------------------------------


def _early_stopping_fit(**kwargs):
    model = new_model(scvi_data())
    model.train(max_epochs=8, early_stopping=True, **TRAIN_KW, **kwargs)
    return model


def _n_epochs(model) -> int:
    return len(model.history["elbo_train"])


def test_early_stopping_stops_after_patience_epochs_without_improvement(capsys) -> None:
    # With a huge min_delta no epoch after the first counts as an improvement.
    model = _early_stopping_fit(
        early_stopping_monitor="elbo_train",
        early_stopping_patience=2,
        early_stopping_min_delta=1e9,
    )
    assert _n_epochs(model) == 3
    stopper = [c for c in model.trainer.callbacks if isinstance(c, LoudEarlyStopping)]
    assert len(stopper) == 1
    assert stopper[0].patience == 2 and stopper[0].monitor == "elbo_train"
    assert stopper[0].min_delta == pytest.approx(-1e9)  # Lightning's sign for mode="min"
    # The reason is printed once the fit is over.
    assert stopper[0].early_stopping_reason is not None
    assert "elbo_train" in stopper[0].early_stopping_reason
    assert stopper[0].early_stopping_reason in capsys.readouterr().out


def test_no_early_stop_before_the_warmup_epochs() -> None:
    model = _early_stopping_fit(
        early_stopping_monitor="elbo_train",
        early_stopping_patience=1,
        early_stopping_min_delta=1e9,
        early_stopping_warmup_epochs=4,
    )
    # Epochs 0-3 are not monitored; epoch 4 sets the best value and epoch 5 stops.
    assert _n_epochs(model) == 6


def test_min_delta_zero_keeps_improving_epochs() -> None:
    # The training ELBO of a fresh model falls every epoch: nothing to stop for.
    model = _early_stopping_fit(early_stopping_monitor="elbo_train", early_stopping_patience=1)
    elbo = model.history["elbo_train"]["elbo_train"].to_numpy()
    assert (elbo[1:] < elbo[:-1]).all(), elbo
    assert _n_epochs(model) == 8


def test_early_stopping_on_the_validation_elbo_validates_every_epoch() -> None:
    model = new_model(scvi_data())
    model.train(max_epochs=2, early_stopping=True, **TRAIN_KW)
    assert list(model.history["elbo_validation"].index) == [0, 1]


def test_early_stopping_on_validation_without_validation_cells_fails_at_setup() -> None:
    model = new_model(scvi_data())
    with pytest.raises(ValueError, match=r"'elbo_validation'.*needs a validation set"):
        model.train(max_epochs=2, early_stopping=True, train_size=1.0, **TRAIN_KW)
    assert not model.is_trained_


def test_loud_early_stopping_as_a_callback() -> None:
    model = new_model(scvi_data())
    stopper = LoudEarlyStopping(monitor="elbo_train", patience=1, min_delta=1e9, warmup_epochs=2)
    model.train(max_epochs=8, callbacks=[stopper], **TRAIN_KW)
    assert _n_epochs(model) == 4
    assert stopper.early_stopping_reason is not None


def test_loud_early_stopping_refuses_a_negative_warmup() -> None:
    with pytest.raises(ValueError, match="warmup_epochs"):
        LoudEarlyStopping(monitor="elbo_train", warmup_epochs=-1)


# Resuming from a Lightning checkpoint ----------------------------------------------------------


class _WeightsAtStart(pl.Callback):
    """Record the module's weights and the counters when the fit starts."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.weights = {k: v.detach().clone() for k, v in pl_module.module.state_dict().items()}
        self.epoch = trainer.current_epoch
        self.step = trainer.global_step


class _CountSteps(pl.Callback):
    def __init__(self) -> None:
        self.steps = 0

    def on_train_batch_end(self, *args) -> None:
        self.steps += 1


def test_ckpt_path_resumes_weights_and_counters(tmp_path) -> None:
    adata = scvi_data()
    first = new_model(adata)
    first.train(max_epochs=2, **TRAIN_KW)
    path = str(tmp_path / "fit.ckpt")
    first.trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)
    assert saved["epoch"] == 2 and saved["global_step"] == 2 * STEPS_PER_EPOCH

    resumed = new_model(adata, seed=1)
    at_start, counter = _WeightsAtStart(), _CountSteps()
    resumed.train(max_epochs=4, ckpt_path=path, callbacks=[at_start, counter], **TRAIN_KW)
    # It starts where the checkpoint ended, with its weights, and trains the epochs left.
    assert (at_start.epoch, at_start.step) == (2, 2 * STEPS_PER_EPOCH)
    for name, value in first.module.state_dict().items():
        torch.testing.assert_close(at_start.weights[name], value.cpu(), msg=name)
    assert counter.steps == 2 * STEPS_PER_EPOCH
    assert resumed.trainer.global_step == 4 * STEPS_PER_EPOCH
    assert resumed.trainer.current_epoch == 4
    assert list(resumed.history["elbo_train"].index) == [2, 3]
    assert resumed.is_trained_


def test_ckpt_path_of_a_model_checkpoint_callback(tmp_path) -> None:
    adata = scvi_data()
    model = new_model(adata)
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path, monitor="elbo_train", save_last=True
    )
    model.train(max_epochs=1, callbacks=[checkpoint], enable_checkpointing=True, **TRAIN_KW)
    assert checkpoint.last_model_path.endswith("last.ckpt")
    counter = _CountSteps()
    model.train(
        max_epochs=3, ckpt_path=checkpoint.last_model_path, callbacks=[counter], **TRAIN_KW
    )
    assert counter.steps == 2 * STEPS_PER_EPOCH
    assert model.trainer.global_step == 3 * STEPS_PER_EPOCH
    # The history goes on from the first fit.
    assert list(model.history["elbo_train"].index) == [0, 1, 2]


def test_ckpt_path_in_a_trainer_config(tmp_path) -> None:
    adata = scvi_data()
    first = new_model(adata)
    first.train(max_epochs=1, **TRAIN_KW)
    path = str(tmp_path / "fit.ckpt")
    first.trainer.save_checkpoint(path)
    resumed = new_model(adata)
    resumed.train(max_epochs=2, trainer_config={"ckpt_path": path}, **TRAIN_KW)
    assert resumed.trainer.global_step == 2 * STEPS_PER_EPOCH


# Validation, logging and history ---------------------------------------------------------------


def test_no_validation_unless_asked() -> None:
    model = new_model(scvi_data())
    model.train(max_epochs=2, **TRAIN_KW)
    assert "elbo_train" in model.history
    assert not [name for name in model.history if "validation" in name]


@pytest.mark.parametrize(("every", "epochs"), [(1, [0, 1, 2, 3]), (2, [1, 3])])
def test_check_val_every_n_epoch(every, epochs) -> None:
    model = new_model(scvi_data())
    model.train(max_epochs=4, check_val_every_n_epoch=every, **TRAIN_KW)
    assert list(model.history["elbo_validation"].index) == epochs
    assert list(model.history["validation_loss"].index) == epochs


def test_learning_rate_monitor_logs_the_learning_rate() -> None:
    model = new_model(scvi_data())
    model.train(max_epochs=2, learning_rate_monitor=True, plan_kwargs={"lr": 3e-3}, **TRAIN_KW)
    assert any(isinstance(c, LearningRateMonitor) for c in model.trainer.callbacks)
    lr_names = [name for name in model.history if name.startswith("lr")]
    assert lr_names, list(model.history)
    values = model.history[lr_names[0]][lr_names[0]]
    assert len(values) >= 1 and values.to_numpy() == pytest.approx(3e-3)
    # It also turns validation on, as in scvi-tools.
    assert "elbo_validation" in model.history


def test_no_learning_rate_in_the_history_by_default() -> None:
    model = new_model(scvi_data())
    model.train(max_epochs=1, **TRAIN_KW)
    assert not [name for name in model.history if name.startswith("lr")]


@pytest.mark.parametrize(("every", "n_logged"), [(1, 9), (3, 3)])
def test_log_every_n_steps_thins_per_step_metrics(every, n_logged) -> None:
    model = new_model(scvi_data())
    model.train(max_epochs=3, log_every_n_steps=every, plan_kwargs={"on_step": True}, **TRAIN_KW)
    per_step = model.history["train_loss_step"]
    assert per_step.index.name == "step"
    assert len(per_step) == n_logged
    # Epoch metrics are not thinned.
    assert list(model.history["elbo_train_epoch"].index) == [0, 1, 2]


def test_a_second_train_appends_to_the_history() -> None:
    model = new_model(scvi_data())
    model.train(max_epochs=2, **TRAIN_KW)
    first = model.history["elbo_train"]["elbo_train"].copy()
    model.train(max_epochs=2, check_val_every_n_epoch=1, **TRAIN_KW)
    elbo = model.history["elbo_train"]["elbo_train"]
    assert list(elbo.index) == [0, 1, 2, 3]
    assert elbo.iloc[:2].tolist() == first.tolist()
    # Validation, asked for the second fit only, is indexed by its epochs.
    assert list(model.history["elbo_validation"].index) == [2, 3]


def test_train_plan_logging_names_default() -> None:
    model = new_model(scvi_data())
    model.train(max_epochs=1, check_val_every_n_epoch=1, **TRAIN_KW)
    assert {"train_loss", "elbo_train", "elbo_validation", "validation_loss"} <= set(model.history)
    assert not [name for name in model.history if name.endswith(("_step", "_epoch"))]


def test_on_step_and_on_epoch_name_metrics_as_lightning() -> None:
    model = new_model(scvi_data())
    model.train(
        max_epochs=2,
        check_val_every_n_epoch=1,
        log_every_n_steps=1,
        plan_kwargs={"on_step": True, "on_epoch": True},
        **TRAIN_KW,
    )
    names = set(model.history)
    assert {"train_loss_step", "train_loss_epoch", "elbo_train_step", "elbo_train_epoch"} <= names
    assert {"elbo_validation_epoch", "validation_loss_epoch"} <= names
    assert "elbo_train" not in names and "train_loss" not in names
    assert list(model.history["elbo_train_epoch"].index) == [0, 1]
    assert model.history["train_loss_step"].index.name == "step"
    assert list(model.history["train_loss_step"].index) == list(range(2 * STEPS_PER_EPOCH))


def test_on_step_only_logs_training_steps_without_suffix() -> None:
    model = new_model(scvi_data())
    model.train(
        max_epochs=1,
        log_every_n_steps=1,
        plan_kwargs={"on_step": True, "on_epoch": False},
        **TRAIN_KW,
    )
    assert model.history["elbo_train"].index.name == "step"
    assert len(model.history["elbo_train"]) == STEPS_PER_EPOCH
    assert not [name for name in model.history if name.endswith(("_step", "_epoch"))]


def test_logging_nothing_is_refused() -> None:
    model = new_model(scvi_data())
    with pytest.raises(ValueError, match="would log no"):
        model.train(max_epochs=1, plan_kwargs={"on_step": False, "on_epoch": False}, **TRAIN_KW)


# The Trainer on its own ------------------------------------------------------------------------


def test_trainer_defaults_as_scvi_tools() -> None:
    trainer = Trainer(accelerator="cpu", enable_progress_bar=False)
    assert trainer.max_epochs == 400
    assert trainer.num_sanity_val_steps == 0
    assert trainer.log_every_n_steps == 10
    assert trainer.check_val_every_n_epoch > 10**6  # no validation unless asked
    assert isinstance(trainer.logger, HistoryLogger)
    assert trainer.checkpoint_callback is None
    assert not any(isinstance(c, LoudEarlyStopping) for c in trainer.callbacks)


def test_trainer_early_stopping_options() -> None:
    trainer = Trainer(
        accelerator="cpu",
        enable_progress_bar=False,
        early_stopping=True,
        early_stopping_monitor="elbo_train",
        early_stopping_patience=3,
        early_stopping_min_delta=0.5,
        early_stopping_warmup_epochs=2,
        early_stopping_mode="max",
        learning_rate_monitor=True,
    )
    (stopper,) = [c for c in trainer.callbacks if isinstance(c, LoudEarlyStopping)]
    assert stopper.monitor == "elbo_train" and stopper.patience == 3
    assert stopper.warmup_epochs == 2 and stopper.mode == "max"
    assert stopper.min_delta == pytest.approx(0.5)
    assert any(isinstance(c, LearningRateMonitor) for c in trainer.callbacks)
    assert trainer.check_val_every_n_epoch == 1


def test_trainer_check_val_every_n_epoch_given_wins_over_early_stopping() -> None:
    trainer = Trainer(
        accelerator="cpu",
        enable_progress_bar=False,
        early_stopping=True,
        check_val_every_n_epoch=3,
    )
    assert trainer.check_val_every_n_epoch == 3


def test_trainer_fits_a_training_plan_on_a_data_splitter() -> None:
    model = new_model(scvi_data())
    plan = TrainingPlan(model.module)
    trainer = Trainer(
        max_epochs=2,
        accelerator="cpu",
        enable_progress_bar=False,
        check_val_every_n_epoch=1,
        early_stopping=True,
        early_stopping_patience=5,
    )
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    trainer.fit(plan, datamodule=DataSplitter(model.adata_manager))
    assert trainer.current_epoch == 2 and trainer.global_step == 2 * STEPS_PER_EPOCH
    history = trainer.logger.history
    assert list(history["elbo_train"].index) == [0, 1]
    assert list(history["elbo_validation"].index) == [0, 1]
    changed = [k for k, v in model.module.state_dict().items() if not torch.equal(v, before[k])]
    assert changed


def test_an_early_stopping_callback_turns_validation_on() -> None:
    stopper = pl.callbacks.EarlyStopping(monitor="elbo_validation")
    trainer = Trainer(accelerator="cpu", enable_progress_bar=False, callbacks=[stopper])
    assert trainer.check_val_every_n_epoch == 1
    plain = Trainer(accelerator="cpu", enable_progress_bar=False, callbacks=[_CountSteps()])
    assert plain.check_val_every_n_epoch > 10**6


def test_fit_without_a_validation_loader_does_not_warn_about_it(recwarn) -> None:
    model = new_model(scvi_data())
    trainer = Trainer(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    loader = DataSplitter(model.adata_manager, train_size=1.0)
    loader.setup("fit")
    trainer.fit(TrainingPlan(model.module), train_dataloaders=loader.train_dataloader())
    assert trainer.global_step == 4  # 400 cells in minibatches of 128
    assert not [w for w in recwarn if "val_dataloader" in str(w.message)]


def test_reduce_lr_on_plateau_monitors_the_learning_rate_and_validates() -> None:
    model = new_model(scvi_data())
    model.train(max_epochs=2, plan_kwargs={"reduce_lr_on_plateau": True}, **TRAIN_KW)
    assert any(isinstance(c, LearningRateMonitor) for c in model.trainer.callbacks)
    assert [name for name in model.history if name.startswith("lr")]
    assert list(model.history["elbo_validation"].index) == [0, 1]


def test_ckpt_path_of_a_model_folder_is_refused_clearly(tmp_path) -> None:
    adata = scvi_data()
    model = new_model(adata)
    model.save(tmp_path / "saved")
    fresh = new_model(adata)
    with pytest.raises(ValueError, match=r"is a folder.*Lightning \.ckpt.*Model\.load"):
        fresh.train(max_epochs=1, ckpt_path=str(tmp_path / "saved"), **TRAIN_KW)
    assert not fresh.is_trained_
