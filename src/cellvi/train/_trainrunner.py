"""``TrainRunner``: fit a training plan on a data module and record the result on a model."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import Logger

from cellvi._checks import check_keywords, keyword_names
from cellvi.train._checkpoint import SaveCheckpoint
from cellvi.train._config import KwargsLike, merge_kwargs
from cellvi.train._distributed import lost_process_error
from cellvi.train._interrupt import StopOnInterrupt
from cellvi.train._logger import HistoryLogger
from cellvi.train._state import TrainingState
from cellvi.train._trainer import Trainer

# Set by the runner from its own arguments; a trainer config's values for them are ignored.
_RUNNER_SET = ("max_epochs", "accelerator", "devices")


class TrainRunner:
    """Build a :class:`Trainer`, fit, and store the outcome on the model.

    Parameters
    ----------
    model
        The model receiving the results, through its ``training_state``
        (:class:`TrainingState`).
    training_plan
        The LightningModule to fit, usually a :class:`TrainingPlan`.
    data_splitter
        LightningDataModule to fit on: a ``DataSplitter`` (with ``train_idx``, ``val_idx`` and
        ``test_idx``) or a user's own.
    max_epochs
        Number of epochs (see :func:`default_max_epochs`).
    accelerator
        Lightning accelerator: ``"auto"``, ``"cpu"``, ``"gpu"``, ``"cuda"``, ...
    devices
        Lightning devices.
    trainer_config
        :class:`TrainerConfig` or mapping of :class:`Trainer` arguments, under
        ``trainer_kwargs`` (which win); its ``max_epochs``, ``accelerator`` and ``devices``
        are those given here. A mapping may also hold ``ckpt_path``.
    ckpt_path
        A Lightning checkpoint (``.ckpt``, e.g. of a ``ModelCheckpoint`` callback) to resume
        from: weights, optimizer state and epoch counters; wins over one in ``trainer_config``.
    **trainer_kwargs
        :class:`Trainer` and ``lightning.pytorch.Trainer`` arguments (a name neither takes is
        refused here, listing the valid ones). Extra ``callbacks`` and ``logger`` are kept
        beside the runner's own; a plan with ``reduce_lr_on_plateau`` adds the learning-rate
        monitor.

    Attributes
    ----------
    trainer
        The :class:`Trainer`.
    history_logger
        The :class:`HistoryLogger` recording the metrics.
    """

    _trainer_cls = Trainer

    def __init__(
        self,
        model: Any,
        training_plan: pl.LightningModule,
        data_splitter: pl.LightningDataModule,
        max_epochs: int,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        trainer_config: KwargsLike | None = None,
        ckpt_path: str | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        trainer_kwargs = merge_kwargs(trainer_config, trainer_kwargs, name="trainer")
        # As in scvi-tools, a trainer config (or mapping) may name the checkpoint to resume.
        config_ckpt_path = trainer_kwargs.pop("ckpt_path", None)
        ckpt_path = config_ckpt_path if ckpt_path is None else ckpt_path
        if ckpt_path is not None and os.path.isdir(ckpt_path):
            raise ValueError(
                f"ckpt_path {ckpt_path!r} is a folder, such as a model that SaveCheckpoint or "
                "save() wrote: resume from a Lightning .ckpt file, or load the folder with "
                "Model.load(path, adata=adata) and train the loaded model."
            )
        for name in _RUNNER_SET:
            trainer_kwargs.pop(name, None)
        valid = keyword_names(self._trainer_cls.__init__) | keyword_names(pl.Trainer.__init__)
        check_keywords(trainer_kwargs, valid, "TrainRunner (Trainer arguments)")
        self.model = model
        self.training_plan = training_plan
        self.data_splitter = data_splitter
        self.ckpt_path = ckpt_path
        self.history_logger = HistoryLogger()
        self.interrupt = StopOnInterrupt()
        if getattr(training_plan, "reduce_lr_on_plateau", False):
            trainer_kwargs["learning_rate_monitor"] = True
        callbacks = [self.interrupt, *(trainer_kwargs.pop("callbacks", None) or [])]
        loggers = [self.history_logger, *_user_loggers(trainer_kwargs.pop("logger", None))]
        self.trainer = self._trainer_cls(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            callbacks=callbacks,
            logger=loggers,
            **trainer_kwargs,
        )
        for callback in self.trainer.callbacks:
            if isinstance(callback, SaveCheckpoint):
                callback.bind(model, self.fitted_state)

    def fitted_state(self) -> TrainingState:
        """The model's training state as it would be if the fit ended now (for checkpoints)."""
        return self.model.training_state.fitted(
            self.trainer, self.data_splitter, self.history_logger.history
        )

    def __call__(self) -> None:
        """Fit, then record the fit in the model's ``training_state``.

        The module is left in eval mode on the device it trained on (Lightning itself moves
        it back to the CPU at the end of a fit), so queries run where training ran. A first
        Ctrl+C stops the fit after the step under way and keeps it (see
        :class:`StopOnInterrupt`); a second one raises ``KeyboardInterrupt``.
        """
        if hasattr(self.training_plan, "n_obs_training") and hasattr(
            self.data_splitter, "n_train"
        ):
            self.training_plan.n_obs_training = self.data_splitter.n_train
        # Queries and load leave the module in eval mode and Lightning keeps the mode it finds;
        # without this, a second fit would run without dropout and with frozen batch norm.
        self.training_plan.train()
        try:
            with self.interrupt.catching():
                self.trainer.fit(self.training_plan, self.data_splitter, ckpt_path=self.ckpt_path)
        except SystemExit as error:
            # Lightning exits the process on a KeyboardInterrupt: the second Ctrl+C.
            if self.interrupt.requested:
                raise KeyboardInterrupt from error
            raise
        except RuntimeError as error:
            lost = lost_process_error(error, self.trainer.world_size)
            if lost is None:
                raise
            raise lost from error
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
