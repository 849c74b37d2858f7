"""Training: the plans that optimise a module, the trainer and runner that fit it, its record."""

from cellvi.train._base_plan import BasePlan
from cellvi.train._checkpoint import SaveCheckpoint
from cellvi.train._config import (
    LowLevelPyroTrainingPlanConfig,
    PyroTrainingPlanConfig,
    TrainerConfig,
    TrainingPlanConfig,
    merge_kwargs,
)
from cellvi.train._constants import METRIC_KEYS
from cellvi.train._distributed import is_global_zero
from cellvi.train._early_stopping import LoudEarlyStopping
from cellvi.train._errors import NonFiniteLossError
from cellvi.train._logger import HistoryLogger
from cellvi.train._max_epochs import default_max_epochs
from cellvi.train._progress import ProgressBar
from cellvi.train._pyro_plan import LowLevelPyroTrainingPlan, PyroTrainingPlan
from cellvi.train._semisupervised_plan import SemiSupervisedTrainingPlan
from cellvi.train._state import TrainingState
from cellvi.train._trainer import Trainer
from cellvi.train._trainingplan import TrainingPlan
from cellvi.train._trainrunner import TrainRunner

__all__ = [
    "METRIC_KEYS",
    "BasePlan",
    "HistoryLogger",
    "LoudEarlyStopping",
    "LowLevelPyroTrainingPlan",
    "LowLevelPyroTrainingPlanConfig",
    "NonFiniteLossError",
    "ProgressBar",
    "PyroTrainingPlan",
    "PyroTrainingPlanConfig",
    "SaveCheckpoint",
    "SemiSupervisedTrainingPlan",
    "TrainRunner",
    "Trainer",
    "TrainerConfig",
    "TrainingPlan",
    "TrainingPlanConfig",
    "TrainingState",
    "default_max_epochs",
    "is_global_zero",
    "merge_kwargs",
]
