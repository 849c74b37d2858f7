"""Count likelihoods: stable negative binomial and zero-inflated negative binomial.

Torch's :class:`~torch.distributions.Poisson` and :class:`~torch.distributions.Normal`
are re-exported so that models import every likelihood from one place.
"""

from torch.distributions import Normal, Poisson

from ._fused import nb_log_likelihood_sum, zinb_log_likelihood_sum
from ._log_pmf import log_nb_positive, log_zinb_positive
from ._negative_binomial import NegativeBinomial
from ._zinb import ZeroInflatedNegativeBinomial

__all__ = [
    "NegativeBinomial",
    "Normal",
    "Poisson",
    "ZeroInflatedNegativeBinomial",
    "log_nb_positive",
    "log_zinb_positive",
    "nb_log_likelihood_sum",
    "zinb_log_likelihood_sum",
]
