"""Building blocks of model classes: ``BaseModelClass`` and the mixins users compose."""

from cellvi.model.base._archesmixin import ArchesMixin
from cellvi.model.base._base_model import BaseModelClass
from cellvi.model.base._embedding_mixin import EmbeddingMixin
from cellvi.model.base._files import ModelFileError
from cellvi.model.base._minified import BaseMinifiedModeModelClass
from cellvi.model.base._pyro_mixins import PyroSampleMixin
from cellvi.model.base._queries import posterior_query
from cellvi.model.base._rnamixin import RNASeqMixin
from cellvi.model.base._training_mixin import (
    PyroSviTrainMixin,
    TrainingMixin,
    UnsupervisedTrainingMixin,
)
from cellvi.model.base._vae_mixin import VAEMixin
from cellvi.train._guide_warmup import PyroJitGuideWarmup, PyroModelGuideWarmup

__all__ = [
    "ArchesMixin",
    "BaseMinifiedModeModelClass",
    "BaseModelClass",
    "EmbeddingMixin",
    "ModelFileError",
    "PyroJitGuideWarmup",
    "PyroModelGuideWarmup",
    "PyroSampleMixin",
    "PyroSviTrainMixin",
    "RNASeqMixin",
    "TrainingMixin",
    "UnsupervisedTrainingMixin",
    "VAEMixin",
    "posterior_query",
]
