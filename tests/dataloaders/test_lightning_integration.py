"""Lightning fits a trivial model on a ``DataSplitter``, with and without validation cells."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from cellvi.data import REGISTRY_KEYS
from cellvi.dataloaders import DataSplitter

# Lightning internals on this torch release; nothing the data loaders can change.
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*")


class TinyModule(pl.LightningModule):
    """A linear read-out of X that counts the cells each stage sees."""

    def __init__(self, n_genes: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(n_genes, 1)
        self.cells_seen = {"train": 0, "val": 0}

    def _loss(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        x = batch[REGISTRY_KEYS.X_KEY]
        assert batch[REGISTRY_KEYS.BATCH_KEY].dtype == torch.int64
        self.cells_seen[stage] += x.shape[0]
        return self.linear(x).pow(2).mean()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._loss(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch, "val"), batch_size=batch["X"].shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(
    splitter: DataSplitter, module: pl.LightningModule | None = None, **trainer_kwargs: Any
) -> tuple[pl.Trainer, pl.LightningModule]:
    """Fit ``module`` (by default a ``TinyModule``) for one epoch, quietly, on the CPU."""
    module = module or TinyModule(n_genes=splitter.adata_manager.adata.n_vars)
    trainer = pl.Trainer(
        **{
            "max_epochs": 1,
            "accelerator": "cpu",
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
            **trainer_kwargs,
        }
    )
    trainer.fit(module, datamodule=splitter)
    return trainer, module


@pytest.mark.parametrize("x_format", ["dense", "csr"])
def test_fit_runs_training_and_validation_over_their_splits(make_manager, x_format):
    splitter = DataSplitter(make_manager(x_format), train_size=0.8, batch_size=16)
    trainer, module = fit(splitter)
    assert trainer.state.finished
    assert module.cells_seen == {"train": 40, "val": 10}
    assert "val_loss" in trainer.callback_metrics


@pytest.mark.filterwarnings("ignore:Total length of `list` across ranks is zero")
def test_fit_without_validation_cells_runs_no_validation_loop(manager):
    trainer, module = fit(DataSplitter(manager, train_size=1.0, batch_size=10))
    assert trainer.state.finished
    assert module.cells_seen == {"train": 50, "val": 0}
    assert trainer.num_val_batches == [0]
