"""Posterior queries answer from the module in eval mode and never change the module."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from cellvi.model import SCVI

from ._model_helpers import train_scvi

QUERIES: dict[str, Callable[[SCVI], object]] = {
    "get_elbo": lambda model: model.get_elbo(return_mean=False),
    "get_marginal_ll": lambda model: model.get_marginal_ll(n_mc_samples=5, return_mean=False),
    "get_reconstruction_error": lambda model: model.get_reconstruction_error(return_mean=False)[
        "reconstruction_loss"
    ],
    "get_latent_representation": lambda model: model.get_latent_representation(),
}


@pytest.fixture(scope="module")
def model() -> SCVI:
    """An SCVI with batch norm and dropout (the defaults), trained briefly."""
    trained, _ = train_scvi(max_epochs=2)
    assert any(isinstance(layer, torch.nn.Dropout) for layer in trained.module.modules())
    return trained


def _batch_norm_state(model: SCVI) -> dict[str, torch.Tensor]:
    return {
        name: value.clone()
        for name, value in model.module.state_dict().items()
        if "running_" in name or "num_batches_tracked" in name
    }


def _seeded(query: Callable[[SCVI], object], model: SCVI) -> np.ndarray:
    torch.manual_seed(0)
    return np.asarray(query(model))


@pytest.mark.parametrize("name", list(QUERIES))
def test_query_from_a_module_in_train_mode_equals_eval_mode_and_leaves_it(model, name):
    query = QUERIES[name]
    model.module.eval()
    expected = _seeded(query, model)
    model.module.train()
    try:
        running_stats = _batch_norm_state(model)
        assert running_stats, "the module under test must have batch norm"
        answer = _seeded(query, model)
        assert model.module.training, "the query must give the module its mode back"
        after = _batch_norm_state(model)
    finally:
        model.module.eval()
    np.testing.assert_allclose(answer, expected, rtol=1e-6)
    for stat, value in running_stats.items():
        torch.testing.assert_close(after[stat], value, rtol=0, atol=0, msg=stat)
