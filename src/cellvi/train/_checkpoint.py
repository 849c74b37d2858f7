"""``SaveCheckpoint``: checkpoints of a model in training, written as loadable model folders."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from cellvi._settings import settings
from cellvi.train._has_validation import has_validation_data
from cellvi.train._state import TrainingState


class CheckpointedModel(Protocol):
    """What :class:`SaveCheckpoint` needs of the model it saves (cellvi's models have it)."""

    def _save_checkpoint(self, path: str, state: TrainingState) -> None:
        """Save the model to ``path`` as a model folder, recording ``state`` as its training."""

    def _read_checkpoint_weights(self, path: str) -> dict[str, torch.Tensor]:
        """The module weights saved in the checkpoint folder ``path`` (validated)."""

    def _remove_checkpoint(self, path: str) -> None:
        """Remove a checkpoint folder this callback wrote (and nothing else)."""


class SaveCheckpoint(ModelCheckpoint):
    """Save the best models of a fit by a monitored metric, as folders ``Model.load`` reads.

    A Lightning ``ModelCheckpoint`` whose checkpoints are whole cellvi model folders
    (``model.save``: weights, setup, and the training so far, marked trained, with its history
    and split), not Lightning ``.ckpt`` files; ``best_model_path`` and ``best_model_score``
    name the best one after the fit. Checkpoints that drop out of the ``save_top_k`` best are
    removed (only the files a save wrote).

    Parameters
    ----------
    dirpath
        Folder of the checkpoints; default ``settings.logging_dir / "<date>_<time>_<monitor>"``.
    filename
        Name of each checkpoint folder, with Lightning's placeholders; default
        ``"{epoch}-{step}-{<monitor>}"``.
    monitor
        Logged metric ranking the checkpoints; a ``*validation*`` metric needs validation
        data (checked when the fit starts).
    load_best_on_end
        Load the best checkpoint's weights into the module when the fit ends.
    check_nan_gradients
        When the fit fails (a non-finite loss, say), say which checkpoint is the best so far.
        ``train()`` then puts the model back as it was before the call, so the checkpoint is
        where the progress made is kept.
    **kwargs
        Other ``ModelCheckpoint`` arguments (``mode``, ``save_top_k``, ``every_n_epochs``,
        ...). ``save_weights_only`` and ``save_last`` do not apply and are ignored, with a
        warning.

    Notes
    -----
    The model's ``train()`` binds the callback to the model it trains (:meth:`bind`); a
    callback used with a bare Lightning ``Trainer`` has no model to save and fails at setup.
    """

    #: Checkpoints are folders, so they carry no file extension.
    FILE_EXTENSION = ""

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str | None = None,
        monitor: str = "validation_loss",
        load_best_on_end: bool = False,
        check_nan_gradients: bool = False,
        **kwargs: Any,
    ) -> None:
        if dirpath is None:
            stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
            dirpath = os.path.join(settings.logging_dir, f"{stamp}_{monitor}")
        if filename is None:
            filename = "{epoch}-{step}-{" + monitor + "}"
        for ignored in ("save_weights_only", "save_last"):
            if ignored in kwargs:
                kwargs.pop(ignored)
                warnings.warn(
                    f"SaveCheckpoint ignores {ignored}: its checkpoints are whole model folders.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        super().__init__(dirpath=dirpath, filename=filename, monitor=monitor, **kwargs)
        self.load_best_on_end = load_best_on_end
        self.check_nan_gradients = check_nan_gradients
        self._model: CheckpointedModel | None = None
        self._state_now: Callable[[], TrainingState] | None = None

    def bind(self, model: CheckpointedModel, state_now: Callable[[], TrainingState]) -> None:
        """Save ``model``; ``state_now`` gives the training state a checkpoint records."""
        self._model = model
        self._state_now = state_now

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Fail before training without a model to save or without the monitored metric."""
        if self._model is None:
            raise RuntimeError(
                "SaveCheckpoint saves the model being trained: use it through a model's "
                "train(callbacks=[...]), which binds it to the model."
            )
        if self.monitor and "validation" in self.monitor and not has_validation_data(trainer):
            raise ValueError(
                f"SaveCheckpoint monitors {self.monitor!r}, which needs a validation set; give "
                "the data splitter a validation share or monitor a training metric."
            )
        super().setup(trainer, pl_module, stage)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        # Every rank holds the same weights; rank 0 writes them, the others wait for the file.
        if trainer.is_global_zero:
            self._model._save_checkpoint(filepath, self._state_now())
        trainer.strategy.barrier("cellvi-checkpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    def _remove_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        if trainer.is_global_zero:
            self._model._remove_checkpoint(filepath)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Load the best checkpoint's weights into the module (``load_best_on_end``)."""
        super().on_train_end(trainer, pl_module)
        if not self.load_best_on_end:
            return
        if not self.best_model_path:
            warnings.warn(
                f"load_best_on_end: no checkpoint was saved ({self.monitor!r} was never "
                "logged), so the model keeps its last weights.",
                UserWarning,
                stacklevel=2,
            )
            return
        weights = self._model._read_checkpoint_weights(self.best_model_path)
        pl_module.module.load_state_dict(weights)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Say where the best checkpoint is when a fit fails (``check_nan_gradients``)."""
        super().on_exception(trainer, pl_module, exception)
        if self.check_nan_gradients and not isinstance(exception, KeyboardInterrupt):
            where = (
                f"the best checkpoint so far is {self.best_model_path}; load it with "
                "Model.load(path, adata=adata)"
                if self.best_model_path
                else "no checkpoint was saved before it"
            )
            warnings.warn(
                f"Training failed ({type(exception).__name__}: {exception}); {where}.",
                UserWarning,
                stacklevel=2,
            )
