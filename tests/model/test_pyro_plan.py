"""``PyroTrainingPlan`` options: optimizers, losses, KL warm-up, ELBO scaling, parameter checks."""

from __future__ import annotations

import copy

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import cellvi
from cellvi.train import PyroTrainingPlan

from ._user_modules import TRAIN_KW, TinyPyroModel, TinyPyroVAE


def _model(**model_kwargs) -> TinyPyroModel:
    cellvi.settings.seed = 0
    adata = cellvi.data.synthetic_iid()
    TinyPyroModel.setup_anndata(adata)
    model = TinyPyroModel(adata, **model_kwargs)
    return model


def test_optimizer_choices():
    module = TinyPyroVAE(n_input=5)
    default = PyroTrainingPlan(module).configure_optimizers()
    assert isinstance(default, torch.optim.Adam) and default.defaults["lr"] == 1e-3
    n_params = sum(len(group["params"]) for group in default.param_groups)
    assert n_params == len(list(module.parameters()))
    from_pyro = PyroTrainingPlan(module, optim=pyro.optim.Adam({"lr": 0.01, "betas": (0.8, 0.9)}))
    adam = from_pyro.configure_optimizers()
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["betas"] == (0.8, 0.9)
    overridden = PyroTrainingPlan(
        module, optim=pyro.optim.Adam({"lr": 0.01}), optim_kwargs={"lr": 0.5}
    )
    assert overridden.configure_optimizers().defaults["lr"] == 0.5
    sgd_plan = PyroTrainingPlan(module, optim=torch.optim.SGD, optim_kwargs={"lr": 0.1})
    sgd = sgd_plan.configure_optimizers()
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["lr"] == 0.1
    with pytest.raises(TypeError, match="optim must be"):
        PyroTrainingPlan(module, optim="Adam")
    with pytest.raises(ValueError, match="clip_args"):
        clipped = pyro.optim.PyroOptim(torch.optim.Adam, {}, {"clip_norm": 1.0})
        PyroTrainingPlan(module, optim=clipped)
    with pytest.raises(ValueError, match="scale_elbo"):
        PyroTrainingPlan(module, scale_elbo=0)


def test_lr_argument_of_train_reaches_the_optimizer():
    model = _model()
    model.train(max_epochs=1, lr=0.02, check_val_every_n_epoch=1, **TRAIN_KW)
    assert model.trainer.optimizers[0].param_groups[0]["lr"] == 0.02
    assert "elbo_validation" in model.history
    model.train(max_epochs=1, train_size=1.0, check_val_every_n_epoch=1, **TRAIN_KW)
    # The second fit, without validation cells, continues the history without a validation row.
    assert list(model.history["elbo_train"].index) == [0, 1]
    assert list(model.history["elbo_validation"].index) == [0]


class _KLVAE(TinyPyroVAE):
    """Scales the latent sites by the KL weight it receives, and records it."""

    def __init__(self, n_input: int) -> None:
        super().__init__(n_input)
        self.weights_seen: list[float] = []

    def model(self, x, library, kl_weight: float = 1.0):
        if self.training:
            self.weights_seen.append(kl_weight)
        # poutine.scale refuses 0, where the warm-up starts.
        with pyro.poutine.scale(scale=max(kl_weight, 1e-3)):
            super().model(x, library)

    def guide(self, x, library, kl_weight: float = 1.0):
        with pyro.poutine.scale(scale=max(kl_weight, 1e-3)):
            super().guide(x, library)


def test_kl_weight_is_passed_when_model_and_guide_take_it():
    model = _model()
    model.module = _KLVAE(n_input=100)
    model.train(max_epochs=3, plan_kwargs={"n_epochs_kl_warmup": 2}, **TRAIN_KW)
    weights = model.module.weights_seen
    # Pyro's first call also runs the model once to guess plate nesting: take distinct values.
    # The warm-up starts at min_kl_weight=1e-6, which pyro.poutine.scale accepts.
    np.testing.assert_allclose(sorted(set(weights)), [1e-6, 0.5 + 0.5e-6, 1.0])
    np.testing.assert_allclose(
        model.history["kl_weight"]["kl_weight"].to_numpy(), [1e-6, 0.5 + 0.5e-6, 1.0]
    )

    class ModelOnly(TinyPyroVAE):
        def model(self, x, library, kl_weight: float = 1.0):
            super().model(x, library)

    with pytest.raises(TypeError, match="guide"):
        PyroTrainingPlan(ModelOnly(n_input=3))
    assert not PyroTrainingPlan(TinyPyroVAE(n_input=3)).use_kl_weight


def test_scale_elbo_scales_the_objective_not_the_logged_elbo():
    logged = []
    for scale in (1.0, 0.01):
        model = _model()
        # lr 0: both runs see the same parameters, so only the scaling could differ.
        plan = {"optim": torch.optim.SGD, "optim_kwargs": {"lr": 0.0}, "scale_elbo": scale}
        model.train(max_epochs=1, plan_kwargs=plan, **TRAIN_KW)
        logged.append(model.history["elbo_train"]["elbo_train"].iloc[0])
    np.testing.assert_allclose(logged[0], logged[1], rtol=1e-5)


@pytest.mark.parametrize(
    ("loss_fn", "register"),
    [(pyro.infer.TraceGraph_ELBO, False), (lambda: pyro.infer.RenyiELBO(alpha=0.5), True)],
)
def test_losses_without_differentiable_loss_train_through_loss_and_grads(loss_fn, register):
    model = _model(register=register)
    before = copy.deepcopy(model.module.state_dict())
    model.train(max_epochs=1, plan_kwargs={"loss_fn": loss_fn()}, **TRAIN_KW)
    assert np.isfinite(model.history["elbo_train"]["elbo_train"]).all()
    assert not torch.equal(before["decoder.0.weight"], model.module.decoder[0].weight)


def test_loss_that_needs_param_sites_says_so():
    model = _model(register=False)
    plan_kwargs = {"loss_fn": pyro.infer.RenyiELBO(alpha=0.5)}
    with pytest.raises(RuntimeError, match="pyro.module"):
        model.train(max_epochs=1, plan_kwargs=plan_kwargs, **TRAIN_KW)


def test_free_pyro_params_are_refused():
    class FreeParam(TinyPyroVAE):
        def guide(self, x, library):
            pyro.param("free_scale", torch.ones(()), constraint=dist.constraints.positive)
            super().guide(x, library)

    model = _model()
    model.module = FreeParam(n_input=100)
    with pytest.raises(RuntimeError, match="free_scale"):
        model.train(max_epochs=1, **TRAIN_KW)
    assert "free_scale" not in pyro.get_param_store()


def test_create_predictive_uses_a_private_param_store():
    pyro.get_param_store().clear()
    module = TinyPyroVAE(n_input=6, register=True)
    x = torch.poisson(torch.full((5, 6), 3.0))
    predictive = module.create_predictive(num_samples=3, return_sites=["z", "x"])
    samples = predictive(x, x.sum(1, keepdim=True))
    assert samples["z"].shape == (3, 5, 4) and samples["x"].shape == (3, 5, 6)
    assert len(pyro.get_param_store()) == 0
