"""``SemiSupervisedTrainingPlan``: the ELBO of every cell plus a classifier of labeled cells."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch

from cellvi._checks import check_positive_int
from cellvi.train._constants import METRIC_KEYS
from cellvi.train._epoch_sums import EpochSums
from cellvi.train._trainingplan import TrainingPlan, _non_finite

if TYPE_CHECKING:
    from cellvi.module.base import BaseModuleClass, LossOutput

Tensors = dict[str, torch.Tensor]
#: Confidence bins of the expected calibration error (torchmetrics' default).
N_CALIBRATION_BINS = 15


class SemiSupervisedTrainingPlan(TrainingPlan):
    """Train a module on all cells and, at each step, its classifier on labeled cells too.

    A training or validation minibatch is either a pair ``(cells, labeled cells)``, as
    :class:`~cellvi.dataloaders.SemiSupervisedDataLoader` serves it, or one dict of cells
    when no cell is labeled. The module's loss receives the labeled cells as
    ``labelled_tensors`` with ``classification_ratio``, the weight of its classification loss
    (so :class:`~cellvi.module.SCANVAE`'s total is ``ELBO + classification_ratio * CE``).

    Parameters
    ----------
    module
        The module; its ``loss`` takes ``labelled_tensors`` and ``classification_ratio`` and
        returns the classifier's ``logits`` and ``true_labels`` in its :class:`LossOutput`.
    n_classes
        Number of classes of the classifier.
    classification_ratio
        Weight of the classification loss in the minimised loss.
    lr, weight_decay, n_steps_kl_warmup, n_epochs_kl_warmup, reduce_lr_on_plateau, lr_factor,
    lr_patience, lr_threshold, lr_scheduler_metric
        As in :class:`TrainingPlan`.
    **loss_kwargs
        Further :class:`TrainingPlan` arguments (``optimizer``, ``max_kl_weight``,
        ``on_step``, ...) and keyword arguments of ``module.loss``.

    Notes
    -----
    Besides :class:`TrainingPlan`'s metrics, each epoch logs, over the labeled cells it
    classified, ``{split}_classification_loss`` (mean cross-entropy), ``{split}_accuracy``,
    ``{split}_f1_score`` (micro-averaged, which for one label per cell equals the accuracy)
    and ``{split}_calibration_error`` (expected calibration error of the top class, 15 equal
    confidence bins, L1), for ``split`` in ``train`` and ``validation``. They are epoch-wide
    figures, accumulated on the device, not means of per-minibatch ones; an epoch without
    labeled cells logs none of them.
    """

    def __init__(
        self,
        module: BaseModuleClass,
        n_classes: int,
        *,
        classification_ratio: float = 50,
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        n_steps_kl_warmup: int | None = None,
        n_epochs_kl_warmup: int | None = 400,
        reduce_lr_on_plateau: bool = False,
        lr_factor: float = 0.6,
        lr_patience: int = 30,
        lr_threshold: float = 0.0,
        lr_scheduler_metric: Literal[
            "elbo_validation", "reconstruction_loss_validation", "kl_local_validation"
        ] = "elbo_validation",
        **loss_kwargs: Any,
    ) -> None:
        for name in ("labelled_tensors", "classification_ratio"):
            if name in loss_kwargs:
                raise ValueError(f"{name} is set by the semi-supervised plan itself.")
        super().__init__(
            module,
            lr=lr,
            weight_decay=weight_decay,
            n_steps_kl_warmup=n_steps_kl_warmup,
            n_epochs_kl_warmup=n_epochs_kl_warmup,
            reduce_lr_on_plateau=reduce_lr_on_plateau,
            lr_factor=lr_factor,
            lr_patience=lr_patience,
            lr_threshold=lr_threshold,
            lr_scheduler_metric=lr_scheduler_metric,
            **loss_kwargs,
        )
        self.n_classes = check_positive_int("n_classes", n_classes)
        self.classification_ratio = classification_ratio
        self.loss_kwargs = {**self.loss_kwargs, "classification_ratio": classification_ratio}
        self._classification = {split: ClassificationSums() for split in ("train", "validation")}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Loss of a minibatch of cells and, when given, of labeled cells; add their metrics."""
        output = self._step(batch, self.step_kl_weight())
        self.raise_if_not_finite(output.loss, lambda: _non_finite(output))
        self.sums("train").update_from(output)
        self._classification["train"].update_from(output)
        return output.loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Add a validation minibatch's loss terms and classification metrics to the sums."""
        output = self._step(batch, self.kl_weight)
        self.sums("validation").update_from(output)
        self._classification["validation"].update_from(output)

    def _step(self, batch: Any, kl_weight: float) -> LossOutput:
        cells, labeled = _split_batch(batch)
        loss_kwargs = {**self._loss_kwargs(kl_weight), "labelled_tensors": labeled}
        _, _, output = self.forward(cells, loss_kwargs=loss_kwargs)
        return output

    # Classification metrics ----------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        """Start the epoch's sums, classification ones included, from zero."""
        super().on_train_epoch_start()
        self._classification["train"].reset()

    def on_validation_epoch_start(self) -> None:
        """Start the validation sums, classification ones included, from zero."""
        super().on_validation_epoch_start()
        self._classification["validation"].reset()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Log the minibatch's metrics when logging per step."""
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self._when["train"][0]:
            self._log_classification("train", step=True)

    def on_validation_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Log the validation minibatch's metrics when logging per step."""
        super().on_validation_batch_end(outputs, batch, batch_idx, dataloader_idx)
        if self._when["validation"][0]:
            self._log_classification("validation", step=True)

    def on_train_epoch_end(self) -> None:
        """Log the epoch's training metrics, classification ones included."""
        super().on_train_epoch_end()
        if self._when["train"][1]:
            self._log_classification("train", step=False)

    def on_validation_epoch_end(self) -> None:
        """Log the epoch's validation metrics, classification ones included."""
        super().on_validation_epoch_end()
        if self._when["validation"][1]:
            self._log_classification("validation", step=False)

    def _log_classification(self, split: str, step: bool) -> None:
        sums = self._classification[split]
        metrics = sums.compute_last() if step else sums.compute()
        per_step, per_epoch = self._when[split]
        suffix = ("_step" if step else "_epoch") if per_step and per_epoch else ""
        for name, value in metrics.items():
            self.log(
                f"{split}_{name}{suffix}", value, on_step=step, on_epoch=not step, batch_size=1
            )


class ClassificationSums(EpochSums):
    """A classifier's loss, accuracy and calibration over one epoch of labeled cells.

    Each minibatch adds its labeled cells' cross-entropy, correct predictions and, per
    confidence bin, the sum of confidences minus correct predictions; ``compute`` divides by
    the labeled cells. Minibatches without a classification loss add nothing.
    """

    def update_from(self, output: LossOutput) -> None:
        """Add the labeled cells of one minibatch's loss output."""
        if output.classification_loss is None:
            return
        logits = output.logits.detach()
        true_labels = output.true_labels.reshape(-1).long()
        n_labeled = int(true_labels.shape[0])
        probabilities = torch.softmax(logits.float(), dim=-1)
        confidence, predicted = probabilities.max(dim=-1)
        correct = (predicted == true_labels).float()
        bins = (confidence * N_CALIBRATION_BINS).long().clamp_(max=N_CALIBRATION_BINS - 1)
        gap = torch.zeros(N_CALIBRATION_BINS, device=logits.device).index_add_(
            0, bins, confidence - correct
        )
        self.update(
            n_labeled,
            {
                METRIC_KEYS.CLASSIFICATION_LOSS_KEY: output.classification_loss * n_labeled,
                "correct": correct.sum(),
                "gap": gap,
            },
        )

    def compute(self) -> dict[str, torch.Tensor]:
        """Mean cross-entropy, accuracy, micro F1 and calibration error (empty if no cell)."""
        sums = super().compute()
        if not sums:
            return sums
        accuracy = sums["correct"]
        return {
            METRIC_KEYS.CLASSIFICATION_LOSS_KEY: sums[METRIC_KEYS.CLASSIFICATION_LOSS_KEY],
            METRIC_KEYS.ACCURACY_KEY: accuracy,
            METRIC_KEYS.F1_SCORE_KEY: accuracy,
            METRIC_KEYS.CALIBRATION_ERROR_KEY: sums["gap"].abs().sum(),
        }


def _split_batch(batch: Any) -> tuple[Tensors, Tensors | None]:
    """``(cells, labeled cells)`` of a semi-supervised minibatch; a lone dict has no labeled."""
    if isinstance(batch, list | tuple):
        if len(batch) != 2:
            raise ValueError(
                "A semi-supervised minibatch is (cells, labeled cells) or one dict of cells; "
                f"got a sequence of {len(batch)}."
            )
        return batch[0], batch[1]
    return batch, None
