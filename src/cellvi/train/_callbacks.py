"""The training callbacks, at their scvi-tools module path (``scvi.train._callbacks``)."""

from cellvi.train._checkpoint import SaveCheckpoint
from cellvi.train._early_stopping import LoudEarlyStopping
from cellvi.train._guide_warmup import PyroJitGuideWarmup, PyroModelGuideWarmup

__all__ = ["LoudEarlyStopping", "PyroJitGuideWarmup", "PyroModelGuideWarmup", "SaveCheckpoint"]
