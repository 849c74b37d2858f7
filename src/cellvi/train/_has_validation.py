"""Whether a fit will see validation data, known before the first epoch."""

from __future__ import annotations

import lightning.pytorch as pl

_MISSING = object()


def has_validation_data(trainer: pl.Trainer) -> bool:
    """Return whether ``trainer`` will run validation batches.

    Judged from the datamodule's ``val_idx`` (set once its ``setup`` ran). A fit without a
    datamodule exposing ``val_idx`` is given the benefit of the doubt: Lightning itself
    reports a missing monitored metric at the end of the first epoch.
    """
    if trainer.limit_val_batches == 0:
        return False
    val_idx = getattr(trainer.datamodule, "val_idx", _MISSING)
    if val_idx is _MISSING:
        return True
    return val_idx is not None and len(val_idx) > 0
