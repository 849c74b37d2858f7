"""Which device Lightning's names pick, and whether registered data fit on a device."""

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


def resolve_device(accelerator: str, device: int | str) -> torch.device:
    """The torch device that ``accelerator`` and ``device`` name, as Lightning would pick it.

    ``"auto"`` means the first CUDA device when there is one, else the CPU: the same choice
    ``train(accelerator="auto")`` makes, so a loaded model lives where a fresh fit would.
    """
    if accelerator == "cpu":
        return torch.device("cpu")
    if accelerator not in ("auto", "gpu", "cuda"):
        raise ValueError(f"accelerator={accelerator!r}; use 'auto', 'cpu', 'gpu' or 'cuda'.")
    if not torch.cuda.is_available():
        if accelerator == "auto":
            return torch.device("cpu")
        raise ValueError(f"accelerator={accelerator!r} but no CUDA device is available.")
    return torch.device("cuda" if device == "auto" else f"cuda:{int(device)}")
