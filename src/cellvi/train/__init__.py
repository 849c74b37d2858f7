"""Training: the plan that optimises a module, the runner that fits it, and their logger."""

from cellvi.train._errors import NonFiniteLossError
from cellvi.train._logger import HistoryLogger
from cellvi.train._max_epochs import default_max_epochs
from cellvi.train._pyro_plan import PyroTrainingPlan
from cellvi.train._trainingplan import TrainingPlan
from cellvi.train._trainrunner import TrainRunner

__all__ = [
    "HistoryLogger",
    "NonFiniteLossError",
    "PyroTrainingPlan",
    "TrainRunner",
    "TrainingPlan",
    "default_max_epochs",
]
