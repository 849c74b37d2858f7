"""Tests for the zero-inflated negative binomial log-pmf and distribution."""

import numpy as np
import pytest
import torch
from scipy import special

from cellvi.distributions import (
    NegativeBinomial,
    ZeroInflatedNegativeBinomial,
    log_nb_positive,
    log_zinb_positive,
)

ZI_LOGITS = [-20.0, 0.0, 20.0]


def _grid(dtype=np.float64):
    mesh = np.meshgrid(
        [0, 1, 3, 50, 1e4],
        [1e-3, 1.0, 100.0, 1e4],
        [1e-4, 0.1, 1.0, 10.0, 1e6],
        ZI_LOGITS,
        indexing="ij",
    )
    return [m.astype(dtype).astype(np.float64) for m in mesh]


def _reference(x, mu, theta, zi_logits):
    """log[pi 1{x=0} + (1 - pi) NB(x)] in float64, staying in log space throughout.

    The NB part is the textbook lgamma formula written with log1p: unlike
    ``scipy.stats.nbinom.logpmf(x, theta, p)`` it does not suffer from rounding p near 1.
    Its remaining error, ~eps64 * lgamma(1e6) ~ 3e-9, is below the tolerance used.
    """
    log_coeff = special.gammaln(x + theta) - special.gammaln(theta) - special.gammaln(x + 1)
    log_nb = log_coeff - theta * np.log1p(mu / theta) - x * np.log1p(theta / mu)
    log_pi = -np.logaddexp(0.0, -zi_logits)
    log_one_minus_pi = -np.logaddexp(0.0, zi_logits)
    log_nonzero_part = log_one_minus_pi + log_nb
    return np.where(x == 0, np.logaddexp(log_pi, log_nonzero_part), log_nonzero_part)


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-8), (torch.float32, 2e-6)])
def test_log_zinb_matches_reference(dtype, rtol):
    # rtol: float32 allows a few ulps; float64 is bounded by the reference's own lgamma
    # cancellation at theta = 1e6, not by us.
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    x, mu, theta, zi = _grid(np_dtype)
    ref = _reference(x, mu, theta, zi)
    out = log_zinb_positive(*(torch.tensor(a, dtype=dtype) for a in (x, mu, theta, zi)))
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert np.all(np.abs(out.double().numpy() - ref) <= rtol * np.maximum(1.0, np.abs(ref)))


def test_tiny_inflation_recovers_nb():
    x = torch.tensor([0.0, 1.0, 5.0, 300.0], dtype=torch.float64)
    mu = torch.tensor([0.5, 2.0, 8.0, 250.0], dtype=torch.float64)
    theta = torch.tensor([0.2, 5.0, 1e6, 3.0], dtype=torch.float64)
    zinb = log_zinb_positive(x, mu, theta, torch.full_like(x, -40.0))
    torch.testing.assert_close(zinb, log_nb_positive(x, mu, theta), rtol=1e-15, atol=1e-15)


def test_certain_inflation_gives_point_mass():
    x = torch.tensor([0.0, 2.0])
    mu, theta, zi_logits = torch.full((2,), 3.0), torch.full((2,), 2.0), torch.full((2,), 30.0)
    out = log_zinb_positive(x, mu, theta, zi_logits)
    assert out[0].abs() < 1e-6
    assert out[1] < -30


def test_distribution_matches_functional_and_moments():
    mu = torch.tensor([[0.5, 4.0, 30.0]])
    theta = torch.tensor([2.0, 0.1, 1e3])
    zi_logits = torch.tensor([[-1.0], [0.5]])
    dist = ZeroInflatedNegativeBinomial(mu=mu, theta=theta, zi_logits=zi_logits)
    assert dist.batch_shape == (2, 3)
    x = torch.tensor([0.0, 1.0, 7.0])
    torch.testing.assert_close(dist.log_prob(x), log_zinb_positive(x, mu, theta, zi_logits))
    pi = torch.sigmoid(zi_logits)
    torch.testing.assert_close(dist.zi_probs, pi.expand(2, 1))
    torch.testing.assert_close(dist.mean, (1 - pi) * mu)
    # Var = E[X^2] - E[X]^2 with E[X^2] = (1 - pi) (Var_NB + mu^2): an independent route to
    # the closed form (1 - pi) mu (1 + mu / theta + pi mu).
    nb = NegativeBinomial(mu=mu, theta=theta)
    second_moment = (1 - pi) * (nb.variance + mu**2)
    torch.testing.assert_close(dist.variance, second_moment - dist.mean**2)


