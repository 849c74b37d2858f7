"""Tests for the negative binomial log-pmf and distribution."""

import numpy as np
import pytest
import torch
from scipy import special, stats

from cellvi.distributions import NegativeBinomial, Normal, Poisson, log_nb_positive

X_GRID = np.array([0, 1, 2, 3, 7, 10, 100, 1e3, 1e4, 1e5])
THETA_GRID = np.array([1e-4, 0.1, 1.0, 10.0, 1e6])
MU_GRID = np.array([1e-3, 1.0, 100.0, 1e4])


def _grid(x=X_GRID, mu=MU_GRID, theta=THETA_GRID, dtype=np.float64):
    """Full (x, mu, theta) grid, rounded to ``dtype`` so references see the same inputs."""
    mesh = np.meshgrid(x, mu, theta, indexing="ij")
    return [m.astype(dtype).astype(np.float64) for m in mesh]


def _scipy_nb(x, mu, theta):
    """scipy's logpmf and a bound on its own float64 rounding error.

    scipy forms lgamma(x + theta) - lgamma(theta) - lgamma(x + 1) + ..., so it is only
    good to about eps64 times the size of those terms (1e-8 at theta = 1e6), and rounding
    p = theta / (theta + mu) moves the result by eps64 * (theta + x theta / mu).
    Comparisons must allow for that, or they would test scipy rather than us.
    """
    p = theta / (theta + mu)
    ref = stats.nbinom.logpmf(x, theta, p)
    terms = (
        np.abs(special.gammaln(x + theta))
        + np.abs(special.gammaln(theta))
        + np.abs(special.gammaln(x + 1))
        + np.abs(theta * np.log(p))
        + np.abs(x * np.log1p(-p))
        + theta * (1 + x / mu)
    )
    return ref, 32 * np.finfo(np.float64).eps * terms


def _t(*arrays, dtype):
    return [torch.tensor(a, dtype=dtype) for a in arrays]


def test_log_nb_matches_scipy_float64():
    x, mu, theta = _grid()
    ref, ref_err = _scipy_nb(x, mu, theta)
    out = log_nb_positive(*_t(x, mu, theta, dtype=torch.float64)).numpy()
    assert np.all(np.abs(out - ref) <= ref_err + 1e-12 * np.maximum(1, np.abs(ref)))


def test_log_nb_matches_scipy_float32():
    x, mu, theta = _grid(dtype=np.float32)
    ref, ref_err = _scipy_nb(x, mu, theta)
    out = log_nb_positive(*_t(x, mu, theta, dtype=torch.float32))
    assert out.dtype == torch.float32
    # A handful of float32 ulps (eps = 1.2e-7) relative to max(1, |log p|).
    tol = ref_err + 1e-6 * np.maximum(1.0, np.abs(ref))
    assert np.all(np.abs(out.double().numpy() - ref) <= tol)


