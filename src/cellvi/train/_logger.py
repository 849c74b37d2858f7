"""``HistoryLogger``: keep every logged metric in memory, one table per metric."""

from __future__ import annotations

from argparse import Namespace
from typing import Any

import pandas as pd
from lightning.pytorch.loggers import Logger


class HistoryLogger(Logger):
    """A Lightning logger that records metrics in memory and writes no files.

    Lightning attaches the epoch to the metrics it logs once per epoch and to those of
    training steps, unless a step index is logged with them as ``"step"`` (cellvi's plans do
    so for their per-step metrics, see ``on_step``); validation steps and callbacks such as
    ``LearningRateMonitor`` pass a step instead. So each metric is indexed by the epoch when
    one is given, else by the step, and its table's index is named ``"epoch"`` or ``"step"``
    accordingly. A metric logged twice at one index keeps its last value.
    """

    def __init__(self) -> None:
        super().__init__()
        self._records: dict[str, dict[int, float]] = {}
        self._index_names: dict[str, str] = {}

    @property
    def name(self) -> str:
        """Name of the logger."""
        return "cellvi"

    @property
    def version(self) -> int:
        """Version of the run (a single in-memory run)."""
        return 0

    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        """Ignore hyperparameters: models record their own initialisation parameters."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record metrics at their epoch, or at ``step`` when no epoch comes with them."""
        metrics = dict(metrics)
        if "epoch" in metrics:
            index_name, index = "epoch", int(metrics.pop("epoch"))
        else:
            index_name, index = "step", int(step if step is not None else 0)
        for name, value in metrics.items():
            self._records.setdefault(name, {})[index] = float(value)
            self._index_names.setdefault(name, index_name)

    @property
    def history(self) -> dict[str, pd.DataFrame]:
        """Logged metrics, one DataFrame per metric, one column named as it."""
        tables = {}
        for name, values in self._records.items():
            index = pd.Index(sorted(values), name=self._index_names[name])
            tables[name] = pd.DataFrame({name: [values[i] for i in index]}, index=index)
        return tables
