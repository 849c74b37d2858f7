"""``TrainingPlan``: how a module is optimised and what is logged while it is."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

import torch

from cellvi._checks import accepts_any_keyword, check_keywords, keyword_names
from cellvi.train._base_plan import BasePlan
from cellvi.train._epoch_sums import EpochElboSums
from cellvi.train._has_validation import has_validation_data

if TYPE_CHECKING:
    # Types only: importing cellvi.module would load every module implementation.
    from cellvi.module.base import BaseModuleClass, LossOutput

Tensors = dict[str, torch.Tensor]
OptimizerCreator = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]

_OPTIMIZERS = ("Adam", "AdamW", "Custom")
_TERMS = ("reconstruction_loss", "kl_local", "kl_global")
# Arguments of ``module.loss`` the plan itself passes.
_LOSS_INPUTS = {"tensors", "inference_outputs", "generative_outputs", "kl_weight"}


class TrainingPlan(BasePlan):
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
    n_steps_kl_warmup, n_epochs_kl_warmup, max_kl_weight, min_kl_weight
        The KL warm-up (see :class:`BasePlan`): by epochs if ``n_epochs_kl_warmup`` is set
        (the default, 400), else by steps, from ``min_kl_weight`` to ``max_kl_weight``.
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
    on_step, on_epoch
        When metrics are logged: per minibatch, per epoch, or both (see :class:`BasePlan`).
    **loss_kwargs
        Passed to ``module.loss`` on every step; a name that neither this plan nor
        ``module.loss`` takes is refused here, listing the valid names.

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
        on_step: bool | None = False,
        on_epoch: bool | None = True,
        **loss_kwargs: Any,
    ) -> None:
        if optimizer not in _OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {optimizer!r}; use one of {_OPTIMIZERS}.")
        if (optimizer == "Custom") != (optimizer_creator is not None):
            raise ValueError(
                "optimizer='Custom' needs an optimizer_creator, and an optimizer_creator is "
                f"only used with optimizer='Custom' (got optimizer={optimizer!r})."
            )
        if "kl_weight" in loss_kwargs:
            raise ValueError(
                "kl_weight is set by the training plan; use max_kl_weight / min_kl_weight and "
                "the warm-up arguments instead."
            )
        loss_names = keyword_names(module.loss)
        if not accepts_any_keyword(module.loss):
            plan_names = keyword_names(TrainingPlan.__init__) - {"module"}
            check_keywords(loss_kwargs, plan_names | (loss_names - _LOSS_INPUTS), "plan_kwargs")
        loss_takes_kl_weight = "kl_weight" in loss_names
        super().__init__(
            module,
            n_steps_kl_warmup=n_steps_kl_warmup,
            n_epochs_kl_warmup=n_epochs_kl_warmup,
            max_kl_weight=max_kl_weight,
            min_kl_weight=min_kl_weight,
            check_finite=check_finite,
            logs_kl_weight=loss_takes_kl_weight,
            sums=EpochElboSums,
            on_step=on_step,
            on_epoch=on_epoch,
        )
        #: The parameters of ``module.loss`` (``kl_weight`` among them when it is passed).
        self._loss_args = set(inspect.signature(module.loss).parameters)
        self._loss_takes_kl_weight = loss_takes_kl_weight
        self.optimizer_name = optimizer
        self.optimizer_creator = optimizer_creator
        self.lr = lr
        self.weight_decay = weight_decay
        self.eps = eps
        self.reduce_lr_on_plateau = reduce_lr_on_plateau
        self.lr_factor = lr_factor
        self.lr_patience = lr_patience
        self.lr_threshold = lr_threshold
        self.lr_scheduler_metric = lr_scheduler_metric
        self.lr_min = lr_min
        self.loss_kwargs = loss_kwargs

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
        _, _, output = self.forward(batch, loss_kwargs=self._loss_kwargs(self.step_kl_weight()))
        self.raise_if_not_finite(output.loss, lambda: _non_finite(output))
        self.sums("train").update_from(output)
        return output.loss

    def validation_step(self, batch: Tensors, batch_idx: int) -> None:
        """Add a validation minibatch's loss terms to the epoch sums (run without gradients)."""
        _, _, output = self.forward(batch, loss_kwargs=self._loss_kwargs(self.kl_weight))
        self.sums("validation").update_from(output)

    def make_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """Adam or AdamW with this plan's settings, or the custom optimizer."""
        if self.optimizer_name == "Custom":
            return self.optimizer_creator(params)
        return _adam(
            self.optimizer_name, params, lr=self.lr, eps=self.eps, weight_decay=self.weight_decay
        )

    def with_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        """The optimizer, with the plateau scheduler when ``reduce_lr_on_plateau``."""
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
