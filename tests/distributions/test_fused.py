"""Fused per-cell NB / ZINB log-likelihood sums: values, gradients, paths and shapes."""

import itertools

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from cellvi.distributions import (
    NegativeBinomial,
    ZeroInflatedNegativeBinomial,
    log_nb_positive,
    log_zinb_positive,
    nb_log_likelihood_sum,
    zinb_log_likelihood_sum,
)

EPS32 = float(np.finfo(np.float32).eps)
LIKELIHOODS = ["nb", "zinb"]


def fused(kind, x, mu, theta, zi_logits, **kwargs):
    if kind == "nb":
        return nb_log_likelihood_sum(x, mu, theta, **kwargs)
    return zinb_log_likelihood_sum(x, mu, theta, zi_logits, **kwargs)


def exact(kind, x, mu, theta, zi_logits):
    if kind == "nb":
        return log_nb_positive(x, mu, theta).sum(-1)
    return log_zinb_positive(x, mu, theta, zi_logits).sum(-1)


def term_scale(x, mu, theta, zi_logits):
    """Per-cell sum of the sizes of the terms the fused formula adds in the input dtype.

    Rounding each of ``theta log1p(r)``, ``x |log r|``, ``x log1p(r)``, ``lgamma(x + 1)``
    and ``softplus(z)`` (and the result) to float32 bounds the fused error by a few eps32
    times this sum; the exact formula's error scales with ``|log p|`` alone.
    """
    x, mu, theta, zi_logits = (t.double() for t in (x, mu, theta, zi_logits))
    r = mu.clamp(min=1e-8) / theta.clamp(min=1e-8)
    scale = (
        theta * torch.log1p(r)
        + x * (torch.log(r).abs() + torch.log1p(r))
        + torch.lgamma(x + 1)
        + torch.nn.functional.softplus(zi_logits)
        + log_zinb_positive(x, mu, theta, zi_logits).abs()
    )
    return scale.sum(-1)


