"""Callbacks that run a Pyro guide once before training, so that its parameters exist."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback


def _first_batch(loader: Iterable[Any]) -> Any:
    for batch in loader:
        return batch
    raise ValueError("The guide warm-up got a data loader without any minibatch.")


class PyroJitGuideWarmup(Callback):
    """Run the guide on one training minibatch when training starts, on the training device.

    An ``AutoGuide`` creates its parameters on its first call; a JIT-compiled loss
    (``JitTrace_ELBO``) needs them to exist before it traces. cellvi's Pyro plans add
    parameters created after the optimizer to it at the first step, so the warm-up is only
    needed for such losses, or to have the parameters before the first step.

    A module whose parameters are all made by its guide (nothing for the optimizer to hold
    when it is built) is warmed up at setup instead, on ``dataloader``'s first minibatch, as
    :class:`PyroModelGuideWarmup` does.

    Parameters
    ----------
    dataloader
        Loader of the minibatch; default the fit's training loader.
    """

    def __init__(self, dataloader: Iterable[Any] | None = None) -> None:
        super().__init__()
        self.dataloader = dataloader

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Run the guide at setup when the module has no parameter before it runs."""
        module = pl_module.module
        if stage == "fit" and self.dataloader is not None and not list(module.parameters()):
            module.warm_up_guide(_first_batch(self.dataloader))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Run ``pl_module.module``'s guide once."""
        loader = trainer.train_dataloader if self.dataloader is None else self.dataloader
        pl_module.module.warm_up_guide(_first_batch(loader))


class PyroModelGuideWarmup(Callback):
    """Run the guide on one minibatch of ``dataloader`` at setup, before the optimizer exists.

    The parameters are created on the CPU, before Lightning moves the module to its device
    and builds the optimizer, so the optimizer holds them from the start.

    Parameters
    ----------
    dataloader
        Loader of the minibatch.
    """

    def __init__(self, dataloader: Iterable[Any]) -> None:
        super().__init__()
        self.dataloader = dataloader

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Run ``pl_module.module``'s guide once when a fit is set up."""
        if stage == "fit":
            pl_module.module.warm_up_guide(_first_batch(self.dataloader))
