"""``LoudEarlyStopping``: early stopping that checks its metric, waits, and says why it stopped."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping

from cellvi.train._has_validation import has_validation_data


class LoudEarlyStopping(EarlyStopping):
    """Lightning's ``EarlyStopping``, with a warm-up, a check at setup and a stated reason.

    - It fails at setup when it monitors a ``*validation*`` metric that the fit will never log
      (no validation cells, or validation turned off); without the check that surfaces only
      at the end of the first epoch, as a Lightning error that does not say why.
    - It does not monitor during the first ``warmup_epochs`` epochs: neither stops nor counts
      them towards the best value or the patience.
    - When it stops the fit it keeps the reason (:attr:`early_stopping_reason`) and prints it
      once the fit is over, so the message does not break the progress bar.

    Parameters
    ----------
    warmup_epochs
        Epochs to wait before monitoring.
    **kwargs
        ``EarlyStopping`` arguments: ``monitor``, ``min_delta``, ``patience``, ``mode``, ...
    """

    def __init__(self, warmup_epochs: int = 0, **kwargs: Any) -> None:
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}.")
        super().__init__(**kwargs)
        self.warmup_epochs = warmup_epochs
        self.early_stopping_reason: str | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Raise a ``ValueError`` when a ``*validation*`` metric is monitored without data."""
        if "validation" in self.monitor and not has_validation_data(trainer):
            raise ValueError(
                f"Early stopping monitors {self.monitor!r}, which needs a validation set; give "
                "the data splitter a validation share or monitor a training metric (e.g. "
                "early_stopping_monitor='elbo_train')."
            )
        super().setup(trainer, pl_module, stage)

    def _run_early_stopping_check(self, trainer: pl.Trainer) -> None:
        if trainer.current_epoch < self.warmup_epochs:
            return
        super()._run_early_stopping_check(trainer)

    def _evaluate_stopping_criteria(self, current: torch.Tensor) -> tuple[bool, str | None]:
        should_stop, reason = super()._evaluate_stopping_criteria(current)
        if should_stop:
            self.early_stopping_reason = reason
        return should_stop, reason

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Print why the fit stopped early, if it did."""
        if self.early_stopping_reason is not None:
            print(self.early_stopping_reason)
