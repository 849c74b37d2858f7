"""``ModuleBase``: what every cellvi module has, whether written in torch or in Pyro."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch

from cellvi.module.base._device import auto_move_data, module_device

Tensors = dict[str, torch.Tensor]


class ModuleBase(torch.nn.Module):
    """The shared base of :class:`BaseModuleClass` and :class:`PyroBaseModuleClass`.

    It gives every module its device (``module.device``), makes each public entry point
    listed in ``_entry_points`` move its tensor arguments to that device (see
    :mod:`cellvi.module.base._device`), and defines the hook that loading calls.
    """

    #: Methods that receive tensors from outside the module; subclasses' own versions are
    #: wrapped with :func:`auto_move_data` when the class is created.
    _entry_points: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls._entry_points:
            method = cls.__dict__.get(name)
            if inspect.isfunction(method):
                setattr(cls, name, auto_move_data(method))

    @property
    def device(self) -> torch.device:
        """Device of the module's first parameter or buffer (CPU for a module without any)."""
        return module_device(self)

    def state_dict_from_scvi_tools(self, source: Tensors) -> Tensors:
        """This module's state dict from the weights scvi-tools saved for its counterpart.

        A module that scvi-tools files can be loaded into overrides it, mapping scvi-tools'
        tensor names and layouts onto its own (see :mod:`cellvi.nn._scvi_tools_weights`).
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot read weights saved by scvi-tools; load models of "
            "cellvi's own format, or a class with an scvi-tools counterpart (SCVI, CondSCVI)."
        )

    def on_load(
        self, state_dict: Tensors, registry: dict[str, Any], example_batch: Tensors
    ) -> None:
        """Prepare this freshly built module to receive ``state_dict`` (default: nothing).

        Loading builds the module from its saved init parameters, calls this hook, then loads
        the saved weights with ``strict=True``. A module whose parameters only appear on a
        first call (a Pyro ``AutoGuide``, a lazily sized layer) overrides it to create them.

        Parameters
        ----------
        state_dict
            The saved weights about to be loaded (read only).
        registry
            The data registry the model was saved with (setup arguments, summary statistics).
        example_batch
            A minibatch of the data being loaded, as the module receives them in training.
        """
