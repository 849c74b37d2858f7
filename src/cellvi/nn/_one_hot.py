"""One-hot encoding of categorical codes."""

from __future__ import annotations

import torch

from ._codes import as_code_vector


def one_hot(index: torch.Tensor, n_cat: int) -> torch.Tensor:
    """Encode category codes as a float one-hot matrix.

    Parameters
    ----------
    index
        Integer (or integer-valued float) codes of shape ``(n,)`` or ``(n, 1)``,
        each in ``[0, n_cat)``.
    n_cat
        Number of categories, the width of the result.

    Returns
    -------
    torch.Tensor
        Tensor of shape ``(n, n_cat)`` in the default float dtype, on ``index``'s device.
    """
    codes = as_code_vector(index)
    # ``scatter_`` instead of ``F.one_hot``: the latter checks the code range with a
    # device-to-host sync.
    out = torch.zeros(*codes.shape, n_cat, device=codes.device)
    return out.scatter_(-1, codes.unsqueeze(-1), 1.0)
