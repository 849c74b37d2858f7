"""``Trainer``: Lightning's trainer with the defaults and options of scvi-tools' models."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor
from lightning.pytorch.loggers import Logger

from cellvi._settings import settings
from cellvi.train._checkpoint import SaveCheckpoint
from cellvi.train._early_stopping import LoudEarlyStopping
from cellvi.train._logger import HistoryLogger
from cellvi.train._progress import ProgressBar

# Lightning warnings that say nothing about a cellvi fit: loaders slice in-memory arrays (no
# worker processes needed), fits without validation data, shuffled validation loaders.
_QUIET = (
    ".*does not have many workers.*",
    "The dataloader,.*",
    ".*you defined a `?validation_step`? but have no `?val_dataloader`?.*",
    ".*One of given dataloaders is None and it will be skipped.*",
    ".*Your `val_dataloader`'s sampler has shuffling enabled.*",
    # The plans add epoch sums across processes themselves (BasePlan._epoch_metrics).
    ".*when logging on epoch level in distributed setting.*",
    # accelerator="cpu" on a GPU machine is a choice, not an oversight.
    ".*GPU available but not used.*",
)
# Lightning's warning that per-step metrics are logged less often than there are steps; it
# is held back when the plan logs per epoch only (cellvi's default), where it means nothing.
_STEP_LOGGING = ".*smaller than the logging interval.*"
# Lightning's own loggers: its device summary, "`Trainer.fit` stopped", its advertising tips.
_LIGHTNING_LOGGERS = (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "pytorch_lightning",
    "lightning_fabric",
)
# Modules whose deprecation warnings a cellvi user can do nothing about.
_THIRD_PARTY = (
    r"(lightning|pytorch_lightning|lightning_fabric|lightning_utilities|torch|torchmetrics)(\.|$)"
)
_DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


class _NoTips(logging.Filter):
    """Drop Lightning's advertising tips ("💡 Tip: ... try installing litlogger")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith("💡")


@contextlib.contextmanager
def quiet_lightning(logs_per_step: bool = True) -> Iterator[None]:
    """Hold back what Lightning prints that says nothing about a cellvi fit, for one call.

    ``cellvi.settings.verbosity`` decides: at ``WARNING`` (the default) and above, Lightning's
    info lines (device summary, "`Trainer.fit` stopped", tips) and the deprecation warnings
    raised inside Lightning and torch are hidden; at ``INFO`` the info lines are shown but the
    tips are not; at ``DEBUG`` everything is shown. Warnings that concern the user's own code
    or data are always shown. Logger levels and warning filters are restored on exit, so the
    user's own settings are never changed.
    """
    verbosity = settings.verbosity
    tips = _NoTips()
    tip_loggers = _rank_zero_loggers() if verbosity > logging.DEBUG else []
    levels = {}
    if verbosity > logging.INFO:
        for name in _LIGHTNING_LOGGERS:
            lightning_logger = logging.getLogger(name)
            levels[name] = lightning_logger.level
            if lightning_logger.getEffectiveLevel() < logging.WARNING:
                lightning_logger.setLevel(logging.WARNING)
    for tip_logger in tip_loggers:
        tip_logger.addFilter(tips)
    try:
        with warnings.catch_warnings():
            for message in _QUIET:
                warnings.filterwarnings("ignore", message=message)
            if not logs_per_step:
                warnings.filterwarnings("ignore", message=_STEP_LOGGING)
            if verbosity > logging.DEBUG:
                for category in _DEPRECATIONS:
                    warnings.filterwarnings("ignore", category=category, module=_THIRD_PARTY)
            yield
    finally:
        for tip_logger in tip_loggers:
            tip_logger.removeFilter(tips)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _rank_zero_loggers() -> list[logging.Logger]:
    """The loggers Lightning's ``rank_zero_info`` writes to (whichever package set it)."""
    names = [
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning_utilities.core.rank_zero",
    ]
    found = [logging.getLogger(name) for name in names]
    try:
        from lightning_utilities.core import rank_zero

        found.append(rank_zero.log)
    except (ImportError, AttributeError):  # pragma: no cover - an older lightning_utilities
        pass
    return list({id(item): item for item in found}.values())


def _logs_per_step(plan: Any) -> bool:
    """Whether a training plan logs per-step metrics (True when it cannot tell)."""
    when = getattr(plan, "_when", None)
    if not isinstance(when, dict):
        return True
    return any(times[0] for times in when.values())


