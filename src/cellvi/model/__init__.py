"""User-facing models."""

from cellvi.model._condscvi import CondSCVI
from cellvi.model._scvi import SCVI

__all__ = ["CondSCVI", "SCVI"]
