"""User-written modules and model classes, as a cellvi user would write them, kept tiny.

``TinyVAE`` (plain torch) and ``TinyPyroVAE`` (Pyro) are both a small scVI: Gaussian latent,
negative binomial counts with the observed library size. Setting ``poisoned = True`` on either
makes its next loss non-finite, to test the guard against NaN/Inf losses.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from anndata import AnnData
from torch.distributions import Normal, kl_divergence

from cellvi import REGISTRY_KEYS
from cellvi.data import AnnDataManager
from cellvi.data.fields import LayerField
from cellvi.distributions import NegativeBinomial
from cellvi.model.base import (
    BaseModelClass,
    PyroSampleMixin,
    PyroSviTrainMixin,
    UnsupervisedTrainingMixin,
    VAEMixin,
)
from cellvi.module.base import BaseModuleClass, LossOutput, PyroBaseModuleClass, auto_move_data

N_HIDDEN = 32
TRAIN_KW = {"enable_progress_bar": False, "accelerator": "cpu"}


def mlp(n_in: int, n_out: int) -> torch.nn.Sequential:
    """One hidden layer of ``N_HIDDEN`` units."""
    return torch.nn.Sequential(
        torch.nn.Linear(n_in, N_HIDDEN), torch.nn.ReLU(), torch.nn.Linear(N_HIDDEN, n_out)
    )


class TinyVAE(BaseModuleClass):
    """A small scVI written against ``BaseModuleClass``."""

    def __init__(self, n_input: int, n_latent: int = 4) -> None:
        super().__init__()
        self.encoder = mlp(n_input, 2 * n_latent)
        self.decoder = mlp(n_latent, n_input)
        self.log_theta = torch.nn.Parameter(torch.zeros(n_input))
        self.poisoned = False

    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"x": tensors[REGISTRY_KEYS.X_KEY]}

    @auto_move_data
    def inference(self, x: torch.Tensor) -> dict[str, Any]:
        loc, log_var = self.encoder(torch.log1p(x)).chunk(2, dim=-1)
        qz = Normal(loc, torch.exp(0.5 * log_var))
        return {"qz": qz, "z": qz.rsample()}

    def _get_generative_input(self, tensors: dict, inference_outputs: dict) -> dict[str, Any]:
        x = tensors[REGISTRY_KEYS.X_KEY]
        return {"z": inference_outputs["z"], "library": x.sum(dim=1, keepdim=True)}

    @auto_move_data
    def generative(self, z: torch.Tensor, library: torch.Tensor) -> dict[str, Any]:
        mu = library * torch.softmax(self.decoder(z), dim=-1)
        return {"px": NegativeBinomial(mu=mu, theta=torch.exp(self.log_theta))}

    def loss(self, tensors: dict, inference_outputs: dict, generative_outputs: dict) -> LossOutput:
        x = tensors[REGISTRY_KEYS.X_KEY]
        reconstruction = -generative_outputs["px"].log_prob(x).sum(-1)
        if self.poisoned:
            reconstruction = reconstruction * torch.nan
        qz = inference_outputs["qz"]
        kl = kl_divergence(qz, Normal(torch.zeros_like(qz.loc), 1.0)).sum(-1)
        return LossOutput(
            loss=(reconstruction + kl).mean(), reconstruction_loss=reconstruction, kl_local=kl
        )


class TinyPyroVAE(PyroBaseModuleClass):
    """The same small scVI as a Pyro model and guide, plus a global per-gene offset site.

    ``register`` calls ``pyro.module`` (under a fixed name, shared by every instance);
    ``plate`` False declares no obs plate.
    """

    def __init__(
        self, n_input: int, n_latent: int = 4, register: bool = False, plate: bool = True
    ) -> None:
        super().__init__()
        self.n_latent = n_latent
        self.encoder = mlp(n_input, 2 * n_latent)
        self.decoder = mlp(n_latent, n_input)
        self.log_theta = torch.nn.Parameter(torch.zeros(n_input))
        self.offset_loc = torch.nn.Parameter(torch.zeros(n_input))
        self.offset_log_scale = torch.nn.Parameter(torch.full((n_input,), -2.0))
        self.register = register
        self.plate = plate
        self.poisoned = False

    @property
    def list_obs_plate_vars(self) -> dict[str, Any]:
        if not self.plate:
            return super().list_obs_plate_vars
        return {"name": "cells", "in": ["z"], "sites": {"z": (self.n_latent,)}}

    @staticmethod
    def _get_fn_args_from_batch(tensors: dict[str, torch.Tensor]) -> tuple[tuple, dict]:
        x = tensors[REGISTRY_KEYS.X_KEY]
        return (x, x.sum(dim=1, keepdim=True)), {}

    def model(self, x: torch.Tensor, library: torch.Tensor) -> None:
        if self.register:
            pyro.module("tiny", self)
        offset = pyro.sample("offset", dist.Normal(x.new_zeros(x.shape[1]), 0.1).to_event(1))
        if self.poisoned:
            # NaN parameters fail Pyro's validation; an infinite log-density does not.
            pyro.factor("poison", x.new_tensor(float("-inf")))
        with pyro.plate("cells", x.shape[0]):
            prior = dist.Normal(x.new_zeros(x.shape[0], self.n_latent), 1.0)
            z = pyro.sample("z", prior.to_event(1))
            mu = library * torch.softmax(self.decoder(z) + offset, dim=-1)
            theta = torch.exp(self.log_theta)
            logits = torch.log(mu + 1e-6) - torch.log(theta)
            likelihood = dist.NegativeBinomial(total_count=theta, logits=logits)
            pyro.sample("x", likelihood.to_event(1), obs=x)

    def guide(self, x: torch.Tensor, library: torch.Tensor) -> None:
        if self.register:
            pyro.module("tiny", self)
        q_offset = dist.Normal(self.offset_loc, torch.exp(self.offset_log_scale))
        pyro.sample("offset", q_offset.to_event(1))
        with pyro.plate("cells", x.shape[0]):
            loc, log_var = self.encoder(torch.log1p(x)).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, torch.exp(0.5 * log_var)).to_event(1))


def _setup_counts(
    cls: type[BaseModelClass], adata: AnnData, layer: str | None, args: dict, **kwargs: Any
) -> None:
    fields = [LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True)]
    manager = AnnDataManager(fields=fields, setup_method_args=args)
    manager.register_fields(adata, **kwargs)
    cls.register_manager(manager)


class TinyModel(VAEMixin, UnsupervisedTrainingMixin, BaseModelClass):
    """User model class around ``TinyVAE``."""

    def __init__(self, adata: AnnData, n_latent: int = 4) -> None:
        super().__init__(adata)
        self.module = TinyVAE(n_input=self.summary_stats["n_vars"], n_latent=n_latent)
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def setup_anndata(cls, adata: AnnData, layer: str | None = None, **kwargs: Any) -> None:
        """Register the counts."""
        _setup_counts(cls, adata, layer, cls._get_setup_method_args(**locals()), **kwargs)


class TinyPyroModel(PyroSampleMixin, PyroSviTrainMixin, BaseModelClass):
    """User model class around ``TinyPyroVAE``."""

    def __init__(
        self, adata: AnnData, n_latent: int = 4, register: bool = False, plate: bool = True
    ) -> None:
        super().__init__(adata)
        self.module = TinyPyroVAE(
            n_input=self.summary_stats["n_vars"], n_latent=n_latent, register=register, plate=plate
        )
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def setup_anndata(cls, adata: AnnData, layer: str | None = None, **kwargs: Any) -> None:
        """Register the counts."""
        _setup_counts(cls, adata, layer, cls._get_setup_method_args(**locals()), **kwargs)

    @torch.no_grad()
    def get_latent_representation(
        self, adata: AnnData | None = None, indices: Any = None
    ) -> np.ndarray:
        """Posterior mean of ``z`` (the encoder's location output)."""
        self._check_if_trained()
        means = []
        for tensors in self._make_dataloader(adata=adata, indices=indices):
            x = tensors[REGISTRY_KEYS.X_KEY].to(self.module.device)
            means.append(self.module.encoder(torch.log1p(x)).chunk(2, dim=-1)[0].cpu())
        return torch.cat(means).numpy()