def test_log_nb_matches_high_precision_where_scipy_cannot():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    x, mu, theta = _grid(x=[0, 1, 5, 99, 1e4, 1e6], mu=[0.5, 100.0, 1e4], theta=[1e-6, 1e8, 1e12])

    def exact_log_pmf(x, m, t):
        x, m, t = mpmath.mpf(x), mpmath.mpf(m), mpmath.mpf(t)
        log_coeff = mpmath.loggamma(x + t) - mpmath.loggamma(t) - mpmath.loggamma(x + 1)
        return float(log_coeff + t * mpmath.log(t / (t + m)) + x * mpmath.log(m / (t + m)))

    exact = np.vectorize(exact_log_pmf)(x, mu, theta)
    out = log_nb_positive(*_t(x, mu, theta, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(out, exact, rtol=1e-12, atol=1e-12)


def test_log_nb_finite_on_extreme_grid():
    x, mu, theta = _grid(
        x=[0, 1, 2, 50, 1e5, 1e6], mu=[0.0, 1e-8, 1e-3, 1.0, 1e4, 1e7], theta=[1e-6, 1e-4, 1, 1e8]
    )
    for dtype in (torch.float32, torch.float64):
        out = log_nb_positive(*_t(x, mu, theta, dtype=dtype))
        assert torch.isfinite(out).all()
        assert (out <= 1e-6).all()


def test_mu_zero_is_a_point_mass_at_zero():
    x = torch.tensor([0.0, 1.0, 3.0])
    out = log_nb_positive(x, torch.zeros(3), torch.full((3,), 2.0), eps=1e-8)
    assert out[0].abs() < 1e-7
    # mu is floored at eps, so P(x) <= eps**x.
    assert (out[1:] <= x[1:] * np.log(1e-8) + 1e-3).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_huge_theta_tends_to_poisson(dtype):
    x, mu, _ = _grid(x=[0, 1, 3, 10, 95, 100, 110, 1e4], mu=[0.1, 1.0, 100.0, 1e4], theta=[1.0])
    theta = np.full_like(x, 1e10)
    out = log_nb_positive(*_t(x, mu, theta, dtype=dtype)).double().numpy()
    poisson = stats.poisson.logpmf(x, mu)
    # log NB - log Poisson = ((x - mu)^2 - x) / (2 theta) + O(theta^-2).
    gap = ((x - mu) ** 2 + x) / theta
    float_tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert np.all(np.abs(out - poisson) <= gap + float_tol * np.maximum(1, np.abs(poisson)))
    if dtype == torch.float64:
        # torch's own Poisson cancels x log(mu) against lgamma(x + 1): only float64 is tight.
        torch_poisson = Poisson(torch.tensor(mu)).log_prob(torch.tensor(x)).numpy()
        assert np.all(np.abs(out - torch_poisson) <= gap + 1e-10 * np.maximum(1, np.abs(out)))


def test_integer_counts_and_broadcasting():
    torch.manual_seed(0)
    mu = torch.rand(4, 6) * 10
    theta = torch.rand(6) + 0.5
    x = torch.poisson(mu).long()
    out = log_nb_positive(x, mu, theta)
    assert out.shape == (4, 6) and out.dtype == torch.float32
    expected = log_nb_positive(x.float(), mu, theta.expand(4, 6).contiguous())
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parameterisations_agree(dtype):
    x, mu, theta = _grid(x=[0, 1, 4, 30], mu=[0.01, 1.0, 25.0], theta=[0.5, 3.0, 40.0])
    x, mu, theta = _t(x, mu, theta, dtype=dtype)
    by_mean = NegativeBinomial(mu=mu, theta=theta).log_prob(x)
    logits = torch.log(mu / theta)
    by_logits = NegativeBinomial(total_count=theta, logits=logits).log_prob(x)
    by_probs = NegativeBinomial(total_count=theta, probs=mu / (mu + theta)).log_prob(x)
    reference = torch.distributions.NegativeBinomial(total_count=theta, logits=logits).log_prob(x)
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    for other in (by_logits, by_probs, reference):
        torch.testing.assert_close(other, by_mean, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parameter_conversion_round_trips(dtype):
    mu = torch.tensor([1e-3, 0.5, 7.0, 3e4], dtype=dtype)
    theta = torch.tensor([2.0, 1e-3, 7.0, 1e5], dtype=dtype)
    dist = NegativeBinomial(mu=mu, theta=theta)
    eps = torch.finfo(dtype).eps
    assert torch.equal(dist.total_count, theta)
    torch.testing.assert_close(dist.probs, mu / (mu + theta), rtol=2 * eps, atol=0)
    torch.testing.assert_close(dist.logits, torch.log(mu) - torch.log(theta), rtol=2 * eps, atol=0)
    # The way back is only as well conditioned as the parameterisation: exp(logits) has
    # relative error eps * |logits|, and p / (1 - p) has eps / (1 - p) as p -> 1.
    logits_rtol = 4 * eps * (2 + dist.logits.abs())
    probs_rtol = 4 * eps * (mu + theta) / theta
    for name, rtol in (("logits", logits_rtol), ("probs", probs_rtol)):
        back = NegativeBinomial(total_count=dist.total_count, **{name: getattr(dist, name)})
        assert torch.equal(back.theta, theta)
        assert ((back.mu - mu).abs() <= rtol * mu).all()
    torch_nb = torch.distributions.NegativeBinomial(total_count=theta, logits=dist.logits)
    torch.testing.assert_close(torch_nb.probs, dist.probs, rtol=8 * eps, atol=0)
    assert ((torch_nb.mean - dist.mean).abs() <= logits_rtol * mu).all()
    assert ((torch_nb.variance - dist.variance).abs() <= 2 * logits_rtol * dist.variance).all()


def test_mean_and_variance_properties():
    mu = torch.tensor([[0.5, 4.0, 30.0]])
    theta = torch.tensor([2.0, 0.1, 1e3])
    dist = NegativeBinomial(mu=mu, theta=theta)
    assert dist.batch_shape == (1, 3)
    torch.testing.assert_close(dist.mean, mu)
    torch.testing.assert_close(dist.variance, mu + mu**2 / theta)


def _assert_moments_match(samples: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor):
    """Sample mean and variance within 5 standard errors of the theoretical values.

    SE(mean) = sqrt(var / n); for the sample variance, SE = sqrt((m4 - s^4) / n) with m4 the
    sample fourth central moment (the large-n variance of s^2). At 5 SE a correct sampler
    fails a given check with probability < 1e-6, and the seed is fixed anyway.
    """
    samples = samples.double()
    n = samples.shape[0]
    sample_mean = samples.mean(0)
    centred = samples - sample_mean
    sample_var = (centred**2).sum(0) / (n - 1)
    m4 = (centred**4).mean(0)
    se_mean = (variance.double() / n).sqrt()
    se_var = ((m4 - sample_var**2).clamp(min=0) / n).sqrt()
    assert ((sample_mean - mean.double()).abs() <= 5 * se_mean).all()
    assert ((sample_var - variance.double()).abs() <= 5 * se_var).all()


def test_sample_moments():
    torch.manual_seed(1)
    mu = torch.tensor([0.5, 5.0, 50.0]).repeat_interleave(3)
    theta = torch.tensor([0.5, 2.0, 20.0]).repeat(3)
    dist = NegativeBinomial(mu=mu, theta=theta)
    samples = dist.sample((200_000,))
    assert samples.shape == (200_000, 9)
    assert (samples >= 0).all() and (samples == samples.round()).all()
    _assert_moments_match(samples, dist.mean, dist.variance)


def test_sample_extremes_are_finite_counts():
    torch.manual_seed(2)
    dist = NegativeBinomial(
        mu=torch.tensor([0.0, 1e-6, 3.0, 1e12]),
        theta=torch.tensor([1.0, 1e-6, 1e8, 1e-3]),
        max_poisson_rate=1e7,
    )
    samples = dist.sample((1000,))
    assert torch.isfinite(samples).all() and (samples >= 0).all()
    assert (samples[:, 0] == 0).all()
    assert samples.max() <= 2e7


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_finite_at_extremes(dtype):
    x, mu, theta = _grid(
        x=[0, 1, 7, 1e5, 1e6], mu=[0.0, 1e-8, 1e-3, 1.0, 1e4, 1e7], theta=[1e-6, 1e-4, 1, 1e6, 1e8]
    )
    x, mu, theta = _t(x, mu, theta, dtype=dtype)
    mu.requires_grad_(True)
    theta.requires_grad_(True)
    log_nb_positive(x, mu, theta).sum().backward()
    assert torch.isfinite(mu.grad).all() and torch.isfinite(theta.grad).all()


def test_gradients_match_analytic():
    x, mu, theta = _grid(x=[0, 1, 7, 300], mu=[0.01, 2.0, 500.0], theta=[0.05, 3.0, 1e4, 1e8])
    x, mu, theta = _t(x, mu, theta, dtype=torch.float64)
    mu.requires_grad_(True)
    theta.requires_grad_(True)
    log_nb_positive(x, mu, theta).sum().backward()
    x_np, mu_np, theta_np = (t.detach().numpy() for t in (x, mu, theta))
    d_mu = theta_np * (x_np - mu_np) / (mu_np * (theta_np + mu_np))
    psi_diff = special.digamma(x_np + theta_np) - special.digamma(theta_np)
    d_theta = psi_diff - np.log1p(mu_np / theta_np) + (mu_np - x_np) / (theta_np + mu_np)
    np.testing.assert_allclose(mu.grad.numpy(), d_mu, rtol=1e-9, atol=1e-12)
    # Compared on log(theta), the scale models optimise theta on. The float64 digamma
    # difference in the reference is itself only good to ~eps64 * theta * log(theta) there.
    np.testing.assert_allclose(
        (theta.grad * theta).detach().numpy(), d_theta * theta_np, rtol=1e-7, atol=1e-6
    )


def test_float32_gradients_agree_with_float64():
    # x + theta lands exactly on the float32 (5) and float64 (10) series switch points,
    # where a double-counted gradient would show up.
    x, mu, theta = _grid(x=[0, 1, 2, 7, 40], mu=[0.1, 3.0, 80.0], theta=[0.3, 3.0, 8.0, 500.0])
    grads = {}
    for dtype in (torch.float32, torch.float64):
        xt, mut, thetat = _t(x, mu, theta, dtype=dtype)
        mut.requires_grad_(True)
        thetat.requires_grad_(True)
        log_nb_positive(xt, mut, thetat).sum().backward()
        grads[dtype] = (mut.grad.double(), (thetat.grad * thetat).detach().double())
    for low, high in zip(grads[torch.float32], grads[torch.float64], strict=True):
        torch.testing.assert_close(low, high, rtol=1e-4, atol=1e-5)


def test_gradcheck():
    x = torch.tensor([0.0, 1.0, 4.0, 12.0], dtype=torch.float64)
    mu = torch.tensor([0.3, 2.0, 5.0, 40.0], dtype=torch.float64, requires_grad=True)
    theta = torch.tensor([0.2, 1.5, 30.0, 4.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, t: log_nb_positive(x, m, t), (mu, theta))


def test_validate_args_rejects_bad_values():
    dist = NegativeBinomial(mu=torch.tensor([1.0, 2.0]), theta=3.0, validate_args=True)
    with pytest.warns(UserWarning, match="support"):  # as scvi-tools: a warning
        dist.log_prob(torch.tensor([1.0, -1.0]))
    with pytest.warns(UserWarning, match="support"):  # as scvi-tools: a warning
        dist.log_prob(torch.tensor([1.0, 2.5]))
    with pytest.raises(ValueError, match="parameter mu"):
        NegativeBinomial(mu=torch.tensor([-1.0]), theta=torch.tensor([1.0]), validate_args=True)
    with pytest.raises(ValueError, match="parameter theta"):
        NegativeBinomial(mu=torch.tensor([1.0]), theta=torch.tensor([-1.0]), validate_args=True)
    lenient = NegativeBinomial(mu=torch.tensor([1.0]), theta=torch.tensor([1.0]))
    assert torch.isfinite(lenient.log_prob(torch.tensor([2.5]))).all()


def test_bad_parameter_combinations():
    with pytest.raises(ValueError):
        NegativeBinomial(mu=1.0)
    with pytest.raises(ValueError):
        NegativeBinomial(mu=1.0, theta=1.0, total_count=1.0, logits=0.0)
    with pytest.raises(ValueError):
        NegativeBinomial(total_count=1.0, probs=0.5, logits=0.0)
    with pytest.raises(ValueError):
        NegativeBinomial(total_count=1.0)


def test_get_normalized_and_repr():
    mu = torch.rand(2, 3)
    scale = mu / mu.sum(-1, keepdim=True)
    dist = NegativeBinomial(mu=mu, theta=torch.ones(3), scale=scale)
    assert dist.get_normalized("mu") is mu
    assert dist.get_normalized("scale") is scale
    with pytest.raises(ValueError):
        dist.get_normalized("other")
    with pytest.raises(ValueError):
        NegativeBinomial(mu=mu, theta=1.0).get_normalized("scale")
    expected = "NegativeBinomial(mu: shape (2, 3), theta: shape (3,), scale: shape (2, 3))"
    assert repr(dist) == expected
    assert repr(NegativeBinomial(mu=2.0, theta=0.5)) == "NegativeBinomial(mu: 2, theta: 0.5)"


def test_expand():
    dist = NegativeBinomial(mu=torch.tensor([1.0, 2.0]), theta=torch.tensor(3.0))
    wide = dist.expand((5, 2))
    assert wide.batch_shape == (5, 2)
    assert wide.sample().shape == (5, 2)
    torch.testing.assert_close(wide.log_prob(torch.ones(5, 2))[0], dist.log_prob(torch.ones(2)))


def test_reexports_are_torch_distributions():
    assert Poisson is torch.distributions.Poisson
    assert Normal is torch.distributions.Normal
