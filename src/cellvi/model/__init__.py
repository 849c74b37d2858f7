"""User-facing models."""

from cellvi.model._scvi import SCVI

__all__ = ["SCVI"]
