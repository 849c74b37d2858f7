"""Decoder of the scVI generative model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ._fclayers import FCLayers

_SCALE_ACTIVATIONS = ("softmax", "softplus")
_DISPERSIONS = ("gene", "gene-batch", "gene-label", "gene-cell")


class DecoderSCVI(torch.nn.Module):
    """Map latent codes to the parameters of a (zero-inflated) count distribution.

    Parameters
    ----------
    n_input
        Dimension of the latent space.
    n_output
        Number of genes.
    n_cat_list, n_layers, n_hidden
        Categories of each categorical covariate, number and width of the hidden layers (see
        :class:`FCLayers`, which also takes ``n_cont``, continuous covariates, among
        ``fc_kwargs``).
    inject_covariates
        Whether the covariates enter every hidden layer, not only the first.
    use_batch_norm
        Whether the hidden layers use batch norm.
    use_layer_norm
        Whether the hidden layers use layer norm.
    scale_activation
        ``"softmax"`` makes ``px_scale`` a composition over genes; ``"softplus"`` only
        makes it positive.
    zero_inflation
        Build the zero-inflation head (``px_dropout``), read only by a ZINB likelihood.
    cell_dispersion
        Build the dispersion head, read only with ``dispersion="gene-cell"``.
    **fc_kwargs
        Further keyword arguments of :class:`FCLayers`; ``dropout_rate`` defaults to 0.
    """

    def __init__(
        self,
        n_input: int,
        n_output: int,
        n_cat_list: Sequence[int] | None = None,
        n_layers: int = 1,
        n_hidden: int = 128,
        inject_covariates: bool = True,
        use_batch_norm: bool = False,
        use_layer_norm: bool = False,
        scale_activation: str = "softmax",
        zero_inflation: bool = True,
        cell_dispersion: bool = True,
        **fc_kwargs: Any,
    ) -> None:
        super().__init__()
        if scale_activation not in _SCALE_ACTIVATIONS:
            raise ValueError(
                f"scale_activation must be one of {_SCALE_ACTIVATIONS}, got {scale_activation!r}."
            )
        # Dropout in the decoder would add noise to the likelihood itself.
        fc_kwargs = {"dropout_rate": 0.0, **fc_kwargs}
        self.px_decoder = FCLayers(
            n_in=n_input,
            n_out=n_hidden,
            n_cat_list=n_cat_list,
            n_layers=n_layers,
            n_hidden=n_hidden,
            inject_covariates=inject_covariates,
            use_batch_norm=use_batch_norm,
            use_layer_norm=use_layer_norm,
            **fc_kwargs,
        )
        activation = (
            torch.nn.Softmax(dim=-1) if scale_activation == "softmax" else torch.nn.Softplus()
        )
        self.px_scale_decoder = torch.nn.Sequential(
            torch.nn.Linear(n_hidden, n_output), activation
        )
        # Heads a likelihood does not read would cost a (hidden x genes) matmul per step and
        # hold parameters that never learn, so they are only built when asked for.
        self.px_r_decoder = torch.nn.Linear(n_hidden, n_output) if cell_dispersion else None
        self.px_dropout_decoder = torch.nn.Linear(n_hidden, n_output) if zero_inflation else None

    def forward(
        self,
        dispersion: str,
        z: torch.Tensor,
        library: torch.Tensor,
        *cat_list: torch.Tensor | None,
        cont: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """Decode latent codes.

        Parameters
        ----------
        dispersion
            One of ``"gene"``, ``"gene-batch"``, ``"gene-label"``, ``"gene-cell"``; only
            ``"gene-cell"`` makes the decoder predict the dispersion.
        z
            Latent codes of shape ``(n, n_input)`` or ``(S, n, n_input)``.
        library
            Log library size of shape ``(n, 1)`` (or broadcastable against ``px_scale``).
        *cat_list
            Categorical covariate codes, one per entry of ``n_cat_list``.
        cont
            Continuous covariates of shape ``(n, n_cont)``.

        Returns
        -------
        tuple
            ``(px_scale, px_r, px_rate, px_dropout)``: normalised expression, dispersion
            (``None`` unless ``dispersion == "gene-cell"``), mean counts
            ``exp(library) * px_scale`` and zero-inflation logits (``None`` without
            ``zero_inflation``).
        """
        if dispersion not in _DISPERSIONS:
            raise ValueError(f"dispersion must be one of {_DISPERSIONS}, got {dispersion!r}.")
        if dispersion == "gene-cell" and self.px_r_decoder is None:
            raise ValueError(
                "dispersion='gene-cell' needs a decoder built with cell_dispersion=True."
            )
        px = self.px_decoder(z, *cat_list, cont=cont)
        px_scale = self.px_scale_decoder(px)
        px_dropout = None if self.px_dropout_decoder is None else self.px_dropout_decoder(px)
        px_rate = torch.exp(library) * px_scale
        px_r = self.px_r_decoder(px) if dispersion == "gene-cell" else None
        return px_scale, px_r, px_rate, px_dropout

    def scale(
        self, z: torch.Tensor, *cat_list: torch.Tensor | None, cont: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``px_scale`` of :meth:`forward` alone, without the other heads (same arguments)."""
        return self.px_scale_decoder(self.px_decoder(z, *cat_list, cont=cont))
