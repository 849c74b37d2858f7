"""Options of ``train()`` are checked at its start, naming what is wrong and what is valid."""

from __future__ import annotations

import re

import pytest
import torch

import cellvi
from cellvi.model import SCVI

from ._model_helpers import TRAIN_KW
from ._user_modules import TinyPyroModel


@pytest.fixture
def adata():
    data = cellvi.data.synthetic_iid()
    SCVI.setup_anndata(data)
    return data


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"plan_kwargs": {"lrr": 1e-3}},
            "plan_kwargs got unknown argument(s) 'lrr' (did you mean 'lr'?)",
        ),
        ({"datasplitter_kwargs": {"batchsize": 3}}, "'batchsize' (did you mean 'batch_size'?)"),
        ({"max_step": 3}, "'max_step' (did you mean 'max_steps'?)"),
        ({"early_stopping_patiense": 3}, "(did you mean 'early_stopping_patience'?)"),
    ],
    ids=["plan", "splitter", "trainer", "runner"],
)
def test_a_misspelt_option_fails_before_any_training_step(adata, options, message) -> None:
    model = SCVI(adata)
    before = {name: p.detach().clone() for name, p in model.module.named_parameters()}
    calls = []
    model.module.register_forward_pre_hook(lambda *args: calls.append(1))
    with pytest.raises(TypeError, match=re.escape(message)) as raised:
        model.train(max_epochs=1, **TRAIN_KW, **options)
    assert "Valid names:" in str(raised.value)
    assert calls == [] and not model.is_trained_
    for name, p in model.module.named_parameters():
        assert torch.equal(p, before[name])


def test_loss_keywords_reach_the_loss_and_others_are_refused(adata) -> None:
    """``plan_kwargs`` that name a parameter of ``module.loss`` are passed on, others fail."""
    model = SCVI(adata)
    with pytest.raises(TypeError, match="'kl_weigth'"):
        model.train(max_epochs=1, plan_kwargs={"kl_weigth": 0.5}, **TRAIN_KW)


def test_pyro_plan_options_are_checked_too() -> None:
    adata = cellvi.data.synthetic_iid()
    TinyPyroModel.setup_anndata(adata)
    model = TinyPyroModel(adata)
    with pytest.raises(TypeError, match=r"'optim_kwarg' \(did you mean 'optim_kwargs'\?\)"):
        model.train(max_epochs=1, plan_kwargs={"optim_kwarg": {}}, **TRAIN_KW)
    assert not model.is_trained_


@pytest.mark.parametrize("batch_size", [0, -5, 2.5, True])
def test_bad_batch_size_is_refused_naming_it(adata, batch_size) -> None:
    model = SCVI(adata)
    with pytest.raises((TypeError, ValueError), match="batch_size must be an integer >= 1"):
        model.train(max_epochs=1, batch_size=batch_size, **TRAIN_KW)
