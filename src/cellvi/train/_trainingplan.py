"""``TrainingPlan``: how a module is optimised and what is logged while it is."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

import lightning.pytorch as pl
import torch

from cellvi.train._epoch_sums import EpochElboSums
from cellvi.train._errors import NonFiniteLossError
from cellvi.train._has_validation import has_validation_data
from cellvi.train._kl_weight import compute_kl_weight

if TYPE_CHECKING:
    # Types only: importing cellvi.module would load every module implementation.
    from cellvi.module.base import BaseModuleClass, LossOutput

Tensors = dict[str, torch.Tensor]
OptimizerCreator = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]

_OPTIMIZERS = ("Adam", "AdamW", "Custom")
_TERMS = ("reconstruction_loss", "kl_local", "kl_global")


class TrainingPlan(pl.LightningModule):
    """Train a module by minimising its loss, with KL warm-up and per-epoch ELBO metrics.

    Parameters
    ----------
    module
        The module to train; its ``forward`` returns ``(inference, generative, LossOutput)``.
    optimizer
        ``"Adam"``, ``"AdamW"``, or ``"Custom"`` (built by ``optimizer_creator``).
    optimizer_creator
        Callable mapping the trainable parameters to an optimizer; only with ``"Custom"``.
    lr
        Learning rate of Adam/AdamW.
    weight_decay
        Weight decay of Adam/AdamW.
    eps
        ``eps`` of Adam/AdamW (large by default: it stabilises early VAE training).
    n_steps_kl_warmup
        Optimizer steps over which the KL weight rises; takes precedence over epochs.
    n_epochs_kl_warmup
        Epochs over which the KL weight rises (``None`` for both: constant ``max_kl_weight``).
    max_kl_weight
        KL weight after the warm-up.
    min_kl_weight
        KL weight at the start of the warm-up.
    reduce_lr_on_plateau
        Multiply the learning rate by ``lr_factor`` when ``lr_scheduler_metric`` stalls.
    lr_factor
        Factor of each learning-rate reduction.
    lr_patience
        Epochs without improvement before a reduction.
    lr_threshold
        Smallest decrease of the metric (absolute) that counts as an improvement.
    lr_scheduler_metric
        Logged metric the scheduler monitors; a ``*_validation`` metric needs validation data.
    lr_min
        Floor of the learning rate.
    check_finite
        Raise :class:`NonFiniteLossError` when a training loss is NaN/Inf, before the optimizer
        step, so the weights are never corrupted. It costs one scalar device-to-host readback
        per training step (free on CPU; on a GPU the host waits for the step's forward pass).
    **loss_kwargs
        Passed to ``module.loss`` on every step.

    Notes
    -----
    The KL weight is passed to ``module.loss`` as ``kl_weight`` only when that method declares
    a ``kl_weight`` parameter. Metrics logged once per epoch, for ``split`` in ``train`` and
    ``validation``: ``elbo_{split}``, ``reconstruction_loss_{split}``, ``kl_local_{split}``,
    ``kl_global_{split}``, ``{split}_loss`` (see :class:`EpochElboSums`), and ``kl_weight`` of the
    epoch's last step when the module takes one.
    """

    def __init__(
        self,
        module: BaseModuleClass,
        *,
        optimizer: Literal["Adam", "AdamW", "Custom"] = "Adam",
        optimizer_creator: OptimizerCreator | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        eps: float = 0.01,
        n_steps_kl_warmup: int | None = None,
        n_epochs_kl_warmup: int | None = 400,
        max_kl_weight: float = 1.0,
        min_kl_weight: float = 0.0,
        reduce_lr_on_plateau: bool = False,
        lr_factor: float = 0.6,
        lr_patience: int = 30,
        lr_threshold: float = 0.0,
        lr_scheduler_metric: str = "elbo_validation",
        lr_min: float = 0.0,
        check_finite: bool = True,
        **loss_kwargs: Any,
    ) -> None:
        super().__init__()
        if optimizer not in _OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {optimizer!r}; use one of {_OPTIMIZERS}.")
        if (optimizer == "Custom") != (optimizer_creator is not None):
            raise ValueError(
                "optimizer='Custom' needs an optimizer_creator, and an optimizer_creator is "
                f"only used with optimizer='Custom' (got optimizer={optimizer!r})."
            )
        if min_kl_weight > max_kl_weight:
            raise ValueError(
                f"min_kl_weight ({min_kl_weight}) must not exceed max_kl_weight ({max_kl_weight})."
            )
        if "kl_weight" in loss_kwargs:
            raise ValueError(
                "kl_weight is set by the training plan; use max_kl_weight / min_kl_weight and "
                "the warm-up arguments instead."
            )
        self.module = module
        self.optimizer_name = optimizer
        self.optimizer_creator = optimizer_creator
        self.lr = lr
        self.weight_decay = weight_decay
        self.eps = eps
        self.n_steps_kl_warmup = n_steps_kl_warmup
        self.n_epochs_kl_warmup = n_epochs_kl_warmup
        self.max_kl_weight = max_kl_weight
        self.min_kl_weight = min_kl_weight
        self.reduce_lr_on_plateau = reduce_lr_on_plateau
        self.lr_factor = lr_factor
        self.lr_patience = lr_patience
        self.lr_threshold = lr_threshold
        self.lr_scheduler_metric = lr_scheduler_metric
        self.lr_min = lr_min
        self.check_finite = check_finite
        self.loss_kwargs = loss_kwargs
        self._loss_takes_kl_weight = "kl_weight" in inspect.signature(module.loss).parameters
        self._train_sums = EpochElboSums()
        self._validation_sums = EpochElboSums()
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

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the module's forward pass."""
        return self.module(*args, **kwargs)

    def _loss_kwargs(self, kl_weight: float) -> dict[str, Any]:
        if not self._loss_takes_kl_weight:
            return self.loss_kwargs
        return {**self.loss_kwargs, "kl_weight": kl_weight}

    def setup(self, stage: str) -> None:
        """Fail before training when the LR scheduler monitors absent validation metrics."""
        if (
            stage == "fit"
            and self.reduce_lr_on_plateau
            and "validation" in self.lr_scheduler_metric
            and not has_validation_data(self.trainer)
        ):
            raise ValueError(
                f"reduce_lr_on_plateau monitors {self.lr_scheduler_metric!r}, which needs a "
                "validation set; give the data splitter a validation share or monitor a "
                "training metric (e.g. lr_scheduler_metric='elbo_train')."
            )

    def training_step(self, batch: Tensors, batch_idx: int) -> torch.Tensor:
        """Compute the loss of a training minibatch and add its terms to the epoch sums."""
        self._last_kl_weight = self.kl_weight
        _, _, output = self.forward(batch, loss_kwargs=self._loss_kwargs(self._last_kl_weight))
        if self.check_finite and not torch.isfinite(output.loss):
            raise NonFiniteLossError(self.global_step, self.current_epoch, _non_finite(output))
        self._train_sums.update(output)
        return output.loss

    def validation_step(self, batch: Tensors, batch_idx: int) -> None:
        """Add a validation minibatch's loss terms to the epoch sums (run without gradients)."""
        _, _, output = self.forward(batch, loss_kwargs=self._loss_kwargs(self.kl_weight))
        self._validation_sums.update(output)

    def on_train_epoch_start(self) -> None:
        """Start the epoch's training sums from zero."""
        self._train_sums.reset()

    def on_validation_epoch_start(self) -> None:
        """Start the validation sums from zero."""
        self._validation_sums.reset()

    def on_train_epoch_end(self) -> None:
        """Log the epoch's training metrics and the KL weight of its last step."""
        self._log_epoch(self._train_sums, "train")
        if self._loss_takes_kl_weight:
            self.log("kl_weight", self._last_kl_weight, on_step=False, on_epoch=True, batch_size=1)

    def on_validation_epoch_end(self) -> None:
        """Log the validation metrics."""
        self._log_epoch(self._validation_sums, "validation")

    def _log_epoch(self, sums: EpochElboSums, split: str) -> None:
        for name, value in sums.compute().items():
            metric = f"{split}_loss" if name == "loss" else f"{name}_{split}"
            self.log(
                metric, value, on_step=False, on_epoch=True, prog_bar=name == "elbo", batch_size=1
            )

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        """Build the optimizer over trainable parameters, and the plateau scheduler if asked."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        if self.optimizer_name == "Custom":
            optimizer = self.optimizer_creator(params)
        else:
            optimizer = _adam(
                self.optimizer_name,
                params,
                lr=self.lr,
                eps=self.eps,
                weight_decay=self.weight_decay,
            )
        if not self.reduce_lr_on_plateau:
            return optimizer
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="min",
            factor=self.lr_factor,
            patience=self.lr_patience,
            threshold=self.lr_threshold,
            threshold_mode="abs",
            min_lr=self.lr_min,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.lr_scheduler_metric},
        }


def _adam(name: str, params: list[torch.nn.Parameter], **kwargs: float) -> torch.optim.Optimizer:
    """Adam or AdamW, with the fused kernel where the parameters' device has one.

    The fused update does in one kernel per step what the default does in about ten small
    ones per parameter tensor; it is the same algorithm.
    """
    optimizer_cls = getattr(torch.optim, name)
    try:
        return optimizer_cls(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):
        return optimizer_cls(params, **kwargs)


def _non_finite(output: LossOutput) -> list[str]:
    """Name the non-finite terms of a loss output (called only once a loss is non-finite)."""
    return [
        f"{term}[{key!r}]"
        for term in _TERMS
        for key, value in getattr(output, term).items()
        if not torch.isfinite(value).all()
    ]
