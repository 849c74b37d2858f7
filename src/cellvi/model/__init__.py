"""User-facing models."""

from cellvi.model._condscvi import CondSCVI
from cellvi.model._scanvi import SCANVI
from cellvi.model._scvi import SCVI

__all__ = ["CondSCVI", "SCANVI", "SCVI"]