def test_torch_style_parameterisation():
    mu, theta, zi = torch.tensor([2.0, 9.0]), torch.tensor([0.5, 4.0]), torch.tensor([0.3, -2.0])
    by_mean = ZeroInflatedNegativeBinomial(mu=mu, theta=theta, zi_logits=zi)
    by_logits = ZeroInflatedNegativeBinomial(
        total_count=theta, logits=torch.log(mu / theta), zi_logits=zi
    )
    x = torch.tensor([0.0, 3.0])
    torch.testing.assert_close(by_logits.log_prob(x), by_mean.log_prob(x))


def test_sample_moments_and_zero_fraction():
    torch.manual_seed(3)
    mu = torch.tensor([0.5, 5.0, 50.0]).repeat_interleave(2)
    theta = torch.tensor([0.5, 10.0]).repeat(3)
    zi_logits = torch.tensor([-1.0, 0.0, 1.5, 0.5, -2.0, 0.0])
    dist = ZeroInflatedNegativeBinomial(mu=mu, theta=theta, zi_logits=zi_logits)
    n = 200_000
    samples = dist.sample((n,)).double()
    assert samples.shape == (n, 6)
    assert (samples >= 0).all() and (samples == samples.round()).all()
    # 5 standard errors: SE(mean) = sqrt(var / n), SE(s^2) = sqrt((m4 - s^4) / n) with m4
    # the sample fourth central moment, SE(fraction) = sqrt(p (1 - p) / n).
    mean, var = dist.mean.double(), dist.variance.double()
    centred = samples - samples.mean(0)
    sample_var = (centred**2).sum(0) / (n - 1)
    se_var = (((centred**4).mean(0) - sample_var**2) / n).sqrt()
    assert ((samples.mean(0) - mean).abs() <= 5 * (var / n).sqrt()).all()
    assert ((sample_var - var).abs() <= 5 * se_var).all()
    pi = dist.zi_probs.double()
    p_zero = pi + (1 - pi) * NegativeBinomial(mu=mu, theta=theta).log_prob(torch.zeros(6)).exp()
    zero_fraction = (samples == 0).double().mean(0)
    assert ((zero_fraction - p_zero).abs() <= 5 * (p_zero * (1 - p_zero) / n).sqrt()).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_finite_at_extremes(dtype):
    mesh = np.meshgrid(
        [0, 1, 1e5], [0.0, 1e-8, 1.0, 1e7], [1e-6, 1.0, 1e8], [-20.0, 0.0, 20.0], indexing="ij"
    )
    x, mu, theta, zi = (torch.tensor(m, dtype=dtype) for m in mesh)
    for param in (mu, theta, zi):
        param.requires_grad_(True)
    out = log_zinb_positive(x, mu, theta, zi)
    assert torch.isfinite(out).all()
    out.sum().backward()
    for param in (mu, theta, zi):
        assert torch.isfinite(param.grad).all()


def test_gradcheck():
    x = torch.tensor([0.0, 0.0, 3.0, 12.0], dtype=torch.float64)
    mu = torch.tensor([0.3, 2.0, 5.0, 40.0], dtype=torch.float64, requires_grad=True)
    theta = torch.tensor([0.2, 1.5, 30.0, 4.0], dtype=torch.float64, requires_grad=True)
    zi = torch.tensor([-1.0, 2.0, 0.0, -3.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, t, z: log_zinb_positive(x, m, t, z), (mu, theta, zi))


def test_validation_and_required_arguments():
    with pytest.raises(ValueError, match="zi_logits"):
        ZeroInflatedNegativeBinomial(mu=1.0, theta=1.0)
    with pytest.raises(ValueError, match="parameter mu"):
        ZeroInflatedNegativeBinomial(
            mu=torch.tensor([-1.0]),
            theta=torch.tensor([1.0]),
            zi_logits=torch.tensor([0.0]),
            validate_args=True,
        )
    dist = ZeroInflatedNegativeBinomial(
        mu=torch.tensor([1.0]),
        theta=torch.tensor([1.0]),
        zi_logits=torch.tensor([0.0]),
        validate_args=True,
    )
    with pytest.warns(UserWarning, match="support"):  # as scvi-tools: a warning
        dist.log_prob(torch.tensor([-2.0]))
    with pytest.warns(UserWarning, match="support"):  # as scvi-tools: a warning
        dist.log_prob(torch.tensor([0.5]))


def test_expand_and_repr():
    dist = ZeroInflatedNegativeBinomial(
        mu=torch.tensor([1.0, 2.0]), theta=torch.tensor(3.0), zi_logits=torch.tensor(0.0)
    )
    wide = dist.expand((4, 2))
    assert isinstance(wide, ZeroInflatedNegativeBinomial)
    assert wide.batch_shape == (4, 2) and wide.sample().shape == (4, 2)
    torch.testing.assert_close(wide.log_prob(torch.zeros(4, 2))[1], dist.log_prob(torch.zeros(2)))
    assert repr(dist) == "ZeroInflatedNegativeBinomial(mu: shape (2,), theta: 3, zi_logits: 0)"
