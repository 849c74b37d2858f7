"""Whether a fit will see validation data, known before the first epoch."""

from __future__ import annotations

import lightning.pytorch as pl

_MISSING = object()


def validates(trainer: pl.Trainer) -> bool:
    """Whether ``trainer`` is set to run a validation pass in some epoch of the fit.

    False when validation batches are turned off (``limit_val_batches=0``) or when
    ``check_val_every_n_epoch`` exceeds ``max_epochs`` (:class:`~cellvi.train.Trainer` sets it
    out of reach when nothing asks for validation).
    """
    if trainer.limit_val_batches == 0:
        return False
    every = trainer.check_val_every_n_epoch
    max_epochs = trainer.max_epochs
    return every is None or max_epochs is None or max_epochs < 0 or every <= max_epochs


def has_validation_data(trainer: pl.Trainer) -> bool:
    """Return whether ``trainer`` will run validation batches.

    Judged from :func:`validates` and from the datamodule's ``val_idx`` (set once its
    ``setup`` ran). A fit without a datamodule exposing ``val_idx`` is given the benefit of
    the doubt: Lightning itself reports a missing monitored metric at the end of the first
    epoch.
    """
    if not validates(trainer):
        return False
    val_idx = getattr(trainer.datamodule, "val_idx", _MISSING)
    if val_idx is _MISSING:
        return True
    return val_idx is not None and len(val_idx) > 0
