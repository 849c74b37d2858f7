"""Zero-inflated negative binomial distribution."""

import torch
from torch import Tensor
from torch.distributions import constraints
from torch.distributions.constraints import Constraint

from ._fused import zinb_log_likelihood_sum
from ._log_pmf import log_zinb_positive
from ._negative_binomial import NegativeBinomial, TensorLike, _as_tensors


class ZeroInflatedNegativeBinomial(NegativeBinomial):
    """Negative binomial mixed with a point mass at zero.

    A draw is 0 with probability ``pi = sigmoid(zi_logits)`` and otherwise comes from
    ``NegativeBinomial(mu, theta)``.

    Parameters
    ----------
    total_count, probs, logits, mu, theta, scale
        Parameters of the negative binomial component, as in :class:`NegativeBinomial`.
    zi_logits
        Logits of the zero-inflation probability (required).
    validate_args
        Check parameters now and values passed to :meth:`log_prob`, raising ``ValueError``.
    max_poisson_rate
        Ceiling on the Poisson rate used by :meth:`sample`.

    Notes
    -----
    With ``X = B * Y``, ``B ~ Bernoulli(1 - pi)`` independent of ``Y ~ NB(mu, theta)``:
    ``E[X] = (1 - pi) mu`` and ``E[X^2] = (1 - pi) (mu + mu^2 / theta + mu^2)``, hence
    ``Var[X] = (1 - pi) mu (1 + mu / theta + pi mu)``.
    """

    def __init__(
        self,
        total_count: TensorLike | None = None,
        probs: TensorLike | None = None,
        logits: TensorLike | None = None,
        mu: TensorLike | None = None,
        theta: TensorLike | None = None,
        zi_logits: TensorLike | None = None,
        scale: TensorLike | None = None,
        validate_args: bool = False,
        max_poisson_rate: float = 1e8,
    ) -> None:
        if zi_logits is None:
            raise ValueError("ZeroInflatedNegativeBinomial needs zi_logits.")
        # Set before the parent constructor, which sizes the batch and validates through
        # _batch_parameters and arg_constraints.
        self.zi_logits = _as_tensors(zi_logits, mu, theta, total_count)[0]
        super().__init__(
            total_count, probs, logits, mu, theta, scale, validate_args, max_poisson_rate
        )

    _parameter_names = ("mu", "theta", "zi_logits")

    @property
    def arg_constraints(self) -> dict[str, Constraint]:
        """Constraints on the stored parameters, checked when ``validate_args=True``."""
        return {**super().arg_constraints, "zi_logits": constraints.real}

    @property
    def zi_probs(self) -> Tensor:
        """Zero-inflation probability ``sigmoid(zi_logits)``."""
        return torch.sigmoid(self.zi_logits)

    @property
    def mean(self) -> Tensor:
        """Mean ``(1 - pi) mu``."""
        return (torch.sigmoid(-self.zi_logits) * self.mu).expand(self.batch_shape)

    @property
    def variance(self) -> Tensor:
        """Variance ``(1 - pi) mu (1 + mu / theta + pi mu)``."""
        pi = self.zi_probs
        mu = self.mu
        return ((1.0 - pi) * mu * (1.0 + mu / self.theta + pi * mu)).expand(self.batch_shape)

    # log_prob and log_prob_sum: the zero-inflated pmfs (log_zinb_positive and its fused sum).
    _log_pmf = staticmethod(log_zinb_positive)
    _log_pmf_sum = staticmethod(zinb_log_likelihood_sum)

    def _inflate_zeros(self, counts: Tensor) -> Tensor:
        """Set each negative binomial draw to zero with probability ``pi`` (structural zeros)."""
        uniform = torch.rand(counts.shape, dtype=counts.dtype, device=counts.device)
        return counts.masked_fill(uniform < self.zi_probs, 0.0)
