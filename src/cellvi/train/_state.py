"""``TrainingState``: what a model knows about its training, in one object."""

from __future__ import annotations

import dataclasses
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
        Logged metrics of every fit, one DataFrame per metric, indexed by epoch (or by step
        for per-step metrics); a later fit appends to it (see :meth:`record_fit`).
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
        """Record a completed fit: its trainer, its split and its logged history.

        The history of a model trained before is extended, not replaced: the new fit's epochs
        are numbered on from the last epoch recorded, and each per-step metric continues
        after its last recorded step.
        """
        fitted = self.fitted(trainer, data_splitter, history, interrupted)
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(fitted, field.name))

    def fitted(
        self,
        trainer: pl.Trainer,
        data_splitter: pl.LightningDataModule,
        history: dict[str, pd.DataFrame],
        interrupted: bool = False,
    ) -> TrainingState:
        """The state this one becomes once the fit is recorded (itself left unchanged).

        Checkpoints taken during a fit record it, so that they load as trained models.
        """
        return TrainingState(
            is_trained=True,
            history=history if not self.is_trained else _appended(self.history, history),
            train_indices=_indices(getattr(data_splitter, "train_idx", None)),
            validation_indices=_indices(getattr(data_splitter, "val_idx", None)),
            test_indices=_indices(getattr(data_splitter, "test_idx", None)),
            trainer=trainer,
            interrupted=interrupted,
        )

    def to_json(self) -> dict[str, Any]:
        """The saved part of the state, as JSON-serialisable data (the trainer is left out)."""
        history = None
        if self.history is not None:
            history = {
                name: {
                    "index": frame.index.tolist(),
                    "index_name": frame.index.name or "epoch",
                    "values": frame.iloc[:, 0].tolist(),
                }
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
                    {name: entry["values"]},
                    index=pd.Index(entry["index"], name=entry.get("index_name", "epoch")),
                )
                for name, entry in history.items()
            },
            train_indices=_indices(data.get("train_indices")),
            validation_indices=_indices(data.get("validation_indices")),
            test_indices=_indices(data.get("test_indices")),
            interrupted=bool(data.get("interrupted", False)),
        )


def _appended(
    before: dict[str, pd.DataFrame] | None, new: dict[str, pd.DataFrame]
) -> dict[str, pd.DataFrame]:
    """``before`` followed by ``new``, with ``new``'s epochs and steps numbered on."""
    before = dict(before or {})
    epoch_offset = _next_index(before, "epoch") - _first_index(new, "epoch")
    for name, frame in new.items():
        frame = frame.copy()
        previous = before.get(name)
        if frame.index.name == "step":
            offset = _next_index({name: previous}, "step") - int(frame.index.min())
        else:
            offset = epoch_offset
        frame.index = pd.Index(frame.index + offset, name=frame.index.name)
        before[name] = frame if previous is None else pd.concat([previous, frame])
    return before


def _next_index(history: dict[str, pd.DataFrame | None], index_name: str) -> int:
    """One past the largest ``index_name`` index in ``history`` (0 when there is none)."""
    ends = [
        int(frame.index.max()) + 1
        for frame in history.values()
        if frame is not None and len(frame) and (frame.index.name or "epoch") == index_name
    ]
    return max(ends, default=0)


def _first_index(history: dict[str, pd.DataFrame], index_name: str) -> int:
    starts = [
        int(frame.index.min())
        for frame in history.values()
        if len(frame) and (frame.index.name or "epoch") == index_name
    ]
    return min(starts, default=0)


def _indices(values: Any) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.int64)


def _as_list(values: np.ndarray | None) -> list[int] | None:
    return None if values is None else np.asarray(values).astype(np.int64).tolist()
