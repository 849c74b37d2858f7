"""``LossOutput``: what a module's ``loss`` returns to a training plan."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

LossTerm = torch.Tensor | dict[str, torch.Tensor] | None


@dataclass
class LossOutput:
    """The loss to minimise and the terms of the ELBO, kept per cell.

    Parameters
    ----------
    loss
        Scalar to minimise (usually the mean negative ELBO over the minibatch, KL-weighted).
    reconstruction_loss
        Negative log-likelihood per cell, shape (n_cells,), or a dict of such terms.
    kl_local
        KL divergence of local (per-cell) latent variables, per cell, or a dict of them.
    kl_global
        KL divergence of global variables (a scalar), or a dict of them.
    extra_metrics
        Further scalars a training plan should log.
    n_obs_minibatch
        Number of cells in the minibatch (read from the terms when not given).

    Notes
    -----
    Sums stay tensors: reading them never forces a device-to-host copy.
    """

    loss: torch.Tensor
    reconstruction_loss: LossTerm = None
    kl_local: LossTerm = None
    kl_global: LossTerm = None
    extra_metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    n_obs_minibatch: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.loss, torch.Tensor) or self.loss.dim() != 0:
            raise ValueError("LossOutput.loss must be a scalar tensor (e.g. the minibatch mean).")
        self.reconstruction_loss = _as_dict(
            self.reconstruction_loss, "reconstruction_loss", self.loss
        )
        self.kl_local = _as_dict(self.kl_local, "kl_local", self.loss)
        self.kl_global = _as_dict(self.kl_global, "kl_global", self.loss)
        if self.n_obs_minibatch is None:
            per_cell = next(iter(self.reconstruction_loss.values()))
            self.n_obs_minibatch = int(per_cell.shape[0]) if per_cell.dim() > 0 else 1

    @property
    def reconstruction_loss_sum(self) -> torch.Tensor:
        """Reconstruction loss summed over cells and terms."""
        return _total(self.reconstruction_loss)

    @property
    def kl_local_sum(self) -> torch.Tensor:
        """Local KL summed over cells and terms."""
        return _total(self.kl_local)

    @property
    def kl_global_sum(self) -> torch.Tensor:
        """Global KL summed over terms."""
        return _total(self.kl_global)

    @property
    def elbo_sum(self) -> torch.Tensor:
        """Negative ELBO of the minibatch without KL warm-up: reconstruction + local KL (sums)."""
        return self.reconstruction_loss_sum + self.kl_local_sum


def _as_dict(term: LossTerm, name: str, like: torch.Tensor) -> dict[str, torch.Tensor]:
    if term is None:
        return {name: torch.zeros((), device=like.device, dtype=like.dtype)}
    if isinstance(term, dict):
        return term
    if isinstance(term, int | float):
        return {name: torch.as_tensor(term, device=like.device, dtype=like.dtype)}
    return {name: term}


def _total(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(value.sum() for value in terms.values())
