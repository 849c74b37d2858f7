"""``TrainingState``: what a model knows about its training, in one object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd


@dataclass
class TrainingState:
    """Whether a model is trained, how, and on which cells; written only by the runner.

    A model holds one (``model.training_state``) and exposes its fields under their
    scvi-tools names (``is_trained_``, ``history_``, ``train_indices``, ...). The runner
    records a finished fit with :meth:`record_fit`; saving and loading go through
    :meth:`to_json` and :meth:`from_json`.

    Attributes
    ----------
    is_trained
        Whether a fit has completed.
    history
        Logged metrics of the last fit, one DataFrame per metric indexed by epoch.
    train_indices, validation_indices, test_indices
        Cells of each split of the last fit.
    trainer
        The Lightning trainer of the last fit (callbacks, optimizers, logged results); not
        saved with the model.
    interrupted
        Whether the last fit was stopped early by Ctrl+C (the model keeps what it learnt).
    """

    is_trained: bool = False
    history: dict[str, pd.DataFrame] | None = None
    train_indices: np.ndarray | None = None
    validation_indices: np.ndarray | None = None
    test_indices: np.ndarray | None = None
    trainer: pl.Trainer | None = None
    interrupted: bool = False

    def record_fit(
        self,
        trainer: pl.Trainer,
        data_splitter: pl.LightningDataModule,
        history: dict[str, pd.DataFrame],
        interrupted: bool = False,
    ) -> None:
        """Record a completed fit: its trainer, its split and its logged history."""
        self.is_trained = True
        self.interrupted = interrupted
        self.train_indices = _indices(getattr(data_splitter, "train_idx", None))
        self.validation_indices = _indices(getattr(data_splitter, "val_idx", None))
        self.test_indices = _indices(getattr(data_splitter, "test_idx", None))
        self.history = history
        self.trainer = trainer

    def to_json(self) -> dict[str, Any]:
        """The saved part of the state, as JSON-serialisable data (the trainer is left out)."""
        history = None
        if self.history is not None:
            history = {
                name: {"index": frame.index.tolist(), "values": frame.iloc[:, 0].tolist()}
                for name, frame in self.history.items()
            }
        return {
            "is_trained_": bool(self.is_trained),
            "train_indices": _as_list(self.train_indices),
            "validation_indices": _as_list(self.validation_indices),
            "test_indices": _as_list(self.test_indices),
            "history_": history,
            "interrupted": bool(self.interrupted),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainingState:
        """Rebuild a state written by :meth:`to_json`."""
        history = data.get("history_")
        return cls(
            is_trained=bool(data.get("is_trained_", False)),
            history=None
            if history is None
            else {
                name: pd.DataFrame(
                    {name: entry["values"]}, index=pd.Index(entry["index"], name="epoch")
                )
                for name, entry in history.items()
            },
            train_indices=_indices(data.get("train_indices")),
            validation_indices=_indices(data.get("validation_indices")),
            test_indices=_indices(data.get("test_indices")),
            interrupted=bool(data.get("interrupted", False)),
        )


def _indices(values: Any) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.int64)


def _as_list(values: np.ndarray | None) -> list[int] | None:
    return None if values is None else np.asarray(values).astype(np.int64).tolist()
