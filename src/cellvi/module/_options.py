"""Checks of module constructor options, failing early with the allowed values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    """Raise a ValueError naming the option and its allowed values if ``value`` is not one."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; use one of {list(allowed)}.")


def norm_flags(name: str, value: str) -> tuple[bool, bool]:
    """Read an ``"encoder" | "decoder" | "both" | "none"`` option as (in encoder, in decoder)."""
    check_choice(name, value, ("encoder", "decoder", "both", "none"))
    return value in ("encoder", "both"), value in ("decoder", "both")
