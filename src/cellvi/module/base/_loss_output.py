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
    classification_loss
        Loss of a classifier the module trains beside the ELBO (a scalar), e.g. scANVI's;
        needs ``logits`` and ``true_labels``.
    logits
        The classifier's logits of the minibatch, ``(n_cells, n_classes)``.
    true_labels
        The labels those logits are scored against, ``(n_cells,)`` or ``(n_cells, 1)``.
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
    classification_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    true_labels: torch.Tensor | None = None
    extra_metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    n_obs_minibatch: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.loss, dict):  # several terms to minimise together
            self.loss = _total(self.loss)
        if not isinstance(self.loss, torch.Tensor) or self.loss.dim() != 0:
            raise ValueError("LossOutput.loss must be a scalar tensor (e.g. the minibatch mean).")
        if self.classification_loss is not None and (
            self.logits is None or self.true_labels is None
        ):
            raise ValueError(
                "A LossOutput with a classification_loss needs the logits and true_labels it "
                "was computed from (training logs the classifier's accuracy from them)."
            )
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
