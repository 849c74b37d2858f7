"""The training plans and the KL warm-up, at their scvi-tools module path
(``scvi.train._trainingplans``)."""

from cellvi.train._base_plan import BasePlan
from cellvi.train._kl_weight import compute_kl_weight as _compute_kl_weight
from cellvi.train._pyro_plan import LowLevelPyroTrainingPlan, PyroTrainingPlan
from cellvi.train._semisupervised_plan import SemiSupervisedTrainingPlan
from cellvi.train._trainingplan import TrainingPlan

__all__ = [
    "BasePlan",
    "LowLevelPyroTrainingPlan",
    "PyroTrainingPlan",
    "SemiSupervisedTrainingPlan",
    "TrainingPlan",
    "_compute_kl_weight",
]
