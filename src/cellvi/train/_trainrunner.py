"""``TrainRunner``: fit a training plan on a data splitter and record the result on a model."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.loggers import Logger

from cellvi._checks import check_keywords, keyword_names
from cellvi.train._early_stopping import ValidatedEarlyStopping
from cellvi.train._interrupt import StopOnInterrupt
from cellvi.train._logger import HistoryLogger


class TrainRunner:
    """Build a Lightning ``Trainer``, fit, and store the outcome on the model.

    Parameters
    ----------
    model
        The model receiving the results, through its ``training_state``
        (:class:`TrainingState`).
    training_plan
        The LightningModule to fit, usually a :class:`TrainingPlan`.
    data_splitter
        LightningDataModule with ``train_idx``, ``val_idx`` and ``test_idx``.
    max_epochs
        Number of epochs (see :func:`default_max_epochs`).
    accelerator
        Lightning accelerator: ``"auto"``, ``"cpu"``, ``"gpu"``, ``"cuda"``, ...
    devices
        Lightning devices.
    early_stopping
        Stop when ``early_stopping_monitor`` stops improving.
    early_stopping_monitor
        Logged metric to monitor; a ``*_validation`` metric needs a validation set.
    early_stopping_patience
        Epochs without improvement before stopping.
    early_stopping_min_delta
        Smallest change that counts as an improvement.
    early_stopping_mode
        ``"min"`` or ``"max"``.
    enable_progress_bar
        Show Lightning's progress bar.
    **trainer_kwargs
        Further ``lightning.pytorch.Trainer`` arguments (a name the Trainer does not take is
        refused here, listing the valid ones). Checkpointing, the model summary and sanity
        validation steps are off unless given; extra ``callbacks`` and ``logger`` are kept
        beside the runner's own.

    Attributes
    ----------
    trainer
        The Lightning trainer.
    history_logger
        The :class:`HistoryLogger` recording the metrics.
    """

    def __init__(
        self,
        model: Any,
        training_plan: pl.LightningModule,
        data_splitter: pl.LightningDataModule,
        max_epochs: int,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        *,
        early_stopping: bool = False,
        early_stopping_monitor: str = "elbo_validation",
        early_stopping_patience: int = 45,
        early_stopping_min_delta: float = 0.0,
        early_stopping_mode: Literal["min", "max"] = "min",
        enable_progress_bar: bool = True,
        **trainer_kwargs: Any,
    ) -> None:
        check_keywords(trainer_kwargs, _trainer_keywords(), "TrainRunner (Trainer arguments)")
        self.model = model
        self.training_plan = training_plan
        self.data_splitter = data_splitter
        self.history_logger = HistoryLogger()
        self.interrupt = StopOnInterrupt()
        callbacks = [self.interrupt, *(trainer_kwargs.pop("callbacks", None) or [])]
        if early_stopping:
            callbacks.append(
                ValidatedEarlyStopping(
                    monitor=early_stopping_monitor,
                    patience=early_stopping_patience,
                    min_delta=early_stopping_min_delta,
                    mode=early_stopping_mode,
                )
            )
        loggers = [self.history_logger, *_user_loggers(trainer_kwargs.pop("logger", None))]
        trainer_kwargs.setdefault("enable_checkpointing", False)
        trainer_kwargs.setdefault("num_sanity_val_steps", 0)
        trainer_kwargs.setdefault("enable_model_summary", False)
        # Metrics are logged once per epoch, so per-step logging intervals do not apply.
        trainer_kwargs.setdefault("log_every_n_steps", 1)
        self.trainer = pl.Trainer(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            callbacks=callbacks,
            logger=loggers,
            enable_progress_bar=enable_progress_bar,
            **trainer_kwargs,
        )

    def __call__(self) -> None:
        """Fit, then record the fit in the model's ``training_state``.

        The module is left in eval mode on the device it trained on (Lightning itself moves
        it back to the CPU at the end of a fit), so queries run where training ran. A first
        Ctrl+C stops the fit after the step under way and keeps it (see
        :class:`StopOnInterrupt`); a second one raises ``KeyboardInterrupt``.
        """
        # Queries and load leave the module in eval mode and Lightning keeps the mode it finds;
        # without this, a second fit would run without dropout and with frozen batch norm.
        self.training_plan.train()
        try:
            with warnings.catch_warnings(), self.interrupt.catching():
                # cellvi's loaders slice in-memory arrays; worker processes would only add
                # copies.
                warnings.filterwarnings("ignore", message=".*does not have many workers.*")
                self.trainer.fit(self.training_plan, self.data_splitter)
        except SystemExit as error:
            # Lightning exits the process on a KeyboardInterrupt: the second Ctrl+C.
            if self.interrupt.requested:
                raise KeyboardInterrupt from error
            raise
        self.training_plan.eval()
        self.training_plan.module.to(self.trainer.strategy.root_device)
        self.model.training_state.record_fit(
            self.trainer,
            self.data_splitter,
            self.history_logger.history,
            interrupted=self.interrupt.requested,
        )
        if self.interrupt.requested:
            epoch, step = self.interrupt.stopped_at or (self.trainer.current_epoch, "?")
            warnings.warn(
                f"Training was stopped by Ctrl+C at epoch {epoch}, step {step}; the model "
                "keeps the weights learnt so far and its history ends there "
                "(model.training_state.interrupted is True).",
                UserWarning,
                stacklevel=3,
            )


def _user_loggers(logger: bool | Logger | Iterable[Logger] | None) -> list[Logger]:
    """Loggers a caller passed; booleans mean Lightning's default and add none."""
    if logger is None or isinstance(logger, bool):
        return []
    if isinstance(logger, Logger):
        return [logger]
    return list(logger)


def _trainer_keywords() -> set[str]:
    """The arguments ``lightning.pytorch.Trainer`` and the runner itself take."""
    own = keyword_names(TrainRunner.__init__) - {"model", "training_plan", "data_splitter"}
    return keyword_names(pl.Trainer.__init__) | own