def realistic(n_cells=64, n_genes=50, seed=0, dtype=torch.float32):
    """Counts from the model itself (about 30% nonzero) with per-gene theta."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        gene_share = torch.softmax(1.5 * torch.randn(n_genes, dtype=torch.float64), 0)
        library = n_genes * torch.exp(0.3 * torch.randn(n_cells, 1, dtype=torch.float64))
        mu = library * gene_share
        theta = torch.exp(0.5 + torch.randn(n_genes, dtype=torch.float64))
        x = torch.poisson(torch.distributions.Gamma(theta, theta / mu).sample())
        zi_logits = torch.randn(n_cells, n_genes, dtype=torch.float64) - 1
    return [t.to(dtype) for t in (x, mu, theta, zi_logits)]


def extreme_grid(dtype):
    """Every (x, mu, z) combination as a cell, with one gene per theta value."""
    xs = [0, 1, 2, 3, 7, 10, 100, 1e3, 1e4, 1e5]
    mus = [0.0, 1e-8, 1e-3, 1.0, 100.0, 1e4, 1e5]
    zs = [-20.0, 0.0, 20.0]
    thetas = torch.tensor([1e-4, 0.1, 1.0, 10.0, 1e3, 1e6], dtype=dtype)
    cells = torch.tensor(list(itertools.product(xs, mus, zs)), dtype=dtype)
    n_genes = thetas.numel()
    x, mu, zi_logits = (cells[:, i : i + 1].expand(-1, n_genes).contiguous() for i in range(3))
    return x, mu, thetas, zi_logits


@pytest.mark.parametrize("kind", LIKELIHOODS)
@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("per_cell_theta", [False, True])
def test_float64_matches_exact(kind, sparse, per_cell_theta):
    x, mu, theta, zi_logits = realistic(dtype=torch.float64)
    if per_cell_theta:
        theta = theta * torch.exp(0.3 * torch.randn(x.shape, dtype=torch.float64))
    out = fused(kind, x, mu, theta, zi_logits, sparse=sparse)
    torch.testing.assert_close(out, exact(kind, x, mu, theta, zi_logits), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("kind", LIKELIHOODS)
@pytest.mark.parametrize("sparse", [True, False])
def test_float64_matches_exact_on_extreme_grid(kind, sparse):
    x, mu, theta, zi_logits = extreme_grid(torch.float64)
    out = fused(kind, x, mu, theta, zi_logits, sparse=sparse)
    ref = exact(kind, x, mu, theta, zi_logits)
    # The exact formula is good to a few ulps of |log p|; the fused one to a few ulps of
    # its largest term (lgamma(1e5 + 1) ~ 1e6 here), and the dense path's direct
    # lgamma(x + theta) - lgamma(theta) to a few ulps of lgamma(x + theta) (1e7).
    lgamma_size = torch.lgamma(x + theta).abs().sum(-1)
    tol = 1e-13 * term_scale(x, mu, theta, zi_logits) + 1e-15 * lgamma_size
    assert torch.all((out - ref).abs() <= tol)


@pytest.mark.parametrize("kind", LIKELIHOODS)
@pytest.mark.parametrize("sparse", [True, False])
def test_float32_within_term_rounding(kind, sparse):
    for x, mu, theta, zi_logits in (realistic(n_cells=256), extreme_grid(torch.float32)):
        out = fused(kind, x, mu, theta, zi_logits, sparse=sparse)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        ref = exact(kind, *(t.double() for t in (x, mu, theta, zi_logits)))
        error = (out.double() - ref).abs()
        assert torch.all(error <= 4 * EPS32 * term_scale(x, mu, theta, zi_logits))


@pytest.mark.parametrize("kind", LIKELIHOODS)
def test_float32_as_accurate_as_exact_on_realistic_sums(kind):
    """Per-cell sums of a realistic minibatch: summation error dominates both formulas."""
    x, mu, theta, zi_logits = realistic(n_cells=128, n_genes=400, seed=1)
    ref = exact(kind, *(t.double() for t in (x, mu, theta, zi_logits)))
    exact32_error = (exact(kind, x, mu, theta, zi_logits).double() - ref).abs().max()
    fused_error = (fused(kind, x, mu, theta, zi_logits).double() - ref).abs().max()
    assert fused_error <= 4 * exact32_error + 1e-6 * ref.abs().max()


def _gradients(fn, params):
    """Gradients of ``fn(*params).sum()``; None for a parameter it does not use (NB's z)."""
    params = [p.detach().clone().requires_grad_() for p in params]
    return torch.autograd.grad(fn(*params).sum(), params, allow_unused=True)


def _assert_gradients_close(got, ref, **tolerances):
    for g, r in zip(got, ref, strict=True):
        assert (g is None) == (r is None)
        if g is not None:
            torch.testing.assert_close(g, r, **tolerances)


@pytest.mark.parametrize("kind", LIKELIHOODS)
@pytest.mark.parametrize("sparse", [True, False])
def test_float32_gradients_match_exact(kind, sparse):
    x, mu, theta, zi_logits = realistic(n_cells=128)
    params = [mu, theta] if kind == "nb" else [mu, theta, zi_logits]
    padded = lambda *p: (*p, zi_logits)[:3]  # noqa: E731
    got = _gradients(lambda *p: fused(kind, x, *padded(*p), sparse=sparse), params)
    ref = _gradients(lambda *p: exact(kind, x, *padded(*p)), [p.double() for p in params])
    for name, g, r in zip(("mu", "theta", "zi_logits")[: len(params)], got, ref, strict=True):
        assert g.dtype == torch.float32
        tol = 1e-4 * r.abs() + 1e-5 * r.abs().max()
        assert torch.all((g.double() - r).abs() <= tol), name


@pytest.mark.parametrize("kind", LIKELIHOODS)
@pytest.mark.parametrize("sparse", [True, False])
def test_gradients_finite_at_extremes(kind, sparse):
    x, mu, theta, zi_logits = extreme_grid(torch.float32)
    params = [t.clone().requires_grad_() for t in (mu, theta, zi_logits)]
    fused(kind, x, *params, sparse=sparse).sum().backward()
    for param in params[: 2 if kind == "nb" else 3]:
        assert torch.isfinite(param.grad).all()


def _count_matrix(n_cells, n_genes, generator):
    """Counts with empty cells (first, middle and last), large and non-integer values."""
    x = torch.poisson(3 * torch.rand(n_cells, n_genes, generator=generator, dtype=torch.float64))
    x[[0, n_cells // 2, -1]] = 0
    x[1, 0], x[1, 1], x[2, 2] = 80.0, 2.5, 0.25
    return x


GRADCHECK_CASES = [
    # (mu shape, theta shape): per gene, scalar, per cell, with a sample dimension.
    ((6, 5), (5,)),
    ((6, 5), ()),
    ((6, 5), (1, 5)),
    ((6, 5), (6, 5)),
    ((3, 6, 5), (5,)),
    ((3, 6, 5), (6, 5)),
    ((3, 6, 5), (3, 6, 5)),
]


@pytest.mark.parametrize("kind", LIKELIHOODS)
@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize(("mu_shape", "theta_shape"), GRADCHECK_CASES)
def test_gradcheck(kind, sparse, mu_shape, theta_shape):
    generator = torch.Generator().manual_seed(0)

    def uniform(shape, low, high):
        values = torch.rand(shape, generator=generator, dtype=torch.float64)
        return (low + (high - low) * values).requires_grad_()

    x = _count_matrix(6, 5, generator)
    mu, theta = uniform(mu_shape, 0.1, 5), uniform(theta_shape, 0.2, 3)
    zi_logits = uniform(mu_shape, -2, 2)
    if kind == "nb":
        assert gradcheck(lambda m, t: nb_log_likelihood_sum(x, m, t, sparse=sparse), (mu, theta))
    else:
        assert gradcheck(
            lambda m, t, z: zinb_log_likelihood_sum(x, m, t, z, sparse=sparse),
            (mu, theta, zi_logits),
        )


@pytest.mark.parametrize("kind", LIKELIHOODS)
def test_sparse_and_dense_paths_agree(kind):
    """Enough cells for several table rows, plus counts the tables do not cover."""
    generator = torch.Generator().manual_seed(1)
    x = _count_matrix(200, 8, generator)
    x[3, :] = torch.tensor([1e4, 33.0, 1.5, 7.0, 1.0, 2.0, 3.0, 1e5], dtype=torch.float64)
    mu = 0.01 + 20 * torch.rand(200, 8, generator=generator, dtype=torch.float64)
    theta = torch.tensor([1e-4, 0.1, 1.0, 3.0, 10.0, 1e3, 1e6, 50.0], dtype=torch.float64)
    zi_logits = torch.randn(200, 8, generator=generator, dtype=torch.float64)
    # In float64 the dense path's lgamma(x + 1e6) - lgamma(1e6) loses eps64 * 1.4e7 ~ 3e-9.
    for dtype, rtol in ((torch.float64, 1e-8), (torch.float32, 1e-5)):
        inputs = [t.to(dtype) for t in (mu, theta, zi_logits)]
        sparse = _gradients(lambda *p, d=dtype: fused(kind, x.to(d), *p, sparse=True), inputs)
        dense = _gradients(lambda *p, d=dtype: fused(kind, x.to(d), *p, sparse=False), inputs)
        values = [fused(kind, x.to(dtype), *inputs, sparse=s) for s in (True, False)]
        torch.testing.assert_close(values[0], values[1], rtol=rtol, atol=rtol)
        for s, d in zip(sparse, dense, strict=True):
            if d is not None:
                torch.testing.assert_close(s, d, rtol=rtol, atol=rtol * d.abs().max().item())


@pytest.mark.parametrize("kind", LIKELIHOODS)
@pytest.mark.parametrize("counts", ["zeros", "nonzero"])
def test_all_zero_and_all_nonzero_counts(kind, counts):
    x, mu, theta, zi_logits = realistic(n_cells=8, n_genes=12, dtype=torch.float64)
    x = torch.zeros_like(x) if counts == "zeros" else x + 1
    params = [mu, theta, zi_logits]
    for sparse in (True, False):
        got = _gradients(lambda *p, s=sparse: fused(kind, x, *p, sparse=s), params)
        ref = _gradients(lambda *p: exact(kind, x, *p), params)
        torch.testing.assert_close(fused(kind, x, *params, sparse=sparse), exact(kind, x, *params))
        _assert_gradients_close(got, ref)


@pytest.mark.parametrize("kind", LIKELIHOODS)
def test_per_gene_theta_equals_expanded_theta(kind):
    x, mu, theta, zi_logits = realistic(dtype=torch.float64)
    per_gene = _gradients(lambda m, t, z: fused(kind, x, m, t, z), [mu, theta, zi_logits])
    per_cell = _gradients(
        lambda m, t, z: fused(kind, x, m, t.expand_as(x).contiguous(), z), [mu, theta, zi_logits]
    )
    _assert_gradients_close(per_gene, per_cell, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("kind", LIKELIHOODS)
@pytest.mark.parametrize("theta_layout", ["gene", "cell", "sample"])
def test_sample_dimension_broadcasting(kind, theta_layout):
    x, mu, theta, _ = realistic(n_cells=10, n_genes=7, dtype=torch.float64)
    generator = torch.Generator().manual_seed(2)
    mu = mu * torch.exp(torch.randn(3, *x.shape, generator=generator, dtype=torch.float64))
    zi_logits = torch.randn(3, *x.shape, generator=generator, dtype=torch.float64)
    if theta_layout == "cell":
        theta = theta * torch.exp(torch.randn(x.shape, generator=generator, dtype=torch.float64))
    elif theta_layout == "sample":
        theta = theta * torch.exp(torch.randn(mu.shape, generator=generator, dtype=torch.float64))
    out = fused(kind, x, mu, theta, zi_logits)
    assert out.shape == (3, 10)
    theta_of = (lambda s: theta[s]) if theta.dim() == 3 else (lambda s: theta)
    per_sample = torch.stack([fused(kind, x, mu[s], theta_of(s), zi_logits[s]) for s in range(3)])
    torch.testing.assert_close(out, per_sample, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(out, exact(kind, x, mu, theta, zi_logits), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("kind", LIKELIHOODS)
@pytest.mark.parametrize("sparse", [True, False])
def test_eps_clamping_matches_exact(kind, sparse):
    """mu = 0 and theta below eps are clamped, and get no gradient, as with clamp."""
    x, mu, theta, zi_logits = realistic(n_cells=6, n_genes=5, dtype=torch.float64)
    mu[0, :] = 0.0
    mu[1, 1] = 1e-8  # exactly eps: clamp still passes the gradient
    theta[2] = 1e-12
    params = [mu, theta, zi_logits]
    torch.testing.assert_close(fused(kind, x, *params, sparse=sparse), exact(kind, x, *params))
    got = _gradients(lambda *p: fused(kind, x, *p, sparse=sparse), params)
    ref = _gradients(lambda *p: exact(kind, x, *p), params)
    _assert_gradients_close(got, ref, rtol=1e-9, atol=1e-9)
    assert got[0][0].eq(0).all() and got[1][2] == 0


def test_integer_counts_and_no_grad_modes():
    x, mu, theta, zi_logits = realistic(n_cells=5, n_genes=4)
    ref = zinb_log_likelihood_sum(x, mu, theta, zi_logits)
    with torch.inference_mode():
        torch.testing.assert_close(zinb_log_likelihood_sum(x.long(), mu, theta, zi_logits), ref)


@pytest.mark.parametrize(
    ("x_shape", "mu_shape", "theta_shape", "zi_shape", "match"),
    [
        ((4, 3), (4, 3), (4,), (4, 3), "theta"),
        ((4, 3), (4, 3), (2, 4, 3), (4, 3), "theta"),
        ((2, 4, 3), (4, 3), (3,), (4, 3), "x of shape"),
        ((4, 3), (4, 3), (3,), (3,), "zi_logits"),
        ((4, 2), (4, 3), (3,), (4, 3), "x of shape"),
    ],
)
def test_unsupported_shapes_raise(x_shape, mu_shape, theta_shape, zi_shape, match):
    with pytest.raises(ValueError, match=match):
        zinb_log_likelihood_sum(
            torch.zeros(x_shape),
            torch.ones(mu_shape),
            torch.ones(theta_shape),
            torch.zeros(zi_shape),
        )


def test_bad_inputs_raise():
    x, mu, theta, _ = realistic(n_cells=3, n_genes=4)
    with pytest.raises(ValueError, match="must not require grad"):
        nb_log_likelihood_sum(x.requires_grad_(), mu, theta)
    with pytest.raises(ValueError, match="sparse=True"):
        nb_log_likelihood_sum(x.detach(), mu.bfloat16(), theta.bfloat16(), sparse=True)
    with pytest.raises(TypeError, match="floating point"):
        nb_log_likelihood_sum(x.detach(), mu.long(), theta.long())


@pytest.mark.parametrize("validate_args", [False, True])
def test_distribution_log_prob_sum(validate_args):
    x, mu, theta, zi_logits = realistic(n_cells=8, n_genes=6, dtype=torch.float64)
    nb = NegativeBinomial(mu=mu, theta=theta, validate_args=validate_args)
    zinb = ZeroInflatedNegativeBinomial(
        mu=mu, theta=theta, zi_logits=zi_logits, validate_args=validate_args
    )
    for dist in (nb, zinb):
        torch.testing.assert_close(dist.log_prob_sum(x), dist.log_prob(x).sum(-1))
    if validate_args:
        with pytest.warns(UserWarning, match="support"):
            nb.log_prob_sum(x - 0.5)
