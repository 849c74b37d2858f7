"""Early stopping that checks, before training, that its metric will exist."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping

from cellvi.train._has_validation import has_validation_data


class ValidatedEarlyStopping(EarlyStopping):
    """Lightning's ``EarlyStopping``, failing at setup when it monitors absent validation data.

    Without the check, a validation metric that is never logged surfaces only at the end of
    the first epoch, and as a Lightning error that does not say why.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Raise a ``ValueError`` when a ``*validation*`` metric is monitored without data."""
        if "validation" in self.monitor and not has_validation_data(trainer):
            raise ValueError(
                f"Early stopping monitors {self.monitor!r}, which needs a validation set; give "
                "the data splitter a validation share or monitor a training metric (e.g. "
                "early_stopping_monitor='elbo_train')."
            )
        super().setup(trainer, pl_module, stage)
