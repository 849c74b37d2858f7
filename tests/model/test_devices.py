"""Training, every query, save/load and the resident path on each device (CUDA where there is one).

Device placement has one rule (docs/architecture.md): a model lives where it trained or where
the user asked, its queries run there, and inputs move to the module at its boundary. The
``cuda`` parameters run these same tests on a GPU; they are skipped on machines without one.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import cellvi
from cellvi.model import SCVI, CondSCVI
from tests.conftest import DEVICES

from ._user_modules import TinyPyroModel


def _train_kw(device: str) -> dict:
    return {"accelerator": device, "devices": 1, "enable_progress_bar": False}


class ResidentSpy(pl.Callback):
    """Records where the data splitter held the training data while it trained."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        resident = trainer.datamodule.resident
        self.device = None if resident is None else resident.device.type
        self.resident = resident


@pytest.fixture
def adata():
    cellvi.settings.seed = 0
    data = cellvi.data.synthetic_iid()
    SCVI.setup_anndata(data, batch_key="batch")
    yield data
    cellvi.settings.seed = None


@pytest.mark.parametrize("device", DEVICES)
def test_scvi_trains_queries_saves_and_loads_on_the_device(device, adata, tmp_path) -> None:
    spy = ResidentSpy()
    model = SCVI(adata, n_latent=5)
    model.train(max_epochs=2, callbacks=[spy], **_train_kw(device))
    # Trained there, held there (Lightning alone would move it back to the CPU), and the
    # resident copy of the data was there too and is released now.
    assert model.device.type == device
    assert spy.device == device and spy.resident.released
    assert model.trainer.datamodule.resident is None

    elbo = model.get_elbo(return_mean=False)
    marginal_ll = model.get_marginal_ll(n_mc_samples=3, return_mean=False)
    reconstruction = model.get_reconstruction_error(return_mean=False)["reconstruction_loss"]
    latent = model.get_latent_representation()
    means, variances = model.get_latent_representation(return_dist=True)
    for values in (elbo, marginal_ll, reconstruction):
        assert values.shape == (adata.n_obs,) and np.isfinite(values).all()
    assert latent.shape == means.shape == variances.shape == (adata.n_obs, 5)
    assert np.isfinite(latent).all() and (variances > 0).all()
    assert model.device.type == device  # queries leave the model where it is

    model.save(tmp_path / "model", save_anndata=True)
    loaded = SCVI.load(tmp_path / "model", accelerator=device)
    assert loaded.device.type == device
    np.testing.assert_array_equal(loaded.get_latent_representation(), latent)
    on_cpu = SCVI.load(tmp_path / "model", accelerator="cpu")
    assert on_cpu.device.type == "cpu"
    np.testing.assert_allclose(on_cpu.get_latent_representation(), latent, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_host_loader_training_moves_minibatches_at_the_module(device, adata) -> None:
    model = SCVI(adata)
    model.train(max_epochs=1, device_resident=False, **_train_kw(device))
    assert model.device.type == device
    assert np.isfinite(model.get_elbo())


@pytest.mark.parametrize("device", DEVICES)
def test_condscvi_trains_and_summarises_its_prior_on_the_device(device) -> None:
    cellvi.settings.seed = 0
    adata = cellvi.data.synthetic_iid()
    CondSCVI.setup_anndata(adata, labels_key="labels")
    model = CondSCVI(adata, n_latent=3)
    model.train(max_epochs=2, **_train_kw(device))
    assert model.device.type == device
    prior = model.get_vamp_prior(p=4)
    assert prior["mean_vprior"].shape == (3, 4, 3)
    assert np.isfinite(prior["var_vprior"]).all()
    np.testing.assert_allclose(prior["weights_vprior"].sum(1), 1.0)
    cellvi.settings.seed = None


@pytest.mark.parametrize("device", DEVICES)
def test_pyro_model_trains_and_samples_its_posterior_on_the_device(device) -> None:
    cellvi.settings.seed = 0
    adata = cellvi.data.synthetic_iid()
    TinyPyroModel.setup_anndata(adata)
    model = TinyPyroModel(adata)
    model.train(max_epochs=2, **_train_kw(device))
    assert model.device.type == device
    posterior = model.sample_posterior(num_samples=5, indices=np.arange(30))
    assert posterior["post_sample_means"]["z"].shape == (30, 4)
    assert np.isfinite(posterior["post_sample_stds"]["z"]).all()
    cellvi.settings.seed = None


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["nb", "zinb"])
def test_fused_likelihood_matches_the_exact_one_on_the_device(device, kind) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.rand(64, 40, generator=generator) * 4).to(device)
    mu = (torch.rand(64, 40, generator=generator) * 5 + 0.1).to(device)
    theta = (torch.rand(40, generator=generator) * 3 + 0.2).to(device)
    logits = torch.randn(64, 40, generator=generator).to(device)
    cls = cellvi.distributions.NegativeBinomial
    params = {"mu": mu, "theta": theta}
    if kind == "zinb":
        cls = cellvi.distributions.ZeroInflatedNegativeBinomial
        params["zi_logits"] = logits
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    fused = cls(**leaves).log_prob_sum(x)
    fused_grads = torch.autograd.grad(fused.sum(), list(leaves.values()))
    leaves = {k: v.double().clone().requires_grad_() for k, v in params.items()}
    exact = cls(**leaves).log_prob(x.double()).sum(-1)
    exact_grads = torch.autograd.grad(exact.sum(), list(leaves.values()))
    assert fused.device.type == device
    torch.testing.assert_close(fused.double(), exact, rtol=1e-5, atol=1e-3)
    for got, expected in zip(fused_grads, exact_grads, strict=True):
        torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)


def test_load_puts_the_model_where_a_fresh_fit_would(monkeypatch) -> None:
    """``accelerator="auto"`` means the GPU when there is one, for load as for train."""
    from cellvi.model.base._persistence import resolve_device

    assert resolve_device("cpu", "auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", "auto") == torch.device("cuda")
    assert resolve_device("gpu", 1) == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", "auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda", "auto")
