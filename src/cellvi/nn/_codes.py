"""Normalisation of categorical code tensors."""

from __future__ import annotations

import torch


def as_code_vector(codes: torch.Tensor) -> torch.Tensor:
    """Return integer codes of shape ``(n,)`` from codes of shape ``(n,)`` or ``(n, 1)``.

    Parameters
    ----------
    codes
        Category codes; data loaders often store them as floats in an ``(n, 1)`` column.

    Returns
    -------
    torch.Tensor
        The codes as a ``long`` tensor without the trailing singleton column.
    """
    if codes.dim() > 1 and codes.shape[-1] == 1:
        codes = codes[..., 0]
    # ``.long()`` is a no-op for tensors that already are ``long``.
    return codes.long()
