"""The contracts user modules implement: ``BaseModuleClass`` and its helpers."""

from cellvi.module.base._base_module import BaseModuleClass
from cellvi.module.base._decorators import auto_move_data
from cellvi.module.base._loss_output import LossOutput
from cellvi.module.base._pyro_module import PyroBaseModuleClass

__all__ = ["BaseModuleClass", "LossOutput", "PyroBaseModuleClass", "auto_move_data"]
