"""Training: the plans that optimise a module, the runner that fits it, and its record."""

from cellvi.train._base_plan import BasePlan
from cellvi.train._errors import NonFiniteLossError
from cellvi.train._logger import HistoryLogger
from cellvi.train._max_epochs import default_max_epochs
from cellvi.train._pyro_plan import PyroTrainingPlan
from cellvi.train._state import TrainingState
from cellvi.train._trainingplan import TrainingPlan
from cellvi.train._trainrunner import TrainRunner

__all__ = [
    "BasePlan",
    "HistoryLogger",
    "NonFiniteLossError",
    "PyroTrainingPlan",
    "TrainRunner",
    "TrainingPlan",
    "TrainingState",
    "default_max_epochs",
]
