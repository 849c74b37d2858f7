"""A package built on scvi-tools' Pyro framework, run unchanged with ``import cellvi as scvi``.

Written as an outside author writes a spatial-mapping package (in the manner of cell2location)
from scvi-tools 1.4.2's documentation: spot counts are modelled as a non-negative mixture of
known cell-type signatures, with a per-spot abundance of each type (local, in the plate over
spots), a per-gene detection rate and over-dispersion (global). Only public scvi-tools names
are used: ``PyroBaseModuleClass`` with an ``AutoGuide`` or a hand-written amortised guide
(``FCLayers`` encoder), ``PyroSviTrainMixin`` and ``PyroSampleMixin``, ``AnnDataLoader``,
``DataSplitter`` / ``DeviceBackedDataSplitter``, ``PyroJitGuideWarmup``, and ``TrainRunner``
with the author's own ``PyroTrainingPlan`` subclass.
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from anndata import AnnData
from pyro.infer.autoguide import AutoNormal, init_to_mean
from pyro.nn import PyroModule
from torch import nn

import cellvi as scvi

REGISTRY_KEYS = scvi.REGISTRY_KEYS
N_SPOTS, N_GENES, N_TYPES = 300, 60, 4


# ---- the package: module, guide, training plan, model ----------------------------------------


class SpotMixtureModel(PyroModule):
    """Counts of spot s, gene g ~ GammaPoisson(mean m_g * sum_f w_sf g_fg, dispersion a_g)."""

    def __init__(self, signatures: np.ndarray) -> None:
        super().__init__()
        self.n_obs: int | None = None  # set by the training plan (n_obs_training)
        self.register_buffer("signatures", torch.as_tensor(signatures, dtype=torch.float32))
        n_types, n_genes = signatures.shape
        self.n_types, self.n_genes = n_types, n_genes
        self.register_buffer("zero", torch.tensor(0.0))
        self.register_buffer("one", torch.tensor(1.0))

    def create_plates(self, x, ind_x):
        return pyro.plate("obs_plate", size=self.n_obs, dim=-1, subsample=ind_x)

    def list_obs_plate_vars(self):
        return {"name": "obs_plate", "in": [0], "sites": {"abundance": self.n_types}}

    @staticmethod
    def _get_fn_args_from_batch(tensor_dict):
        x = tensor_dict[REGISTRY_KEYS.X_KEY]
        ind_x = tensor_dict[REGISTRY_KEYS.INDICES_KEY].long().squeeze(-1)
        return (x, ind_x), {}

    def forward(self, x, ind_x):
        detection = pyro.sample(
            "detection",
            dist.LogNormal(self.zero, self.one).expand([1, self.n_genes]).to_event(2),
        )
        dispersion = pyro.sample(
            "dispersion",
            dist.LogNormal(self.zero + 2.0, self.one).expand([1, self.n_genes]).to_event(2),
        )
        with self.create_plates(x, ind_x):
            abundance = pyro.sample(
                "abundance",
                dist.Gamma(self.one, self.one).expand([x.shape[0], self.n_types]).to_event(1),
            )
            mean = detection * (abundance @ self.signatures)
            pyro.sample(
                "data_target",
                dist.GammaPoisson(dispersion, dispersion / mean).to_event(1),
                obs=x,
            )


class AmortisedGuide(PyroModule):
    """Abundance from an ``FCLayers`` encoder of log counts; global sites as AutoNormal."""

    def __init__(self, model: SpotMixtureModel, n_hidden: int = 32) -> None:
        super().__init__()
        self.encoder = scvi.nn.FCLayers(model.n_genes, n_hidden, n_layers=1, dropout_rate=0.0)
        self.loc = nn.Linear(n_hidden, model.n_types)
        self.log_scale = nn.Linear(n_hidden, model.n_types)
        self.global_guide = AutoNormal(
            pyro.poutine.block(model, expose=["detection", "dispersion"]),
            init_loc_fn=init_to_mean,
        )
        self.model = [model]  # a list: not a submodule of the guide

    def forward(self, x, ind_x):
        self.global_guide(x, ind_x)
        hidden = self.encoder(torch.log1p(x))
        loc, scale = self.loc(hidden), torch.exp(self.log_scale(hidden).clamp(-6, 2))
        with self.model[0].create_plates(x, ind_x):
            pyro.sample("abundance", dist.LogNormal(loc, scale).to_event(1))


class SpotMixtureModule(scvi.module.base.PyroBaseModuleClass):
    def __init__(self, signatures: np.ndarray, amortised: bool = False) -> None:
        super().__init__()
        self._model = SpotMixtureModel(signatures)
        if amortised:
            self._guide = AmortisedGuide(self._model)
        else:
            self._guide = AutoNormal(
                self._model, init_loc_fn=init_to_mean, create_plates=self._model.create_plates
            )
        self._get_fn_args_from_batch = self._model._get_fn_args_from_batch

    @property
    def model(self):
        return self._model

    @property
    def guide(self):
        return self._guide

    @property
    def list_obs_plate_vars(self):
        return self._model.list_obs_plate_vars()


class EpochRecordingPlan(scvi.train.PyroTrainingPlan):
    """The author's plan: records the ELBO of every epoch for the package's own plots."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.epoch_elbo: list[float] = []

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.epoch_elbo.append(float(self.trainer.callback_metrics["elbo_train"]))


