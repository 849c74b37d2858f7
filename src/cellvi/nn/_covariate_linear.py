"""Linear layer whose input is extended with categorical and continuous covariates."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


class CovariateLinear(torch.nn.Module):
    """Affine map of ``[x; onehot(c_1); ...; onehot(c_k); cont]`` without building one-hots.

    Since ``W @ [x; onehot(c)] == W_x @ x + W_c[:, c]``, each categorical covariate
    contributes a row lookup in its own weight table and the continuous covariates a
    small extra matmul. The result equals a :class:`torch.nn.Linear` over the
    concatenated input whose weight is ``[weight, cat_weights[0].T, ..., cont_weight]``.

    Parameters
    ----------
    n_in
        Width of ``x``.
    n_out
        Width of the output.
    n_cat_list
        Number of categories of each categorical covariate; all must be used.
    n_cont
        Number of continuous covariates.
    bias
        Whether to add a learnable bias.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        n_cat_list: Sequence[int] = (),
        n_cont: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.n_in = n_in
        self.n_out = n_out
        self.n_cat_list = tuple(int(n) for n in n_cat_list)
        self.n_cont = n_cont
        self.weight = torch.nn.Parameter(torch.empty(n_out, n_in))
        # Tables are (n_cat, n_out) so that a code indexes a row, as in ``F.embedding``.
        self.cat_weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.empty(n_cat, n_out)) for n_cat in self.n_cat_list
        )
        self.cont_weight = torch.nn.Parameter(torch.empty(n_out, n_cont)) if n_cont > 0 else None
        self.bias = torch.nn.Parameter(torch.empty(n_out)) if bias else None
        self.reset_parameters()

    @property
    def fan_in(self) -> int:
        """Width of the concatenated input of the equivalent classic linear layer."""
        return self.n_in + sum(self.n_cat_list) + self.n_cont

    def reset_parameters(self) -> None:
        """Draw every parameter from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

        That is the distribution ``torch.nn.Linear`` gives each column of its weight and
        its bias, with ``fan_in`` counting the covariate columns, so the layer is
        statistically the same as the classic one-hot formulation.
        """
        bound = 1.0 / math.sqrt(self.fan_in)
        for param in self.parameters():
            torch.nn.init.uniform_(param, -bound, bound)

    def forward(
        self,
        x: torch.Tensor,
        codes: Sequence[torch.Tensor] = (),
        cont: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Apply the layer.

        Parameters
        ----------
        x
            Input of shape ``(..., n, n_in)``.
        codes
            One ``long`` tensor of shape ``(n,)`` per categorical covariate, codes assumed
            in range (they are validated when data are registered, not here, to keep host
            syncs out of the training loop).
        cont
            Continuous covariates of shape ``(n, n_cont)`` (or ``(..., n, n_cont)``);
            required exactly when ``n_cont > 0``.

        Returns
        -------
        torch.Tensor
            Output of shape ``(..., n, n_out)``.
        """
        out = F.linear(x, self.weight, self.bias)
        # Covariates are per cell, so summing them before the add broadcasts the cheap
        # (n, n_out) term over any leading sample dimension of ``x``.
        shift = None
        for table, code in zip(self.cat_weights, codes, strict=True):
            term = F.embedding(code, table)
            shift = term if shift is None else shift + term
        if self.cont_weight is not None:
            term = F.linear(cont, self.cont_weight)
            shift = term if shift is None else shift + term
        return out if shift is None else out + shift

    def extra_repr(self) -> str:
        """Describe the layer widths."""
        return (
            f"n_in={self.n_in}, n_out={self.n_out}, n_cat_list={list(self.n_cat_list)}, "
            f"n_cont={self.n_cont}, bias={self.bias is not None}"
        )
