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
from cellvi.model.base import BaseModelClass, PyroSviTrainMixin
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
    # scvi-tools' summary names: cell2location and others read these keys.
    assert set(posterior) == {
        "post_sample_means",
        "post_sample_stds",
        "post_sample_q05",
        "post_sample_q95",
    }
    means, stds = posterior["post_sample_means"], posterior["post_sample_stds"]
    assert set(means) == {"z", "offset"}  # latent sites only
    z, offset = means["z"], means["offset"]
    assert z.shape == (150, 4) and offset.shape == (adata.n_vars,)
    assert (posterior["post_sample_q05"]["z"] <= z).all()
    assert (z <= posterior["post_sample_q95"]["z"]).all()
    assert (stds["z"] > 0).all()
    # Cells come back in the order of ``indices``: each mean is its cell's encoder location up
    # to Monte Carlo error (z-scores of RMS 1; about 2.6 when the order is reversed).
    encoder_means = model.get_latent_representation(indices=indices)
    z_scores = (z - encoder_means) / (stds["z"] / np.sqrt(60))
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
        summary_fun={"max": np.max},
        indices=np.arange(10),
    )
    assert list(result) == ["max"]
    assert result["max"]["x"].shape == (10, adata.n_vars)
    assert (result["max"]["x"] >= 0).all()  # posterior predictive counts
    # Draws from the likelihood, not the data: they differ from the observed counts.
    assert not np.array_equal(result["max"]["x"], np.asarray(adata.X[:10]))
    every_cell = model.sample_posterior(num_samples=2, return_sites=["z"])
    assert every_cell["post_sample_means"]["z"].shape == (400, 4)


def test_sample_posterior_without_declared_plate_runs_all_cells_at_once():
    model, adata = _fit(TinyPyroModel, max_epochs=1, plate=False)
    result = model.sample_posterior(num_samples=3, return_sites=["z"], batch_size=16)
    assert result["post_sample_means"]["z"].shape == (adata.n_obs, 4)


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
    ],
)
def test_forgetting_a_method_is_a_type_error_naming_it(base, cls, method):
    with pytest.raises(TypeError, match=method):
        _without(base, cls, method)(n_input=3)


class _PyroRegression(PyroBaseModuleClass):
    """A Pyro module that may set ``_get_fn_args_from_batch`` in ``__init__``, as many do."""

    def __init__(self, assign: bool) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(3))
        if assign:
            self._get_fn_args_from_batch = lambda tensors: ((tensors["X"],), {})

    def model(self, x):
        pyro.sample("obs", pyro.distributions.Normal(x @ self.weight, 1.0).to_event(1))

    def guide(self, x):
        pass


def test_get_fn_args_from_batch_may_be_set_in_init_but_not_forgotten():
    module = _PyroRegression(assign=True)
    args, kwargs = module.get_fn_args({"X": torch.ones(2, 3)})
    assert args[0].shape == (2, 3) and kwargs == {}
    with pytest.raises(TypeError, match="_get_fn_args_from_batch"):
        _PyroRegression(assign=False)


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


def test_sample_posterior_takes_scvi_tools_arguments(pyro_model):
    model, adata = pyro_model
    indices = np.arange(40)
    cellvi.settings.seed = 0
    result = model.sample_posterior(
        num_samples=7,
        indices=indices,
        batch_size=16,
        return_samples=True,
        exclude_vars=["offset"],
        summary_frequency=2,
    )
    assert set(result["posterior_samples"]) == {"z"}
    draws = result["posterior_samples"]["z"]
    assert draws.shape == (7, 40, 4)  # every draw of every cell, draws first
    np.testing.assert_allclose(result["post_sample_means"]["z"], draws.mean(0), rtol=1e-5)
    loader = model._make_data_loader(indices=indices, batch_size=16)
    from_loader = model.sample_posterior(input_dl=loader, num_samples=3, return_sites=["z"])
    assert from_loader["post_sample_means"]["z"].shape == (40, 4)
    custom = model.sample_posterior(
        num_samples=3, indices=indices, summary_fun={"median": np.median}, accelerator="cpu"
    )
    assert custom["median"]["z"].shape == (40, 4)
    with pytest.raises(TypeError, match="unknown arguments"):
        model.sample_posterior(num_samples=2, indices=indices, misspelt=True)
    cellvi.settings.seed = None


class _SubsampledPyroModel(pyro.nn.PyroModule):
    """A model whose plate is sized by ``n_obs``, which training sets (as scvi-tools plans do)."""

    def __init__(self, n_input: int) -> None:
        super().__init__()
        self.n_obs = None
        self.register_buffer("zero", torch.tensor(0.0))
        self.weight = torch.nn.Parameter(torch.zeros(n_input))

    def forward(self, x, ind_x):
        # The prior mean is the buffer itself, so an AutoNormal started at the prior mean
        # holds a tensor that shares the buffer's memory.
        sigma = pyro.sample("sigma", pyro.distributions.Normal(self.zero, 1.0))
        with pyro.plate("cells", size=self.n_obs, subsample=ind_x):
            mean = (x.log1p() * self.weight).sum(-1)
            pyro.sample("obs", pyro.distributions.Normal(mean, sigma.exp()), obs=x.sum(-1).log1p())


class _SubsampledRegression(PyroBaseModuleClass):
    def __init__(self, n_input: int) -> None:
        super().__init__()
        self._model = _SubsampledPyroModel(n_input)
        self._guide = pyro.infer.autoguide.AutoNormal(
            self._model, init_loc_fn=pyro.infer.autoguide.init_to_mean
        )

    @staticmethod
    def _get_fn_args_from_batch(tensors):
        return (tensors["X"], tensors["ind_x"].long().ravel()), {}

    @property
    def model(self):
        return self._model

    @property
    def guide(self):
        return self._guide


class _SubsampledModel(PyroSviTrainMixin, BaseModelClass):
    def __init__(self, adata) -> None:
        super().__init__(adata)
        self.module = _SubsampledRegression(self.summary_stats["n_vars"])
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def setup_anndata(cls, adata, **kwargs) -> None:
        adata.obs["ind_x"] = np.arange(adata.n_obs)
        fields = [
            cellvi.data.fields.LayerField("X", None, is_count_data=True),
            cellvi.data.fields.NumericalObsField("ind_x", "ind_x"),
        ]
        manager = cellvi.data.AnnDataManager(fields=fields)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)


def test_a_subsampled_plate_with_a_shared_buffer_saves_and_loads(tmp_path):
    cellvi.settings.seed = 0
    adata = cellvi.data.synthetic_iid(seed=0)
    _SubsampledModel.setup_anndata(adata)
    model = _SubsampledModel(adata)
    model.train(max_epochs=2, batch_size=128, lr=1e-2, **TRAIN_KW)
    cellvi.settings.seed = None
    assert model.module.model.n_obs is not None  # set by the training plan
    model.save(tmp_path / "m")
    loaded = _SubsampledModel.load(tmp_path / "m", adata=adata)
    # Loading runs the guide once to create its parameters: the plate needs n_obs for it.
    assert loaded.module.model.n_obs == adata.n_obs
    for name, tensor in model.module.state_dict().items():
        torch.testing.assert_close(loaded.module.state_dict()[name], tensor, msg=name)