class Trainer(pl.Trainer):
    """A ``lightning.pytorch.Trainer`` set up for cellvi's models.

    Parameters
    ----------
    accelerator, devices
        Where to train (Lightning's names: ``"auto"``, ``"cpu"``, ``"gpu"``, ...).
    benchmark
        Let cuDNN pick its fastest kernels (inputs have a fixed size).
    check_val_every_n_epoch
        Validate every this many epochs. ``None``: never, unless early stopping (this
        option or an ``EarlyStopping`` in ``callbacks``), checkpointing or the learning-rate
        monitor need validation metrics, in which case every epoch.
    max_epochs
        Epochs to train for.
    default_root_dir
        Folder of Lightning's own outputs; default ``settings.logging_dir``.
    enable_checkpointing
        Add a :class:`SaveCheckpoint` monitoring ``checkpointing_monitor`` (unless
        ``callbacks`` hold one; then it is on whatever this says).
    checkpointing_monitor
        Metric of the added :class:`SaveCheckpoint`.
    num_sanity_val_steps
        Validation steps run before training (none by default).
    enable_model_summary
        Print Lightning's summary of the module.
    early_stopping
        Add a :class:`LoudEarlyStopping` with the ``early_stopping_*`` settings.
    early_stopping_monitor, early_stopping_min_delta, early_stopping_patience
        Metric it monitors, smallest change counted as an improvement, and number of checks
        without one before stopping.
    early_stopping_warmup_epochs
        Epochs before early stopping starts monitoring.
    early_stopping_mode
        ``"min"`` or ``"max"``.
    enable_progress_bar
        Show a progress bar.
    progress_bar_refresh_rate
        0 hides the per-epoch bar, 1 draws it every epoch.
    simple_progress_bar
        Show one bar advanced per epoch (:class:`ProgressBar`) rather than Lightning's
        per-minibatch bar.
    logger
        ``None``: a :class:`HistoryLogger` (the metrics a model's ``history`` shows); ``True``:
        Lightning's default logger; ``False``: none; or Lightning loggers.
    log_every_n_steps
        Training steps between two logs of per-step metrics (epoch metrics are unaffected).
    learning_rate_monitor
        Add Lightning's ``LearningRateMonitor`` (``lr-<optimizer>`` in the history).
    **kwargs
        Other ``lightning.pytorch.Trainer`` arguments (``callbacks``, ``max_steps``, ...).
    """

    def __init__(
        self,
        accelerator: str | Any = "auto",
        devices: int | str | list[int] = "auto",
        benchmark: bool = True,
        check_val_every_n_epoch: int | None = None,
        max_epochs: int = 400,
        default_root_dir: str | None = None,
        enable_checkpointing: bool = False,
        checkpointing_monitor: str = "validation_loss",
        num_sanity_val_steps: int = 0,
        enable_model_summary: bool = False,
        early_stopping: bool = False,
        early_stopping_monitor: str = "elbo_validation",
        early_stopping_min_delta: float = 0.0,
        early_stopping_patience: int = 45,
        early_stopping_warmup_epochs: int = 0,
        early_stopping_mode: Literal["min", "max"] = "min",
        enable_progress_bar: bool = True,
        progress_bar_refresh_rate: int = 1,
        simple_progress_bar: bool = True,
        logger: Logger | Iterable[Logger] | bool | None = None,
        log_every_n_steps: int = 10,
        learning_rate_monitor: bool = False,
        **kwargs: Any,
    ) -> None:
        callbacks: list[Callback] = list(kwargs.pop("callbacks", None) or [])
        needs_validation = False
        if early_stopping:
            callbacks.append(
                LoudEarlyStopping(
                    monitor=early_stopping_monitor,
                    min_delta=early_stopping_min_delta,
                    patience=early_stopping_patience,
                    mode=early_stopping_mode,
                    warmup_epochs=early_stopping_warmup_epochs,
                )
            )
            needs_validation = True
        elif any(isinstance(c, EarlyStopping) for c in callbacks):
            # A user's early stopping checks after each validation: without one it never runs.
            needs_validation = True
        if any(isinstance(c, SaveCheckpoint) for c in callbacks):
            enable_checkpointing = True
            needs_validation = True
        elif enable_checkpointing:
            callbacks.append(SaveCheckpoint(monitor=checkpointing_monitor))
            needs_validation = True
        if learning_rate_monitor:
            if not any(isinstance(c, LearningRateMonitor) for c in callbacks):
                callbacks.append(LearningRateMonitor())
            needs_validation = True
        if check_val_every_n_epoch is None:
            # Out of reach: a fit validates only when something reads validation metrics.
            check_val_every_n_epoch = 1 if needs_validation else sys.maxsize
        if simple_progress_bar and enable_progress_bar:
            callbacks.append(ProgressBar(refresh_rate=progress_bar_refresh_rate))
        with quiet_lightning():
            super().__init__(
                accelerator=accelerator,
                devices=devices,
                benchmark=benchmark,
                check_val_every_n_epoch=check_val_every_n_epoch,
                max_epochs=max_epochs,
                default_root_dir=settings.logging_dir
                if default_root_dir is None
                else default_root_dir,
                enable_checkpointing=enable_checkpointing,
                num_sanity_val_steps=num_sanity_val_steps,
                enable_model_summary=enable_model_summary,
                logger=HistoryLogger() if logger is None else logger,
                log_every_n_steps=log_every_n_steps,
                enable_progress_bar=enable_progress_bar,
                callbacks=callbacks,
                **kwargs,
            )

    def fit(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's ``fit``, without the output that says nothing about a cellvi fit.

        See :func:`quiet_lightning`: the warnings that do not apply to cellvi's loaders,
        Lightning's info lines and tips, and third-party deprecation warnings.
        """
        plan = args[0] if args else kwargs.get("model")
        with quiet_lightning(logs_per_step=_logs_per_step(plan)):
            super().fit(*args, **kwargs)
