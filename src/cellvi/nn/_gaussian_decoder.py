"""Gaussian decoder: a latent code to the mean and variance of a diagonal Gaussian."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ._fclayers import FCLayers
from ._scvi_tools_weights import Tensors, body_and_heads_weights


class Decoder(torch.nn.Module):
    """Map a latent code (and covariates) to the mean and variance of a diagonal Gaussian.

    Fully connected layers without dropout, then a linear head for the mean and one for the
    log variance; scANVI's ``p(z1 | z2, y)`` is one.

    Parameters
    ----------
    n_input, n_output
        Widths of the input and of the Gaussian.
    n_cat_list, n_layers, n_hidden
        Categories of each categorical covariate, number and width of the hidden layers.
    **fc_kwargs
        Further keyword arguments of :class:`~cellvi.nn.FCLayers` (``use_batch_norm``,
        ``use_layer_norm``, ...); its dropout is off.
    """

    def __init__(
        self,
        n_input: int,
        n_output: int,
        n_cat_list: Sequence[int] | None = None,
        n_layers: int = 1,
        n_hidden: int = 128,
        **fc_kwargs: Any,
    ) -> None:
        super().__init__()
        self.decoder = FCLayers(
            n_input,
            n_hidden,
            n_cat_list,
            n_layers=n_layers,
            n_hidden=n_hidden,
            dropout_rate=0.0,
            **fc_kwargs,
        )
        self.mean_decoder = torch.nn.Linear(n_hidden, n_output)
        self.var_decoder = torch.nn.Linear(n_hidden, n_output)

    def forward(self, x: torch.Tensor, *cat_list: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """Mean and variance ``(p_m, p_v)`` of the Gaussian for each row of ``x``."""
        hidden = self.decoder(x, *cat_list)
        return self.mean_decoder(hidden), torch.exp(self.var_decoder(hidden))

    def weights_from_scvi_tools(self, source: Tensors, source_prefix: str) -> Tensors:
        """This block's state dict from scvi-tools' ``Decoder`` tensors under ``source_prefix``."""
        return body_and_heads_weights(
            self, source, source_prefix, "decoder", ("mean_decoder", "var_decoder")
        )
