"""Global, user-facing configuration: ``cellvi.settings``."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("cellvi")


class Settings:
    """Configuration shared by every cellvi model.

    Attributes
    ----------
    seed
        Seed of Python's, NumPy's and torch's random generators; setting it makes a fit
        reproducible. ``None`` leaves the generators alone.
    batch_size
        Minibatch size used by queries when a method is given none.
    dl_num_workers
        Worker processes of the host data loader (0 loads in the main process).
    verbosity
        Logging level of the ``cellvi`` logger (an int or a name such as ``"INFO"``).
    logging_dir
        Directory of training logs and checkpoints (default ``./scvi_log/``, as scvi-tools),
        stored as an absolute path.
    """

    def __init__(self) -> None:
        self._seed: int | None = None
        self.batch_size: int = 128
        self.dl_num_workers: int = 0
        self.logging_dir = "./scvi_log/"
        self._verbosity: int = logging.WARNING
        self.verbosity = logging.WARNING

    @property
    def seed(self) -> int | None:
        """Seed of every random generator cellvi uses."""
        return self._seed

    @seed.setter
    def seed(self, value: int | None) -> None:
        if value is not None:
            if not isinstance(value, int | np.integer) or isinstance(value, bool):
                raise TypeError(f"settings.seed must be an int or None, got {value!r}.")
            seed_everything(int(value))
        self._seed = None if value is None else int(value)

    @property
    def logging_dir(self) -> Path:
        """Directory of training logs and checkpoints."""
        return self._logging_dir

    @logging_dir.setter
    def logging_dir(self, path: str | Path) -> None:
        self._logging_dir = Path(path).resolve()

    @property
    def verbosity(self) -> int:
        """Logging level of the ``cellvi`` logger."""
        return self._verbosity

    @verbosity.setter
    def verbosity(self, level: int | str) -> None:
        if isinstance(level, str):
            numeric = logging.getLevelName(level.upper())
            if not isinstance(numeric, int):
                raise ValueError(
                    f"Unknown verbosity {level!r}; use DEBUG, INFO, WARNING or ERROR."
                )
            level = numeric
        self._verbosity = int(level)
        logger.setLevel(self._verbosity)
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
            logger.addHandler(handler)

    def __repr__(self) -> str:
        return (
            f"cellvi.settings(seed={self.seed}, batch_size={self.batch_size}, "
            f"dl_num_workers={self.dl_num_workers}, "
            f"verbosity={logging.getLevelName(self.verbosity)})"
        )


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


settings = Settings()
