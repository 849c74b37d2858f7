"""``auto_move_data``: run a module method on the device of its parameters."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

Method = TypeVar("Method", bound=Callable[..., Any])


def _move(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {key: _move(item, device) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_move(item, device) for item in value)
    return value


def auto_move_data(method: Method) -> Method:
    """Decorate a module method so tensor arguments move to the module's device first.

    Tensors already on that device are passed through untouched (no copy, no sync), so the
    decorator costs nothing on the device-resident training path.
    """

    @functools.wraps(method)
    def wrapper(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        device = self.device
        return method(self, *_move(args, device), **_move(kwargs, device))

    return wrapper  # type: ignore[return-value]
