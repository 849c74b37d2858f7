"""``HistoryLogger``: keep every logged metric in memory, one table per metric."""

from __future__ import annotations

from argparse import Namespace
from typing import Any

import pandas as pd
from lightning.pytorch.loggers import Logger


class HistoryLogger(Logger):
    """A Lightning logger that records metrics in memory and writes no files.

    Each metric is indexed by the epoch Lightning attaches to every logged dict (by the step
    when a caller passes none); a metric logged twice in an epoch keeps its last value.
    """

    def __init__(self) -> None:
        super().__init__()
        self._records: dict[str, dict[int, float]] = {}

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
        """Record the metrics of one epoch (or of ``step`` when no epoch is given)."""
        metrics = dict(metrics)
        epoch = int(metrics.pop("epoch", step if step is not None else 0))
        for name, value in metrics.items():
            self._records.setdefault(name, {})[epoch] = float(value)

    @property
    def history(self) -> dict[str, pd.DataFrame]:
        """Logged metrics, one DataFrame per metric, indexed by epoch, one column named as it."""
        tables = {}
        for name, values in self._records.items():
            index = pd.Index(sorted(values), name="epoch")
            tables[name] = pd.DataFrame({name: [values[i] for i in index]}, index=index)
        return tables
