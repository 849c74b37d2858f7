"""``plan_config`` / ``trainer_config``: configurations under the explicit keyword arguments."""

from __future__ import annotations

import dataclasses
import re
from types import MappingProxyType

import pytest

import cellvi
from cellvi.train import (
    PyroTrainingPlanConfig,
    TrainerConfig,
    TrainingPlan,
    TrainingPlanConfig,
    merge_kwargs,
)

from ._fit_helpers import TRAIN_KW, new_model, scvi_data


def _plan(model) -> TrainingPlan:
    return model.trainer.lightning_module


# merge_kwargs ----------------------------------------------------------------------------------


def test_merge_kwargs_overrides_win_and_loss_kwargs_are_flattened() -> None:
    config = TrainingPlanConfig(lr=0.5, weight_decay=0.25, loss_kwargs={"kl_weight": 0.3})
    merged = merge_kwargs(config, {"lr": 0.01, "eps": 0.2}, name="plan")
    assert merged["lr"] == 0.01 and merged["eps"] == 0.2
    assert merged["weight_decay"] == 0.25 and merged["kl_weight"] == 0.3
    assert "loss_kwargs" not in merged
    # Every other argument of the plan is there with the plan's own default.
    assert merged["n_epochs_kl_warmup"] == 400 and merged["optimizer"] == "Adam"


def test_merge_kwargs_takes_mappings_and_none() -> None:
    assert merge_kwargs(MappingProxyType({"lr": 0.2}), None, name="plan") == {"lr": 0.2}
    assert merge_kwargs(None, {"lr": 0.3}, name="plan") == {"lr": 0.3}
    assert merge_kwargs(None, None, name="plan") == {}


def test_merge_kwargs_leaves_its_inputs_alone() -> None:
    config, overrides = {"lr": 0.2}, {"lr": 0.3}
    merge_kwargs(config, overrides, name="plan")["lr"] = 9
    assert config == {"lr": 0.2} and overrides == {"lr": 0.3}


def test_merge_kwargs_refuses_what_is_no_config() -> None:
    class ListConfig:
        def to_kwargs(self):
            return ["lr", 0.1]

    with pytest.raises(TypeError, match=r"plan_config\.to_kwargs\(\) must return a dict"):
        merge_kwargs(ListConfig(), None, name="plan")
    with pytest.raises(TypeError, match="trainer_config must be a mapping or a config"):
        merge_kwargs(42, None, name="trainer")
    with pytest.raises(TypeError, match="plan must be a mapping or a config"):
        merge_kwargs(None, ["lr"], name="plan")


def test_trainer_config_extra_kwargs_are_flattened() -> None:
    config = TrainerConfig(check_val_every_n_epoch=2, extra_kwargs={"max_steps": 7})
    merged = merge_kwargs(config, {"check_val_every_n_epoch": 5}, name="trainer")
    assert merged["check_val_every_n_epoch"] == 5 and merged["max_steps"] == 7
    assert "extra_kwargs" not in merged


def test_configs_mirror_the_signatures_of_what_they_configure() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(TrainingPlanConfig)}
    assert fields["lr"] == 1e-3 and fields["n_epochs_kl_warmup"] == 400
    assert fields["on_step"] is False and fields["on_epoch"] is True
    assert "loss_kwargs" in fields and "module" not in fields
    trainer_fields = {f.name for f in dataclasses.fields(TrainerConfig)}
    assert {"early_stopping_patience", "learning_rate_monitor", "extra_kwargs"} <= trainer_fields
    pyro_fields = {f.name for f in dataclasses.fields(PyroTrainingPlanConfig)}
    assert {"loss_fn", "optim", "optim_kwargs"} <= pyro_fields


def test_a_field_repeated_in_the_kwargs_field_is_refused() -> None:
    with pytest.raises(
        TypeError, match=re.escape("TrainingPlanConfig.loss_kwargs repeats ['lr']")
    ):
        TrainingPlanConfig(loss_kwargs={"lr": 0.1}).to_kwargs()
    with pytest.raises(TypeError, match="extra_kwargs repeats"):
        TrainerConfig(extra_kwargs={"early_stopping": True}).to_kwargs()


def test_an_unknown_config_field_fails_at_construction() -> None:
    with pytest.raises(TypeError, match="lrr"):
        TrainingPlanConfig(lrr=0.1)
    with pytest.raises(TypeError, match="max_epoch"):
        TrainerConfig(max_epoch=3)