class SpotMixture(
    scvi.model.base.PyroSampleMixin,
    scvi.model.base.PyroSviTrainMixin,
    scvi.model.base.BaseModelClass,
):
    """The package's user-facing model."""

    def __init__(self, adata: AnnData, signatures: np.ndarray, amortised: bool = False) -> None:
        pyro.clear_param_store()
        super().__init__(adata)
        self.module = SpotMixtureModule(signatures=signatures, amortised=amortised)
        self._model_summary_string = "SpotMixture"
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def setup_anndata(cls, adata: AnnData, layer: str | None = None, **kwargs) -> None:
        setup_method_args = cls._get_setup_method_args(**locals())
        adata.obs["_indices"] = np.arange(adata.n_obs).astype("int64")
        fields = [
            scvi.data.fields.LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            scvi.data.fields.NumericalObsField(REGISTRY_KEYS.INDICES_KEY, "_indices"),
        ]
        manager = scvi.data.AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)

    def train_with_plan(
        self,
        max_epochs: int,
        batch_size: int | None = None,
        lr: float = 0.01,
        device_backed: bool = False,
        jit: bool = False,
    ) -> EpochRecordingPlan:
        """Train as the package does: its own plan, splitter and callbacks on a TrainRunner."""
        splitter_cls = (
            scvi.dataloaders.DeviceBackedDataSplitter
            if device_backed
            else scvi.dataloaders.DataSplitter
        )
        splitter = splitter_cls(self.adata_manager, train_size=1.0, batch_size=batch_size)
        loss_fn = pyro.infer.JitTrace_ELBO() if jit else pyro.infer.Trace_ELBO()
        plan = EpochRecordingPlan(self.module, loss_fn=loss_fn, optim_kwargs={"lr": lr})
        runner = scvi.train.TrainRunner(
            self,
            training_plan=plan,
            data_splitter=splitter,
            max_epochs=max_epochs,
            accelerator="cpu",
            devices=1,
            callbacks=[scvi.model.base.PyroJitGuideWarmup()],
            enable_progress_bar=False,
        )
        runner()
        return plan


# ---- data ------------------------------------------------------------------------------------


def simulate_spots(seed: int = 0) -> tuple[AnnData, np.ndarray, np.ndarray, np.ndarray]:
    """Spots mixing 4 cell types with known signatures, abundances and detection rates."""
    rng = np.random.default_rng(seed)
    signatures = rng.gamma(0.5, 2.0, size=(N_TYPES, N_GENES)) + 0.05
    abundance = rng.gamma(1.0, 3.0, size=(N_SPOTS, N_TYPES))
    detection = rng.lognormal(0.0, 0.3, size=N_GENES)
    mean = detection * (abundance @ signatures)
    counts = rng.negative_binomial(20, 20 / (20 + mean)).astype(np.float32)
    return AnnData(counts), signatures, abundance, detection


@pytest.fixture(scope="module")
def trained():
    adata, signatures, abundance, detection = simulate_spots()
    SpotMixture.setup_anndata(adata)
    scvi.settings.seed = 0
    model = SpotMixture(adata, signatures)
    plan = model.train_with_plan(max_epochs=80, batch_size=128, lr=0.1)
    scvi.settings.seed = None
    return model, plan, adata, abundance, detection


# ---- tests -----------------------------------------------------------------------------------


