"""Importance weights of posterior draws, towards the aggregate of the true posteriors.

A group's draws come from its aggregate variational posterior ``sum_a q(z | x_a)``; the
weight of a draw ``z`` is the ratio ``sum_a p(z | x_a) / sum_a q(z | x_a)`` over anchor cells
``a``, with ``p(z | x_a) = p(x_a | z) p(z) / p(x_a)`` and ``p(x_a)`` estimated by importance
sampling. Resampling the draws by these weights corrects, in part, the variational posterior's
bias. ``p(x_a | z)`` decodes ``z`` at the anchor's own library size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributions import Normal, Poisson

from cellvi.distributions import log_nb_positive, log_zinb_positive

Tensor = torch.Tensor
# Entries (draws x anchors x genes) of one log-likelihood evaluation: about 64 MB of float32.
_BUDGET = 1 << 24


def importance_log_weights(z: Tensor, scale: Tensor, px: Any, anchors: dict[str, Any]) -> Tensor:
    """Log importance weight (unnormalised) of each of ``R`` latent draws.

    Parameters
    ----------
    z
        Latent draws ``(R, n_latent)``, on the scale ``qz`` scores (before any logistic
        transform).
    scale
        Normalized expression decoded from each draw, ``(R, n_genes)``.
    px
        The likelihood decoded from each draw (its dispersion and zero inflation are used).
    anchors
        ``qz`` (a ``Normal`` of shape ``(A, n_latent)``), ``x`` (their counts, ``(A,
        n_genes)``), ``log_px`` (their marginal log-likelihoods, ``(A,)``) and
        ``truncation`` (clamp weights below the mean, Ionides 2008).

    Returns
    -------
    A CPU float64 tensor of shape ``(R,)``.
    """
    x, qz, log_px = anchors["x"], anchors["qz"], anchors["log_px"]
    log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)  # (R,)
    log_qz = qz.log_prob(z[:, None, :]).sum(-1)  # (R, A)
    library = x.sum(-1)
    n_draws, n_anchors, n_genes = z.shape[0], x.shape[0], x.shape[1]
    step = max(1, _BUDGET // max(1, n_draws * n_genes))
    log_px_z = torch.cat(
        [
            _log_likelihood(x[start : start + step], library[start : start + step], scale, px)
            for start in range(0, n_anchors, step)
        ],
        dim=1,
    )  # (R, A)
    log_weights = torch.logsumexp(
        log_pz[:, None] + log_px_z - log_px[None, :], dim=1
    ) - torch.logsumexp(log_qz, dim=1)
    if anchors["truncation"]:
        tau = torch.logsumexp(log_weights, 0) - torch.log(torch.tensor(float(n_draws)))
        log_weights = log_weights.clamp(min=float(tau))
    return log_weights.double().cpu()


def _log_likelihood(x: Tensor, library: Tensor, scale: Tensor, px: Any) -> Tensor:
    """``log p(x_a | z_r)`` summed over genes, ``(R, A)``: each draw at each anchor's library."""
    mean = scale[:, None, :] * library[None, :, None]  # (R, A, G)
    if isinstance(px, Poisson):
        return Poisson(mean).log_prob(x[None]).sum(-1)
    if isinstance(px, Normal):
        return Normal(mean, _per_draw(px.scale)).log_prob(x[None]).sum(-1)
    theta = _per_draw(px.theta)
    if hasattr(px, "zi_logits"):
        return log_zinb_positive(x[None], mean, theta, _per_draw(px.zi_logits)).sum(-1)
    return log_nb_positive(x[None], mean, theta).sum(-1)


def _per_draw(value: Tensor) -> Tensor:
    """A per-draw ``(R, G)`` parameter broadcast over anchors; a per-gene one unchanged."""
    return value[:, None, :] if value.dim() == 2 else value
