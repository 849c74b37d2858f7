"""Whether registered data fit on a device."""

from __future__ import annotations

import os

import torch

# Half of the free memory: the model, its activations and the optimizer need the rest.
_RESIDENT_SHARE = 0.5


def check_device_resident(value: object) -> None:
    """Reject anything but True, False or "auto" for ``device_resident``."""
    if value not in (True, False, "auto"):
        raise ValueError(f"device_resident must be True, False or 'auto', got {value!r}.")


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether ``nbytes`` fit in the allowed share of the free memory of ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    elif device.type == "cpu":
        free = _available_host_memory()
    else:
        return False
    return nbytes <= _RESIDENT_SHARE * free


def _available_host_memory() -> float:
    """Available host memory in bytes (infinite where the platform does not say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return float("inf")
