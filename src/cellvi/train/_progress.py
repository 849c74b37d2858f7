"""``ProgressBar``: one bar for the whole fit, advanced once per epoch."""

from __future__ import annotations

import sys
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks.progress import ProgressBar as LightningProgressBar
from tqdm.auto import tqdm


class ProgressBar(LightningProgressBar):
    """A per-epoch progress bar: ``Epoch i/max_epochs``, the time left, the epoch's metrics.

    Lightning's own bar redraws at every minibatch; this one draws once per epoch, which keeps
    notebooks and log files short. It is the default of :class:`~cellvi.train.Trainer`
    (``simple_progress_bar=True``). It shows the metrics logged for the bar (the training and,
    when the fit validates, the validation ELBO) of the epoch just finished, and not
    Lightning's ``v_num`` (the version of a logger run, which a cellvi fit does not have)::

        Epoch 12/50:  24%|██▍       | 12/50 [00:03<00:10, 3.71epoch/s, elbo_train=1234.5,
        elbo_validation=1250.1]

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
        # An epoch whose end was reached but whose metrics Lightning had not collected yet.
        self._pending = False

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
            unit="epoch",
            disable=not self.is_enabled,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        self._pending = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Show the epoch finished before, and name the epoch under way."""
        self._show_finished_epoch(trainer, pl_module)
        self._bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Note the epoch's end; it is drawn once its metrics are in.

        Lightning calls this hook before the training plan's own ``on_train_epoch_end``
        logs the epoch's training metrics, so they are read at the next epoch's start (or
        the end of the fit), which follow at once.
        """
        self._pending = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Show the last epoch and close the bar."""
        self._show_finished_epoch(trainer, pl_module)
        self._bar.close()

    def get_metrics(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> dict[str, int | str | float | dict[str, float]]:
        """The metrics logged for the bar, without Lightning's ``v_num``."""
        return dict(trainer.progress_bar_metrics)

    def _show_finished_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._pending:
            return
        self._pending = False
        # Sorted, so that the training ELBO comes before the validation one.
        metrics = sorted(self.get_metrics(trainer, pl_module).items())
        metrics = {name: _formatted(value) for name, value in metrics}
        self._bar.set_postfix(metrics, refresh=False)
        self._bar.update()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Close the bar of a failed fit."""
        if self._bar is not None:
            self._bar.close()


def _formatted(value: Any) -> Any:
    """A metric as the bar shows it: one decimal (tqdm's default would write 1.23e+03)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.1f}" if abs(value) >= 1 else f"{value:.3g}"
    return value