def test_config_defaults_are_not_shared_between_instances() -> None:
    first, second = TrainingPlanConfig(), TrainingPlanConfig()
    first.loss_kwargs["kl_weight"] = 0.5
    assert second.loss_kwargs == {}


# Through train() -------------------------------------------------------------------------------


def test_plan_config_reaches_the_plan_under_plan_kwargs() -> None:
    model = new_model(scvi_data())
    config = TrainingPlanConfig(lr=0.5, weight_decay=0.125, n_epochs_kl_warmup=7)
    model.train(max_epochs=1, plan_config=config, plan_kwargs={"lr": 2e-3}, **TRAIN_KW)
    plan = _plan(model)
    assert plan.lr == 2e-3 and plan.weight_decay == 0.125 and plan.n_epochs_kl_warmup == 7
    assert model.trainer.optimizers[0].param_groups[0]["lr"] == 2e-3


def test_plan_config_as_a_mapping_and_lr_of_train_win() -> None:
    model = new_model(scvi_data())
    model.train(max_epochs=1, lr=4e-3, plan_config={"lr": 0.5, "max_kl_weight": 0.5}, **TRAIN_KW)
    plan = _plan(model)
    assert plan.lr == 4e-3 and plan.max_kl_weight == 0.5


def test_bad_plan_config_keys_fail_clearly_before_training() -> None:
    model = new_model(scvi_data())
    with pytest.raises(TypeError, match=r"'lrr' \(did you mean 'lr'\?\)"):
        model.train(max_epochs=1, plan_config={"lrr": 0.1}, **TRAIN_KW)
    with pytest.raises(TypeError, match="'kl_weigth'"):
        config = TrainingPlanConfig(loss_kwargs={"kl_weigth": 0.1})
        model.train(max_epochs=1, plan_config=config, **TRAIN_KW)
    with pytest.raises(TypeError, match="plan_config must be a mapping or a config"):
        model.train(max_epochs=1, plan_config=["lr"], **TRAIN_KW)
    assert not model.is_trained_


def test_trainer_config_reaches_the_trainer_under_trainer_kwargs() -> None:
    model = new_model(scvi_data())
    config = TrainerConfig(
        check_val_every_n_epoch=1,
        log_every_n_steps=1,
        enable_progress_bar=False,
        extra_kwargs={"max_steps": 4},
    )
    model.train(max_epochs=3, trainer_config=config, log_every_n_steps=2, accelerator="cpu")
    assert model.trainer.log_every_n_steps == 2  # the keyword wins
    assert model.trainer.max_steps == 4 and model.trainer.global_step == 4
    assert "elbo_validation" in model.history


def test_trainer_config_cannot_change_epochs_or_device() -> None:
    model = new_model(scvi_data())
    config = TrainerConfig(max_epochs=50, accelerator="gpu", enable_progress_bar=False)
    model.train(max_epochs=1, trainer_config=config, accelerator="cpu")
    assert model.trainer.max_epochs == 1
    assert model.trainer.strategy.root_device.type == "cpu"


def test_bad_trainer_config_keys_fail_clearly_before_training() -> None:
    model = new_model(scvi_data())
    with pytest.raises(TypeError, match=r"'max_step' \(did you mean 'max_steps'\?\)"):
        model.train(max_epochs=1, trainer_config={"max_step": 3}, **TRAIN_KW)
    with pytest.raises(TypeError, match="'early_stoping'"):
        model.train(
            max_epochs=1,
            trainer_config=TrainerConfig(extra_kwargs={"early_stoping": True}),
            **TRAIN_KW,
        )
    assert not model.is_trained_


def test_a_pyro_plan_config_under_lr_and_plan_kwargs() -> None:
    from ..model._user_modules import TinyPyroModel

    adata = cellvi.data.synthetic_iid(seed=0)
    TinyPyroModel.setup_anndata(adata)
    model = TinyPyroModel(adata)
    config = PyroTrainingPlanConfig(n_epochs_kl_warmup=None, optim_kwargs={"lr": 0.005})
    model.train(max_epochs=1, plan_config=config, **TRAIN_KW)
    assert model.trainer.optimizers[0].param_groups[0]["lr"] == 0.005
    assert _plan(model).n_epochs_kl_warmup is None
    model.train(max_epochs=1, plan_config=config, lr=0.02, **TRAIN_KW)
    assert model.trainer.optimizers[0].param_groups[0]["lr"] == 0.02
    model.train(
        max_epochs=1, plan_config=config, plan_kwargs={"optim_kwargs": {"lr": 0.03}}, **TRAIN_KW
    )
    assert model.trainer.optimizers[0].param_groups[0]["lr"] == 0.03
