"""The contracts user modules implement: ``BaseModuleClass`` and its helpers."""

from cellvi.module.base._base_module import BaseModuleClass
from cellvi.module.base._device import auto_move_data, move_to_device
from cellvi.module.base._embedding_mixin import EmbeddingModuleMixin
from cellvi.module.base._loss_output import LossOutput
from cellvi.module.base._module_base import ModuleBase
from cellvi.module.base._pyro_module import PyroBaseModuleClass

__all__ = [
    "BaseModuleClass",
    "EmbeddingModuleMixin",
    "LossOutput",
    "ModuleBase",
    "PyroBaseModuleClass",
    "auto_move_data",
    "move_to_device",
]
