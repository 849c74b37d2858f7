"""Numerically stable log-pmfs of the negative binomial and its zero-inflated variant."""

import torch
import torch.nn.functional as F
from torch import Tensor

from ._stirling import HALF_LOG_2PI, stirling_correction


def _log_of_ratio(ratio: Tensor, ratio_minus_one: Tensor) -> Tensor:
    """``log(ratio)`` from ``ratio`` and an independently computed ``ratio - 1``.

    Near 1, ``log1p`` of the exactly formed difference keeps the digits that large
    multipliers (theta up to 1e8) would amplify; far below 1 the difference rounds to -1,
    so the plain log of the ratio must take over. Both branches get finite inputs, so
    autograd never meets ``0 * inf``, and the choice is made by a 0/1 ``lerp`` (see
    :func:`log_nb_positive`), which gives exactly one branch the gradient.
    """
    use_log = (ratio_minus_one < -0.5).to(ratio.dtype)
    return torch.lerp(torch.log1p(ratio_minus_one.clamp(min=-0.5)), torch.log(ratio), use_log)


def _nb_log_pmf_parts(
    x: Tensor, mu: Tensor, theta: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Pieces shared by the NB and ZINB log-pmfs.

    Returns the 0/1 weight ``x == 0`` (in the float dtype), ``log NB(0)``, and
    ``log NB(x)``, valid where ``x > 0``.

    The textbook ``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1) + ...`` subtracts
    numbers of size ``theta log theta`` (2e9 at theta = 1e8) that float32 cannot resolve.
    Writing each ``lgamma`` as Stirling's main term plus its small remainder ``c`` lets the
    large parts cancel on paper; with ``n = x + theta``,

        log p = theta log(n / (theta + mu)) - x log(x (theta + mu) / (n mu))
                + log(theta / (n x)) / 2 - log(2 pi) / 2 + c(n) - c(x) - c(theta),

    where both logs are of ratios whose distance from 1 is formed exactly. The error is
    then of order ``float_eps * (|log p| + |x - mu|)``, and theta -> inf reproduces the
    Poisson log-pmf through the same expansion.
    """
    mu = mu.clamp(min=eps)
    theta = theta.clamp(min=eps)
    if not x.is_floating_point():
        x = x.to(mu.dtype)
    log_p_zero = -theta * torch.log1p(mu / theta)

    zero_weight = (x == 0).to(log_p_zero.dtype)
    # The x > 0 formula has log(x) and lgamma(0) singularities; moving zeros to 1 keeps the
    # branch that is later discarded finite (and its gradient clean).
    x_pos = x + zero_weight
    total = x_pos + theta
    theta_plus_mu = theta + mu
    diff = x_pos - mu
    ratio_total = total / theta_plus_mu
    theta_frac = theta / total
    deviance = x_pos * _log_of_ratio(
        x_pos / (mu * ratio_total), diff / mu * theta_frac
    ) - theta * _log_of_ratio(ratio_total, diff / theta_plus_mu)
    # Terms in theta alone keep theta's (usually per-gene) shape: one pass over genes
    # instead of over the whole minibatch.
    theta_terms = stirling_correction(theta) + HALF_LOG_2PI
    log_p_pos = (
        0.5 * torch.log(theta_frac / x_pos)
        - deviance
        + (stirling_correction(total) - stirling_correction(x_pos))
        - theta_terms
    )
    return zero_weight, log_p_zero, log_p_pos


def log_nb_positive(x: Tensor, mu: Tensor, theta: Tensor, eps: float = 1e-8) -> Tensor:
    """Log-pmf of the negative binomial with mean ``mu`` and inverse dispersion ``theta``.

    Parameters
    ----------
    x
        Counts, ``>= 0`` (non-integer values give the usual ``lgamma`` extension).
    mu
        Mean, ``>= 0``. Values below ``eps`` are clamped to ``eps``.
    theta
        Inverse dispersion, ``> 0``; the variance is ``mu + mu**2 / theta``. Values below
        ``eps`` are clamped to ``eps``.
    eps
        Floor applied to ``mu`` and ``theta`` so that ``mu = 0`` gives a finite result.

    Returns
    -------
    Tensor
        Elementwise ``log NB(x; mu, theta)``, broadcast over the inputs.

    Notes
    -----
    Accurate to a few float ulps (relative to ``max(1, |log p|)``) in float32 and float64
    from ``theta = 1e-6`` to ``1e8`` and beyond, where it tends to the Poisson log-pmf, and
    for ``x`` up to 1e6 and more.
    """
    zero_weight, log_p_zero, log_p_pos = _nb_log_pmf_parts(x, mu, theta, eps)
    # lerp with a 0/1 weight selects exactly, and unlike torch.where it is branch-free
    # (fast on CPU for the random zero patterns of count data).
    return torch.lerp(log_p_pos, log_p_zero, zero_weight)


def log_zinb_positive(
    x: Tensor, mu: Tensor, theta: Tensor, zi_logits: Tensor, eps: float = 1e-8
) -> Tensor:
    """Log-pmf of the zero-inflated negative binomial.

    Parameters
    ----------
    x
        Counts, ``>= 0``.
    mu
        Mean of the negative binomial component, ``>= 0``.
    theta
        Inverse dispersion of the negative binomial component, ``> 0``.
    zi_logits
        Logits of the zero-inflation probability ``pi = sigmoid(zi_logits)``.
    eps
        Floor applied to ``mu`` and ``theta``.

    Returns
    -------
    Tensor
        Elementwise ``log[pi 1{x = 0} + (1 - pi) NB(x; mu, theta)]``.
    """
    zero_weight, log_p_zero, log_p_pos = _nb_log_pmf_parts(x, mu, theta, eps)
    # With pi = sigmoid(z): log(1 - pi) = -softplus(z) and
    # log(pi + (1 - pi) p0) = logaddexp(z, log p0) - softplus(z); pi itself is never formed,
    # so nothing is lost when it rounds to 0 or 1.
    zero_term = torch.logaddexp(zi_logits, log_p_zero)
    return torch.lerp(log_p_pos, zero_term, zero_weight) - F.softplus(zi_logits)
