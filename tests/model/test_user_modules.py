"""User-written torch and Pyro modules trained through user model classes."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import numpy as np
import pyro
import pytest
import torch

import cellvi
from cellvi import REGISTRY_KEYS
from cellvi.model.base import BaseModelClass
from cellvi.module.base import BaseModuleClass, PyroBaseModuleClass
from cellvi.train import NonFiniteLossError

from ._user_modules import TRAIN_KW, TinyModel, TinyPyroModel, TinyPyroVAE, TinyVAE


def _fit(model_cls: type[BaseModelClass], max_epochs: int = 4, **model_kwargs):
    cellvi.settings.seed = 0
    adata = cellvi.data.synthetic_iid()
    model_cls.setup_anndata(adata)
    model = model_cls(adata, **model_kwargs)
    if model_cls is TinyModel:
        # Without KL warm-up the logged (full) ELBO is the objective, so it must improve.
        model.train(
            max_epochs,
            plan_kwargs={"lr": 1e-2, "n_epochs_kl_warmup": None},
            check_val_every_n_epoch=1,
            **TRAIN_KW,
        )
    else:
        model.train(max_epochs, lr=1e-2, check_val_every_n_epoch=1, **TRAIN_KW)
    return model, adata


@pytest.fixture(scope="module")
def torch_model():
    return _fit(TinyModel)


@pytest.fixture(scope="module")
def pyro_model():
    return _fit(TinyPyroModel)


def _elbo_improves(model: BaseModelClass, split: str = "train") -> None:
    elbo = model.history[f"elbo_{split}"][f"elbo_{split}"].to_numpy()
    assert np.isfinite(elbo).all()
    assert elbo[-1] < elbo[0]


@pytest.mark.parametrize("fixture", ["torch_model", "pyro_model"])
def test_elbo_improves_and_latent_has_one_row_per_cell(fixture, request):
    model, adata = request.getfixturevalue(fixture)
    assert model.is_trained_
    _elbo_improves(model, "train")
    _elbo_improves(model, "validation")
    latent = model.get_latent_representation()
    assert latent.shape == (adata.n_obs, 4) and np.isfinite(latent).all()
    assert model.get_latent_representation(indices=np.arange(7)).shape == (7, 4)


@pytest.mark.parametrize("fixture", ["torch_model", "pyro_model"])
def test_save_load_round_trip_gives_identical_latents(fixture, request, tmp_path):
    model, adata = request.getfixturevalue(fixture)
    model.save(tmp_path / "model", save_anndata=True)
    loaded = type(model).load(tmp_path / "model", accelerator="cpu")
    assert loaded.is_trained_ and loaded.init_params_ == model.init_params_
    for name, tensor in model.module.state_dict().items():
        assert torch.equal(tensor, loaded.module.state_dict()[name]), name
    latent = model.get_latent_representation()
    np.testing.assert_array_equal(loaded.get_latent_representation(), latent)
    with_data = type(model).load(tmp_path / "model", adata=adata, accelerator="cpu")
    np.testing.assert_array_equal(with_data.get_latent_representation(), latent)


def test_load_runs_the_module_on_load_hook_first(pyro_model, tmp_path, monkeypatch):
    model, adata = pyro_model
    model.save(tmp_path / "model", save_anndata=True)
    seen = {}

    def on_load(module, state_dict, registry, example_batch):
        # Still the freshly built module: the saved weights come after the hook.
        seen["fresh"] = not torch.equal(module.log_theta, model.module.log_theta)
        seen["weights"] = torch.equal(state_dict["log_theta"], model.module.log_theta)
        seen["registry"] = registry["setup_args"] == model.registry["setup_args"]
        seen["batch"] = example_batch[REGISTRY_KEYS.X_KEY].shape[1] == adata.n_vars

    monkeypatch.setattr(TinyPyroVAE, "on_load", on_load)
    TinyPyroModel.load(tmp_path / "model", accelerator="cpu")
    assert seen == {"fresh": True, "weights": True, "registry": True, "batch": True}


def test_sample_posterior_summaries(pyro_model):
    model, adata = pyro_model
    cellvi.settings.seed = 0
    indices = np.arange(0, 300, 2)  # 150 cells: two minibatches of 128 and 22
    posterior = model.sample_posterior(num_samples=60, batch_size=128, indices=indices)
    assert set(posterior) == {"means", "stds", "q05", "q50", "q95"}
    assert set(posterior["means"]) == {"z", "offset"}  # latent sites only
    z, offset = posterior["means"]["z"], posterior["means"]["offset"]
    assert z.shape == (150, 4) and offset.shape == (adata.n_vars,)
    assert (posterior["q05"]["z"] <= posterior["q50"]["z"]).all()
    assert (posterior["q50"]["z"] <= posterior["q95"]["z"]).all()
    assert (posterior["stds"]["z"] > 0).all()
    # Cells come back in the order of ``indices``: each mean is its cell's encoder location up
    # to Monte Carlo error (z-scores of RMS 1; about 2.6 when the order is reversed).
    encoder_means = model.get_latent_representation(indices=indices)
    z_scores = (z - encoder_means) / (posterior["stds"]["z"] / np.sqrt(60))
    assert np.sqrt(np.mean(z_scores**2)) < 1.4
    # The global site is taken once, near the guide's location parameter.
    loc = model.module.offset_loc.detach().numpy()
    np.testing.assert_allclose(offset, loc, atol=0.1)


def test_sample_posterior_observed_sites_and_custom_summaries(pyro_model):
    model, adata = pyro_model
    result = model.sample_posterior(
        num_samples=5,
        return_sites=["x", "z"],
        return_observed=True,
        summary_fun={"max": lambda draws: draws.max(axis=0)},
        indices=np.arange(10),
    )
    assert list(result) == ["max"]
    assert result["max"]["x"].shape == (10, adata.n_vars)
    assert (result["max"]["x"] >= 0).all()  # posterior predictive counts
    # Draws from the likelihood, not the data: they differ from the observed counts.
    assert not np.array_equal(result["max"]["x"], np.asarray(adata.X[:10]))
    every_cell = model.sample_posterior(num_samples=2, return_sites=["z"])
    assert every_cell["means"]["z"].shape == (400, 4)


def test_sample_posterior_without_declared_plate_runs_all_cells_at_once():
    model, adata = _fit(TinyPyroModel, max_epochs=1, plate=False)
    result = model.sample_posterior(num_samples=3, return_sites=["z"], batch_size=16)
    assert result["means"]["z"].shape == (adata.n_obs, 4)


def test_two_pyro_models_do_not_share_parameters():
    store = pyro.get_param_store()
    store.clear()
    pyro.param("user_sentinel", torch.ones(2))
    first, _ = _fit(TinyPyroModel, max_epochs=1, register=True)
    first_state = copy.deepcopy(first.module.state_dict())
    second, _ = _fit(TinyPyroModel, max_epochs=2, register=True)
    # Same pyro.module name, yet each model trained and kept its own tensors.
    for name, tensor in first.module.state_dict().items():
        assert torch.equal(tensor, first_state[name]), name
    assert not torch.equal(first.module.decoder[0].weight, second.module.decoder[0].weight)
    assert list(store.keys()) == ["user_sentinel"]  # the user's global store is untouched
    store.clear()


def _without(base: type, cls: type, method: str) -> type:
    """A user class like ``cls``, written directly on ``base``, that forgot ``method``."""
    # Class machinery (__dict__, ABC bookkeeping) is rebuilt by type(); copy the user's code.
    machinery = {"__dict__", "__weakref__", "__abstractmethods__", "_abc_impl"}
    kept = {
        name: value
        for name, value in vars(cls).items()
        if name != method and name not in machinery
    }
    return type(f"No_{method}", (base,), kept)


@pytest.mark.parametrize(
    ("base", "cls", "method"),
    [
        (BaseModuleClass, TinyVAE, "loss"),
        (BaseModuleClass, TinyVAE, "generative"),
        (PyroBaseModuleClass, TinyPyroVAE, "guide"),
        (PyroBaseModuleClass, TinyPyroVAE, "_get_fn_args_from_batch"),
    ],
)
def test_forgetting_a_method_is_a_type_error_naming_it(base, cls, method):
    with pytest.raises(TypeError, match=method):
        _without(base, cls, method)(n_input=3)


class _PoisonAt(pl.Callback):
    """Snapshots the weights before each training batch and poisons the loss at ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.state = copy.deepcopy(pl_module.module.state_dict())
        pl_module.module.poisoned = trainer.global_step == self.step


@pytest.mark.parametrize(
    ("model_cls", "term"),
    [(TinyModel, "reconstruction_loss['reconstruction_loss']"), (TinyPyroModel, "elbo")],
)
def test_non_finite_loss_stops_training_before_the_update(model_cls, term):
    cellvi.settings.seed = 0
    adata = cellvi.data.synthetic_iid()
    model_cls.setup_anndata(adata)
    model = model_cls(adata)
    initial = copy.deepcopy(model.module.state_dict())
    poison = _PoisonAt(step=5)  # 3 training minibatches per epoch: step 5 is in epoch 1
    with pytest.raises(NonFiniteLossError, match=r"global step 5 \(epoch 1\)") as info:
        model.train(max_epochs=3, callbacks=[poison], **TRAIN_KW)
    assert (info.value.step, info.value.epoch, info.value.terms) == (5, 1, [term])
    assert term in str(info.value)
    # The model is as before train(): not the weights of the step before the failure.
    state = model.module.state_dict()
    assert any(not torch.equal(poison.state[name], initial[name]) for name in state)
    for name, tensor in state.items():
        assert torch.equal(tensor, initial[name]), name
    assert not model.is_trained_ and model.history_ is None
