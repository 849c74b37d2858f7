"""Amortised Gaussian encoder of the variational posterior."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.distributions import Normal

from ._fclayers import FCLayers

_DISTRIBUTIONS = ("normal", "ln")


class Encoder(torch.nn.Module):
    """Map data to the mean and variance of a diagonal Gaussian, and sample from it.

    Parameters
    ----------
    n_input
        Width of the input.
    n_output
        Dimension of the latent space.
    n_cat_list, n_layers, n_hidden
        Categories of each categorical covariate, number and width of the hidden layers (see
        :class:`FCLayers`, which also takes ``n_cont``, continuous covariates, among
        ``fc_kwargs``).
    dropout_rate
        Dropout probability of the hidden layers.
    distribution
        ``"normal"`` for a Gaussian latent, ``"ln"`` for a logistic-normal one (the
        softmax of a Gaussian sample).
    var_eps
        Floor added to the variance for numerical stability.
    var_activation
        Map from the raw variance head to a positive variance; ``torch.exp`` by default.
    return_dist
        Whether ``forward`` returns the posterior distribution instead of its moments.
    **fc_kwargs
        Further keyword arguments of :class:`FCLayers`.
    """

    def __init__(
        self,
        n_input: int,
        n_output: int,
        n_cat_list: Sequence[int] | None = None,
        n_layers: int = 1,
        n_hidden: int = 128,
        dropout_rate: float = 0.1,
        distribution: str = "normal",
        var_eps: float = 1e-4,
        var_activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
        return_dist: bool = False,
        **fc_kwargs: Any,
    ) -> None:
        super().__init__()
        if distribution not in _DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {_DISTRIBUTIONS}, got {distribution!r}."
            )
        self.distribution = distribution
        self.var_eps = var_eps
        self.var_activation = torch.exp if var_activation is None else var_activation
        self.return_dist = return_dist
        self.encoder = FCLayers(
            n_in=n_input,
            n_out=n_hidden,
            n_cat_list=n_cat_list,
            n_layers=n_layers,
            n_hidden=n_hidden,
            dropout_rate=dropout_rate,
            **fc_kwargs,
        )
        self.mean_encoder = torch.nn.Linear(n_hidden, n_output)
        self.var_encoder = torch.nn.Linear(n_hidden, n_output)

    def forward(
        self, x: torch.Tensor, *cat_list: torch.Tensor | None, cont: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | tuple[Normal, torch.Tensor]:
        """Encode ``x`` and draw a reparameterised latent sample.

        Parameters
        ----------
        x
            Input of shape ``(n, n_input)``.
        *cat_list
            Categorical covariate codes, one per entry of ``n_cat_list``.
        cont
            Continuous covariates of shape ``(n, n_cont)``.

        Returns
        -------
        tuple
            ``(q_m, q_v, latent)``, or ``(Normal(q_m, sqrt(q_v)), latent)`` when
            ``return_dist``; ``latent`` lies on the simplex for ``distribution="ln"``.
        """
        q = self.encoder(x, *cat_list, cont=cont)
        q_m = self.mean_encoder(q)
        q_v = self.var_activation(self.var_encoder(q)) + self.var_eps
        dist = Normal(q_m, q_v.sqrt())
        latent = dist.rsample()
        if self.distribution == "ln":
            latent = torch.softmax(latent, dim=-1)
        if self.return_dist:
            return dist, latent
        return q_m, q_v, latent
