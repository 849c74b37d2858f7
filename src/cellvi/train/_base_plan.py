"""``BasePlan``: what the torch and the Pyro training plans share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch

from cellvi.train._epoch_sums import EpochSums
from cellvi.train._errors import NonFiniteLossError
from cellvi.train._kl_weight import compute_kl_weight

SPLITS = ("train", "validation")


class BasePlan(pl.LightningModule):
    """The mechanics every cellvi training plan shares; subclasses say how a step computes.

    It owns the KL warm-up schedule (:attr:`kl_weight`), the per-epoch metric sums and their
    logging (``<metric>_train``, ``<metric>_validation``, ``train_loss``, the KL weight of the
    epoch's last step), the non-finite loss check, and the optimizer over the module's
    trainable parameters. A subclass implements the steps and :meth:`make_optimizer`, and
    may wrap the optimizer in a scheduler (:meth:`with_scheduler`).

    Parameters
    ----------
    module
        The module to train.
    n_steps_kl_warmup
        Optimizer steps over which the KL weight rises; takes precedence over epochs.
    n_epochs_kl_warmup
        Epochs over which the KL weight rises (``None`` for both: constant ``max_kl_weight``).
    max_kl_weight
        KL weight after the warm-up.
    min_kl_weight
        KL weight at the start of the warm-up.
    check_finite
        Raise :class:`NonFiniteLossError` when a training loss is NaN or infinite, before any
        parameter update.
    logs_kl_weight
        Log ``kl_weight`` each epoch (when the module reads the weight).
    sums
        Factory of a split's per-epoch metric sums.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        n_steps_kl_warmup: int | None,
        n_epochs_kl_warmup: int | None,
        max_kl_weight: float = 1.0,
        min_kl_weight: float = 0.0,
        check_finite: bool = True,
        logs_kl_weight: bool = True,
        sums: Callable[[], EpochSums] = EpochSums,
    ) -> None:
        super().__init__()
        if min_kl_weight > max_kl_weight:
            raise ValueError(
                f"min_kl_weight ({min_kl_weight}) must not exceed max_kl_weight ({max_kl_weight})."
            )
        self.module = module
        self.n_steps_kl_warmup = n_steps_kl_warmup
        self.n_epochs_kl_warmup = n_epochs_kl_warmup
        self.max_kl_weight = max_kl_weight
        self.min_kl_weight = min_kl_weight
        self.check_finite = check_finite
        self.logs_kl_weight = logs_kl_weight
        self._sums = {split: sums() for split in SPLITS}
        self._last_kl_weight = self.kl_weight

    @property
    def kl_weight(self) -> float:
        """KL weight at the current epoch and global step."""
        return compute_kl_weight(
            self.current_epoch,
            self.global_step,
            self.n_epochs_kl_warmup,
            self.n_steps_kl_warmup,
            self.max_kl_weight,
            self.min_kl_weight,
        )

    def step_kl_weight(self) -> float:
        """The KL weight of the training step under way (logged at the epoch's end)."""
        self._last_kl_weight = self.kl_weight
        return self._last_kl_weight

    def raise_if_not_finite(self, loss: torch.Tensor, terms: Callable[[], list[str]]) -> None:
        """Stop training before the update when ``loss`` is NaN or infinite.

        ``terms`` names the non-finite parts; it is only called once a loss is non-finite.
        """
        if self.check_finite and not torch.isfinite(loss):
            raise NonFiniteLossError(self.global_step, self.current_epoch, terms())

    def sums(self, split: str) -> EpochSums:
        """The per-epoch metric sums of ``split`` (``"train"`` or ``"validation"``)."""
        return self._sums[split]

    # Epoch hooks ---------------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        """Start the epoch's training sums from zero."""
        self._sums["train"].reset()

    def on_validation_epoch_start(self) -> None:
        """Start the validation sums from zero."""
        self._sums["validation"].reset()

    def on_train_epoch_end(self) -> None:
        """Log the epoch's training metrics and the KL weight of its last step."""
        self._log_epoch("train")
        if self.logs_kl_weight:
            self.log("kl_weight", self._last_kl_weight, on_step=False, on_epoch=True, batch_size=1)

    def on_validation_epoch_end(self) -> None:
        """Log the validation metrics."""
        self._log_epoch("validation")

    def _log_epoch(self, split: str) -> None:
        for name, value in self._sums[split].compute().items():
            metric = f"{split}_loss" if name == "loss" else f"{name}_{split}"
            self.log(
                metric, value, on_step=False, on_epoch=True, prog_bar=name == "elbo", batch_size=1
            )

    # Optimisation --------------------------------------------------------------------------

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The module's parameters that require gradients (frozen ones are left out)."""
        return [p for p in self.module.parameters() if p.requires_grad]

    def make_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """Build the optimizer over ``params``."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_optimizer.")

    def with_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        """What ``configure_optimizers`` returns for ``optimizer`` (default: it alone)."""
        return optimizer

    def configure_optimizers(self) -> Any:
        """The optimizer over the trainable parameters (with a scheduler if a plan adds one)."""
        return self.with_scheduler(self.make_optimizer(self.trainable_parameters()))