def test_the_package_trains_on_its_own_plan_and_recovers_the_mixture(trained):
    model, plan, adata, abundance, detection = trained
    assert model.is_trained_
    assert len(plan.epoch_elbo) == 80
    assert np.mean(plan.epoch_elbo[-5:]) < 0.85 * np.mean(plan.epoch_elbo[:5])
    posterior = model.sample_posterior(num_samples=30, batch_size=150)
    means = posterior["post_sample_means"]
    assert means["abundance"].shape == (N_SPOTS, N_TYPES)
    assert means["detection"].shape == (1, N_GENES)
    # Abundances are identified up to the scale shared with detection: compare per type
    # after normalising each spot's composition.
    estimated = means["abundance"] / means["abundance"].sum(1, keepdims=True)
    true = abundance / abundance.sum(1, keepdims=True)
    correlation = [np.corrcoef(estimated[:, f], true[:, f])[0, 1] for f in range(N_TYPES)]
    assert min(correlation) > 0.8, correlation
    detection_corr = np.corrcoef(np.log(means["detection"].ravel()), np.log(detection))[0, 1]
    assert detection_corr > 0.7, detection_corr


def test_posterior_summaries_in_minibatches_match_one_batch(trained):
    model, *_ = trained
    scvi.settings.seed = 0
    batched = model.sample_posterior(num_samples=60, batch_size=100, return_sites=["abundance"])
    whole = model.sample_posterior(num_samples=60, batch_size=N_SPOTS, return_sites=["abundance"])
    scvi.settings.seed = None
    q05, q95 = batched["post_sample_q05"]["abundance"], batched["post_sample_q95"]["abundance"]
    assert (q05 <= batched["post_sample_means"]["abundance"]).all()
    assert (batched["post_sample_means"]["abundance"] <= q95).all()
    # Minibatches only change which draws each spot gets: summaries agree to Monte Carlo error.
    relative = np.abs(
        batched["post_sample_means"]["abundance"] - whole["post_sample_means"]["abundance"]
    ) / (whole["post_sample_stds"]["abundance"] / np.sqrt(60))
    assert np.sqrt(np.mean(relative**2)) < 2.5


def test_a_custom_loader_of_some_spots(trained):
    model, _, adata, *_ = trained
    indices = np.arange(10, 40)
    loader = scvi.dataloaders.AnnDataLoader(model.adata_manager, indices=indices, batch_size=8)
    result = model.sample_posterior(input_dl=loader, num_samples=20, return_sites=["abundance"])
    assert result["post_sample_means"]["abundance"].shape == (30, N_TYPES)


def test_save_and_load_keep_the_posterior(trained, tmp_path):
    model, _, adata, *_ = trained
    model.save(tmp_path / "spot_mixture")
    loaded = SpotMixture.load(tmp_path / "spot_mixture", adata=adata)
    for name, tensor in model.module.state_dict().items():
        torch.testing.assert_close(loaded.module.state_dict()[name], tensor, msg=name)
    quantiles = loaded.module.guide.quantiles([0.5])
    expected = model.module.guide.quantiles([0.5])
    torch.testing.assert_close(quantiles["detection"], expected["detection"])


@pytest.mark.parametrize("device_backed", [False, True])
def test_an_amortised_hand_written_guide_with_either_splitter(device_backed):
    adata, signatures, abundance, _ = simulate_spots(seed=1)
    SpotMixture.setup_anndata(adata)
    scvi.settings.seed = 0
    model = SpotMixture(adata, signatures, amortised=True)
    plan = model.train_with_plan(
        max_epochs=25, batch_size=150, lr=0.05, device_backed=device_backed
    )
    scvi.settings.seed = None
    assert np.mean(plan.epoch_elbo[-5:]) < np.mean(plan.epoch_elbo[:5])
    assert any(name.startswith("encoder.") for name, _ in model.module.guide.named_parameters())
    posterior = model.sample_posterior(num_samples=30, batch_size=128)
    estimated = posterior["post_sample_means"]["abundance"]
    estimated = estimated / estimated.sum(1, keepdims=True)
    true = abundance / abundance.sum(1, keepdims=True)
    correlation = [np.corrcoef(estimated[:, f], true[:, f])[0, 1] for f in range(N_TYPES)]
    assert min(correlation) > 0.7, correlation


def test_a_jit_compiled_loss_after_the_guide_warm_up():
    adata, signatures, *_ = simulate_spots(seed=2)
    SpotMixture.setup_anndata(adata)
    scvi.settings.seed = 0
    model = SpotMixture(adata, signatures)
    plan = model.train_with_plan(max_epochs=5, batch_size=100, jit=True)
    scvi.settings.seed = None
    assert len(plan.epoch_elbo) == 5 and np.isfinite(plan.epoch_elbo).all()
    state = model.module.guide.state_dict()
    # AutoNormal keeps one location per spot of the local site, made by the warm-up.
    assert list(state["locs.abundance_unconstrained"].shape) == [N_SPOTS, N_TYPES]
