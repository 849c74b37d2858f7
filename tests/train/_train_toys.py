"""Tiny modules, a fake data splitter and a fit helper shared by the training tests."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence
from torch.utils.data import DataLoader, Dataset

from cellvi.module.base import BaseModuleClass, LossOutput
from cellvi.train import TrainingPlan, TrainingState, TrainRunner

N_GENES = 4


def toy_data(n_cells: int, seed: int = 0) -> torch.Tensor:
    """Low-rank Gaussian data, so a linear VAE has something to learn."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n_cells, 2, generator=gen)
    return z @ torch.randn(2, N_GENES, generator=gen) + 0.1 * torch.randn(
        n_cells, N_GENES, generator=gen
    )


class LinearVAE(BaseModuleClass):
    """Linear Gaussian VAE; ``stochastic=False`` decodes the posterior mean (deterministic)."""

    def __init__(self, stochastic: bool = True, kl_global: bool = False) -> None:
        super().__init__()
        self.encoder = nn.Linear(N_GENES, 4)
        self.decoder = nn.Linear(2, N_GENES)
        self.stochastic = stochastic
        self.use_kl_global = kl_global
        self.kl_weights_seen: list[float] = []

    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"x": tensors["X"]}

    def inference(self, x: torch.Tensor) -> dict[str, Any]:
        mean, log_var = self.encoder(x).chunk(2, dim=-1)
        # No argument validation: it reads tensors back to the host (see test_check_finite).
        qz = Normal(mean, torch.exp(0.5 * log_var), validate_args=False)
        return {"qz": qz, "z": qz.rsample() if self.stochastic else mean}

    def _get_generative_input(self, tensors: dict, inference_outputs: dict) -> dict[str, Any]:
        return {"z": inference_outputs["z"]}

    def generative(self, z: torch.Tensor) -> dict[str, Any]:
        return {"px_mean": self.decoder(z)}

    def loss(
        self,
        tensors: dict,
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float = 1.0,
    ) -> LossOutput:
        if self.training:
            self.kl_weights_seen.append(kl_weight)
        return self.loss_output(tensors, inference_outputs, generative_outputs, kl_weight)

    def loss_output(
        self, tensors: dict, inference_outputs: dict, generative_outputs: dict, kl_weight: float
    ) -> LossOutput:
        rec = 0.5 * (tensors["X"] - generative_outputs["px_mean"]).pow(2).sum(-1)
        prior = Normal(0.0, 1.0, validate_args=False)
        kl_local = kl_divergence(inference_outputs["qz"], prior).sum(-1)
        loss = (rec + kl_weight * kl_local).mean()
        kl_global = None
        if self.use_kl_global:
            kl_global = 0.5 * self.decoder.weight.pow(2).sum()
            loss = loss + kl_global
        return LossOutput(
            loss=loss, reconstruction_loss=rec, kl_local=kl_local, kl_global=kl_global
        )


class NoKLWeightVAE(LinearVAE):
    """A user module whose ``loss`` takes no ``kl_weight``."""

    def loss(self, tensors: dict, inference_outputs: dict, generative_outputs: dict) -> LossOutput:
        return self.loss_output(tensors, inference_outputs, generative_outputs, 1.0)


class NaNAtCallVAE(LinearVAE):
    """Returns a NaN reconstruction term (key ``gene_nll``) at its ``nan_at``-th training call."""

    def __init__(self, nan_at: int) -> None:
        super().__init__()
        self.nan_at = nan_at
        self.n_calls = 0

    def loss(
        self,
        tensors: dict,
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float = 1.0,
    ) -> LossOutput:
        out = self.loss_output(tensors, inference_outputs, generative_outputs, kl_weight)
        if self.training:
            if self.n_calls == self.nan_at:
                rec = out.reconstruction_loss["reconstruction_loss"] * float("nan")
                out = LossOutput(
                    loss=rec.mean(), reconstruction_loss={"gene_nll": rec}, kl_local=out.kl_local
                )
            self.n_calls += 1
        return out


class PlateauModule(BaseModuleClass):
    """A loss that does not depend on the parameter's value: every metric is flat."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))

    def _get_inference_input(self, tensors: dict) -> dict[str, Any]:
        return {"x": tensors["X"]}

    def inference(self, x: torch.Tensor) -> dict[str, Any]:
        return {"x": x}

    def _get_generative_input(self, tensors: dict, inference_outputs: dict) -> dict[str, Any]:
        return {}

    def generative(self) -> dict[str, Any]:
        return {}

    def loss(self, tensors: dict, inference_outputs: dict, generative_outputs: dict) -> LossOutput:
        rec = tensors["X"].pow(2).sum(-1) + 0.0 * self.weight
        return LossOutput(loss=rec.mean(), reconstruction_loss=rec)


class _Cells(Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"X": self.x[i]}


class FakeSplitter(pl.LightningDataModule):
    """The last ``n_val`` cells validate, the rest train; no test cells."""

    def __init__(
        self, x: torch.Tensor, n_val: int = 0, batch_size: int = 5, shuffle: bool = False
    ) -> None:
        super().__init__()
        self.x = x
        self.train_idx = np.arange(len(x) - n_val)
        self.val_idx = np.arange(len(x) - n_val, len(x))
        self.test_idx = np.array([], dtype=int)
        self.batch_size = batch_size
        self.shuffle = shuffle

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            _Cells(self.x[self.train_idx]), batch_size=self.batch_size, shuffle=self.shuffle
        )

    def val_dataloader(self) -> DataLoader | list:
        if len(self.val_idx) == 0:
            return []
        return DataLoader(_Cells(self.x[self.val_idx]), batch_size=self.batch_size)


class DummyModel:
    """Stands in for a model class: the runner records the fit in its training state."""

    def __init__(self) -> None:
        self.training_state = TrainingState()


def fit(
    module: BaseModuleClass,
    splitter: FakeSplitter,
    max_epochs: int,
    plan_kwargs: dict | None = None,
    **runner_kwargs: Any,
) -> tuple[TrainingState, TrainRunner]:
    """Train ``module`` on CPU with a TrainingPlan and a TrainRunner, quietly.

    Validation runs every epoch unless ``check_val_every_n_epoch`` says otherwise. Returns the
    training state the runner recorded, and the runner.
    """
    torch.manual_seed(0)
    plan = TrainingPlan(module, **(plan_kwargs or {}))
    model = DummyModel()
    runner_kwargs = {
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
        "check_val_every_n_epoch": 1,
        **runner_kwargs,
    }
    runner = TrainRunner(model, plan, splitter, max_epochs, accelerator="cpu", **runner_kwargs)
    runner()
    return model.training_state, runner
