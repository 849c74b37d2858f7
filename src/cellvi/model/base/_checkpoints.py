"""``CheckpointMixin``: how a model in training is written and read as checkpoints."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from cellvi.model.base._files import ModelPaths, read_model_files
from cellvi.train import TrainingState


class CheckpointMixin:
    """What :class:`~cellvi.train.SaveCheckpoint` asks of the model it checkpoints.

    A checkpoint is a model folder, written by the model's ``save`` and read by ``load``,
    recording the training state the fit has reached (trained, its history so far and its
    split).
    """

    training_state: TrainingState

    def _save_checkpoint(self, path: str, state: TrainingState) -> None:
        """Save the model to ``path``, with ``state`` as its training state."""
        current = self.training_state
        self.training_state = state
        try:
            self.save(path, overwrite=True)
        finally:
            self.training_state = current

    def _read_checkpoint_weights(self, path: str) -> dict[str, torch.Tensor]:
        """The module weights of the checkpoint at ``path`` (checked as ``load`` checks them)."""
        saved = read_model_files(ModelPaths(Path(path), ""), type(self).__name__, read_adata=False)
        return saved.weights

    def _remove_checkpoint(self, path: str) -> None:
        """Remove the files a checkpoint save wrote at ``path``, and the folder if then empty."""
        paths = ModelPaths(Path(path), "")
        for file in (paths.weights, paths.description):
            file.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the folder holds something else: keep it
            paths.directory.rmdir()
