"""``ProgressBar``: one bar for the whole fit, advanced once per epoch."""

from __future__ import annotations

import sys
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks.progress import ProgressBar as LightningProgressBar
from tqdm.auto import tqdm


class ProgressBar(LightningProgressBar):
    """A per-epoch progress bar: ``Epoch i/max_epochs``, with the epoch's logged metrics.

    Lightning's own bar redraws at every minibatch; this one draws once per epoch, which keeps
    notebooks and log files short. It is the default of :class:`~cellvi.train.Trainer`
    (``simple_progress_bar=True``).

    Parameters
    ----------
    refresh_rate
        1 draws every epoch, 0 hides the bar.
    """

    def __init__(self, refresh_rate: int = 1) -> None:
        if refresh_rate not in (0, 1):
            raise ValueError(
                f"progress_bar_refresh_rate must be 0 (no bar) or 1 (every epoch), got "
                f"{refresh_rate}."
            )
        super().__init__()
        self._enabled = refresh_rate == 1
        self._bar: Any = None

    @property
    def is_enabled(self) -> bool:
        """Whether the bar is drawn."""
        return self._enabled

    def disable(self) -> None:
        """Hide the bar (Lightning calls this on processes other than the first)."""
        self._enabled = False

    def enable(self) -> None:
        """Draw the bar."""
        self._enabled = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Open the bar over the fit's epochs."""
        self._bar = tqdm(
            total=trainer.max_epochs,
            initial=trainer.current_epoch,
            desc="Training",
            disable=not self.is_enabled,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Name the epoch under way."""
        self._bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Advance by one epoch and show its metrics."""
        self._bar.update()
        self._bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Close the bar."""
        self._bar.close()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Close the bar of a failed fit."""
        if self._bar is not None:
            self._bar.close()
