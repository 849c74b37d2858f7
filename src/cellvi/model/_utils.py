"""Helpers of the model classes, at their scvi-tools module path (``scvi.model._utils``)."""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from lightning.pytorch.trainer.connectors.accelerator_connector import _AcceleratorConnector

LightningDevices = int | list[int] | str


def parse_device_args(
    accelerator: str = "auto",
    devices: LightningDevices = "auto",
    return_device: Literal["torch"] | None = None,
    validate_single_device: bool = False,
) -> tuple[str, LightningDevices] | tuple[str, LightningDevices, torch.device]:
    """Resolve Lightning's ``accelerator`` and ``devices`` as a fit would.

    Parameters
    ----------
    accelerator
        Lightning's accelerator name (``"auto"``, ``"cpu"``, ``"gpu"``, ``"cuda"``, ...).
    devices
        Lightning's devices (``"auto"``, a count, a list of indices, ``"0,1"``, ``-1``).
    return_device
        ``"torch"`` also returns the ``torch.device`` of the first selected device.
    validate_single_device
        Refuse a selection of several devices (for work that runs on one, e.g. a query).

    Returns
    -------
    tuple
        ``(accelerator, devices)`` as Lightning resolves them, and the torch device with
        ``return_device="torch"``. ``devices="auto"`` on an accelerator selects its first
        device only, and ``"auto"`` never picks Apple's MPS (it falls back to the CPU).
    """
    if return_device not in (None, "torch"):
        raise ValueError(
            f"return_device={return_device!r}; use 'torch' or None (cellvi has no JAX backend)."
        )
    several = (
        (isinstance(devices, list) and len(devices) > 1)
        or (isinstance(devices, str) and "," in devices)
        or devices == -1
    )
    if validate_single_device and devices != "auto" and several:
        raise ValueError(f"devices={devices!r} selects several devices; give a single one.")
    connector = _AcceleratorConnector(accelerator=accelerator, devices=devices)
    if connector._accelerator_flag == "mps" and accelerator == "auto":
        warnings.warn(
            "accelerator='auto' runs on the CPU although MPS exists; pass accelerator='mps' to "
            "use it.",
            UserWarning,
            stacklevel=2,
        )
        connector = _AcceleratorConnector(accelerator="cpu", devices=devices)
    resolved_accelerator = connector._accelerator_flag
    resolved_devices = connector._devices_flag
    if isinstance(resolved_devices, list):
        first = resolved_devices[0]
    elif isinstance(resolved_devices, str) and "," in resolved_devices:
        first = int(resolved_devices.split(",")[0])
    else:
        first = resolved_devices
    if devices == "auto" and resolved_accelerator != "cpu":
        resolved_devices = [first]
    if return_device is None:
        return resolved_accelerator, resolved_devices
    if resolved_accelerator == "cpu":
        return resolved_accelerator, resolved_devices, torch.device("cpu")
    return resolved_accelerator, resolved_devices, torch.device(f"{resolved_accelerator}:{first}")
