"""A train() that fails leaves the model as it was; Ctrl+C stops training and keeps it."""

from __future__ import annotations

import signal

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

import cellvi
from cellvi.model import SCVI
from cellvi.train import NonFiniteLossError

from ._model_helpers import TRAIN_KW, train_scvi


class _PoisonAfter(pl.Callback):
    """Makes the module's loss NaN from the ``step``-th training step of a fit on."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            with torch.no_grad():
                for parameter in pl_module.module.decoder.parameters():
                    parameter.fill_(float("nan"))


def test_a_diverging_second_train_puts_the_first_fit_back():
    model, adata = train_scvi(max_epochs=2)
    weights = {k: v.clone() for k, v in model.module.state_dict().items()}
    history = {k: v.copy() for k, v in model.history_.items()}
    train_indices = model.train_indices.copy()
    torch.manual_seed(0)  # the ELBO is a Monte Carlo estimate
    elbo = model.get_elbo()
    latent = model.get_latent_representation()
    # Batch-norm statistics move on forward passes before any loss is checked: they too must
    # come back (they were NaN, with latents near 1e14, before the fix).
    with pytest.raises(NonFiniteLossError):
        model.train(max_epochs=3, callbacks=[_PoisonAfter(step=4)], **TRAIN_KW)
    for name, tensor in model.module.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    assert model.is_trained_ and not model.module.training
    assert set(model.history_) == set(history)
    for name, frame in history.items():
        pd.testing.assert_frame_equal(model.history_[name], frame)
    np.testing.assert_array_equal(model.train_indices, train_indices)
    torch.manual_seed(0)
    assert model.get_elbo() == elbo
    np.testing.assert_array_equal(model.get_latent_representation(), latent)


def test_a_failing_first_train_leaves_an_untrained_model():
    adata = cellvi.data.synthetic_iid()
    SCVI.setup_anndata(adata)
    model = SCVI(adata)
    weights = {k: v.clone() for k, v in model.module.state_dict().items()}
    with pytest.raises(NonFiniteLossError):
        model.train(max_epochs=2, callbacks=[_PoisonAfter(step=1)], **TRAIN_KW)
    assert not model.is_trained_ and model.history_ is None and model.trainer is None
    for name, tensor in model.module.state_dict().items():
        assert torch.equal(tensor, weights[name]), name


class _CtrlC(pl.Callback):
    """Sends this process SIGINT (what Ctrl+C does) at a given training step."""

    def __init__(self, step: int, times: int = 1) -> None:
        self.step, self.times = step, times

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            for _ in range(self.times):
                signal.raise_signal(signal.SIGINT)


def test_ctrl_c_stops_training_cleanly_and_keeps_what_was_learnt():
    adata = cellvi.data.synthetic_iid()
    SCVI.setup_anndata(adata)
    model = SCVI(adata)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    with pytest.warns(UserWarning, match="stopped by Ctrl\\+C at epoch 1"):
        model.train(max_epochs=50, callbacks=[_CtrlC(step=4)], **TRAIN_KW)
    # 3 training minibatches per epoch: step 4 is in epoch 1, and the fit stops right after.
    assert model.trainer.global_step == 5
    assert model.is_trained_ and model.training_state.interrupted
    assert list(model.history_["elbo_train"].index) == [0, 1]  # the partial epoch is recorded
    assert any(not torch.equal(v, before[k]) for k, v in model.module.state_dict().items())
    assert np.isfinite(model.get_latent_representation()).all()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    model.train(max_epochs=1, **TRAIN_KW)
    assert not model.training_state.interrupted


def test_a_second_ctrl_c_aborts_and_puts_the_model_back():
    model, _ = train_scvi(max_epochs=1)
    weights = {k: v.clone() for k, v in model.module.state_dict().items()}
    with pytest.raises(KeyboardInterrupt):
        model.train(max_epochs=50, callbacks=[_CtrlC(step=2, times=2)], **TRAIN_KW)
    for name, tensor in model.module.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    assert not model.training_state.interrupted


def test_the_interrupt_flag_survives_save_and_load(tmp_path):
    adata = cellvi.data.synthetic_iid()
    SCVI.setup_anndata(adata)
    model = SCVI(adata)
    with pytest.warns(UserWarning, match="Ctrl"):
        model.train(max_epochs=50, callbacks=[_CtrlC(step=1)], **TRAIN_KW)
    model.save(tmp_path / "m", save_anndata=True)
    assert SCVI.load(tmp_path / "m", accelerator="cpu").training_state.interrupted
