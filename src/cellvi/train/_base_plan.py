"""``BasePlan``: what the torch and the Pyro training plans share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch

from cellvi.train._epoch_sums import EpochSums
from cellvi.train._errors import NonFiniteLossError
from cellvi.train._kl_weight import check_kl_bounds, compute_kl_weight, warn_if_steps_ignored

SPLITS = ("train", "validation")
# What ``on_step=None`` / ``on_epoch=None`` mean per split, as in Lightning's ``self.log``:
# training steps log per step, validation per epoch.
_LIGHTNING_DEFAULTS = {"train": (True, False), "validation": (False, True)}


class BasePlan(pl.LightningModule):
    """The mechanics every cellvi training plan shares; subclasses say how a step computes.

    It owns the KL warm-up schedule (:attr:`kl_weight`), the metric sums and their logging
    (``<metric>_train``, ``<metric>_validation``, ``train_loss``, ``validation_loss``, the KL
    weight of the epoch's last step), the non-finite loss check, and the optimizer over the
    module's trainable parameters. A subclass implements the steps and
    :meth:`make_optimizer`, and may wrap the optimizer in a scheduler (:meth:`with_scheduler`).

    Parameters
    ----------
    module
        The module to train.
    n_steps_kl_warmup
        Optimizer steps over which the KL weight rises; used only when ``n_epochs_kl_warmup``
        is None (a warning says so when both are given).
    n_epochs_kl_warmup
        Epochs over which the KL weight rises; takes precedence over steps (``None`` for both:
        constant ``max_kl_weight``).
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
    on_step
        Also log each minibatch's metrics (every ``log_every_n_steps`` training steps, every
        validation step), together with ``"step"``, the step's index, so that the history
        indexes them by step. ``None``: for training steps only.
    on_epoch
        Log the metrics of each epoch (its cell-weighted means). ``None``: for validation only.
        With both, metrics are named with a ``_step`` and an ``_epoch`` suffix
        (``train_loss_step``, ``elbo_train_epoch``), as Lightning names them.
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
        on_step: bool | None = False,
        on_epoch: bool | None = True,
    ) -> None:
        super().__init__()
        check_kl_bounds(min_kl_weight, max_kl_weight)
        warn_if_steps_ignored(n_epochs_kl_warmup, n_steps_kl_warmup)
        self._when = {split: _logging_times(split, on_step, on_epoch) for split in SPLITS}
        self.on_step = on_step
        self.on_epoch = on_epoch
        self.module = module
        self.n_steps_kl_warmup = n_steps_kl_warmup
        self.n_epochs_kl_warmup = n_epochs_kl_warmup
        self.max_kl_weight = max_kl_weight
        self.min_kl_weight = min_kl_weight
        self.check_finite = check_finite
        self.logs_kl_weight = logs_kl_weight
        self._sums = {split: sums() for split in SPLITS}
        self._last_kl_weight = self.kl_weight
        self._step_index = 0

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
        """The KL weight of the training step under way (logged at the epoch's end).

        Training steps call it first: it also notes the step's index for per-step logging.
        """
        self._step_index = self.global_step
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

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Log the minibatch's training metrics when logging per step."""
        if self._when["train"][0]:
            # The step index makes the history (and other loggers) index these by step.
            self.log("step", float(self._step_index), on_step=True, on_epoch=False)
            self._log_metrics("train", self._sums["train"].compute_last(), step=True)

    def on_validation_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Log the minibatch's validation metrics when logging per step."""
        if self._when["validation"][0]:
            self._log_metrics("validation", self._sums["validation"].compute_last(), step=True)

    def on_train_epoch_end(self) -> None:
        """Log the epoch's training metrics and the KL weight of its last step."""
        if self._when["train"][1]:
            self._log_metrics("train", self._epoch_metrics("train"), step=False)
        if self.logs_kl_weight:
            self.log("kl_weight", self._last_kl_weight, on_step=False, on_epoch=True, batch_size=1)

    def on_validation_epoch_end(self) -> None:
        """Log the validation metrics."""
        if self._when["validation"][1]:
            self._log_metrics("validation", self._epoch_metrics("validation"), step=False)

    def _epoch_metrics(self, split: str) -> dict[str, torch.Tensor]:
        """The epoch's metrics of ``split``, over every process's cells in a distributed fit.

        The sums (not the means) are added across processes, so each rank logs the metrics
        of all the epoch's cells, the same on every rank.
        """
        sums = self._sums[split]
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            sums.sum_across(lambda value: trainer.strategy.reduce(value, reduce_op="sum"))
        return sums.compute()

    def _log_metrics(self, split: str, metrics: dict[str, torch.Tensor], step: bool) -> None:
        per_step, per_epoch = self._when[split]
        suffix = ("_step" if step else "_epoch") if per_step and per_epoch else ""
        for name, value in metrics.items():
            metric = f"{split}_loss" if name == "loss" else f"{name}_{split}"
            self.log(
                metric + suffix,
                value,
                on_step=step,
                on_epoch=not step,
                prog_bar=name == "elbo" and not step,
                batch_size=1,
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


def _logging_times(split: str, on_step: bool | None, on_epoch: bool | None) -> tuple[bool, bool]:
    """Whether ``split`` logs per step and per epoch; refuses a split that would log nothing."""
    default_step, default_epoch = _LIGHTNING_DEFAULTS[split]
    times = (
        default_step if on_step is None else bool(on_step),
        default_epoch if on_epoch is None else bool(on_epoch),
    )
    if not any(times):
        raise ValueError(
            f"on_step={on_step} and on_epoch={on_epoch} would log no {split} metric; set one "
            "of them to True."
        )
    return times
