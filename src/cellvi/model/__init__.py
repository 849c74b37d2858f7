"""User-facing models."""

from cellvi.model._condscvi import CondSCVI
from cellvi.model._scanvi import SCANVI
from cellvi.model._scvi import SCVI
from cellvi.model._write_in_chunks import write_in_chunks

__all__ = ["CondSCVI", "SCANVI", "SCVI", "write_in_chunks"]
