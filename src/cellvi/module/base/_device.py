"""Device placement of modules: where a module lives, and moving its inputs there.

This file is the one owner of that rule. Every public entry point of a cellvi module
(``forward``, ``inference``, ``generative``, ``loss``, ``sample``, ``marginal_ll`` of a torch
module; ``model`` and ``guide`` of a Pyro module) moves its tensor arguments to the module's
device first: :class:`~cellvi.module.base.ModuleBase` wraps those methods of every subclass
with :func:`auto_move_data`, so a module written by a user follows the rule too. Callers can
therefore hand a module tensors from anywhere (a host loader, a query, a test), and nothing
else in cellvi moves minibatches by hand.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

Method = TypeVar("Method", bound=Callable[..., Any])

# Marks a method that already moves its arguments, so wrapping twice is a no-op.
_MOVES_DATA = "_cellvi_moves_data"


def module_device(module: torch.nn.Module) -> torch.device:
    """Device of the module's first parameter or buffer (CPU for a module without any)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def move_to_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it (nested dicts, lists, tuples) on ``device``.

    Tensors already there are returned as they are: no copy, no host sync, so the
    device-resident training path pays nothing. Other objects (distributions, numbers) pass
    through untouched.
    """
    if isinstance(value, torch.Tensor):
        return value if value.device == device else value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {key: move_to_device(item, device) for key, item in value.items()}
    if isinstance(value, list | tuple) and not hasattr(value, "_fields"):
        return type(value)(move_to_device(item, device) for item in value)
    return value


def auto_move_data(method: Method) -> Method:
    """Decorate a module method so its tensor arguments move to the module's device first."""
    if getattr(method, _MOVES_DATA, False):
        return method

    @functools.wraps(method)
    def wrapper(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        device = module_device(self)
        return method(self, *move_to_device(args, device), **move_to_device(kwargs, device))

    setattr(wrapper, _MOVES_DATA, True)
    return wrapper  # type: ignore[return-value]
