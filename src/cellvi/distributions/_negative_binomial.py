"""Negative binomial distribution in the (mean, inverse dispersion) parameterisation."""

from __future__ import annotations

import warnings
from numbers import Number

import torch
from torch import Tensor
from torch.distributions import Distribution, Gamma, constraints
from torch.distributions.constraints import Constraint

from ._fused import nb_log_likelihood_sum

# log_zinb_positive is imported here too: scvi-tools code imports both from this module.
from ._log_pmf import log_nb_positive, log_zinb_positive  # noqa: F401

TensorLike = Tensor | Number


def _as_tensors(*values: TensorLike | None) -> tuple[Tensor | None, ...]:
    """Turn numbers into tensors on the dtype and device of the first tensor given.

    Deliberately does not broadcast: keeping ``theta`` at its per-gene shape lets the
    log-pmf do its theta-only work once per gene instead of once per cell and gene.
    """
    like = next((v for v in values if isinstance(v, Tensor)), None)
    dtype = torch.get_default_dtype() if like is None else like.dtype
    device = None if like is None else like.device
    return tuple(
        v if v is None or isinstance(v, Tensor) else torch.as_tensor(v, dtype=dtype, device=device)
        for v in values
    )


def _format_param(value: Tensor) -> str:
    return f"{value.item():.4g}" if value.numel() == 1 else f"shape {tuple(value.shape)}"


class NegativeBinomial(Distribution):
    """Negative binomial over counts, parameterised by mean and inverse dispersion.

    Give either ``mu`` and ``theta``, or torch's ``total_count`` with one of ``probs`` /
    ``logits``. The two are the same family: ``theta = total_count``, ``probs`` is torch's
    success probability ``mu / (mu + theta)`` and ``logits = log(mu / theta)``, so the mean
    ``total_count * probs / (1 - probs)`` is ``mu``.

    Parameters
    ----------
    total_count
        Number of failures ``r`` (torch convention); becomes ``theta``.
    probs
        Success probability in ``[0, 1)`` (torch convention).
    logits
        Log-odds of ``probs``.
    mu
        Mean, ``>= 0``.
    theta
        Inverse dispersion, ``> 0``: ``variance = mu + mu**2 / theta``.
    scale
        Optional normalised expression (``mu`` divided by library size), stored as is.
    validate_args
        Check parameters now and values passed to :meth:`log_prob`, raising ``ValueError``.
    max_poisson_rate
        Ceiling on the Gamma-distributed Poisson rate in :meth:`sample`; torch's Poisson
        sampler is slow and inexact beyond ~1e8, which only extreme ``mu`` can reach.

    Notes
    -----
    Parameters are stored unbroadcast (``mu`` of shape ``(cells, genes)`` and ``theta`` of
    shape ``(genes,)`` stay so); ``batch_shape`` is their broadcast shape.
    """

    support = constraints.nonnegative_integer

    def __init__(
        self,
        total_count: TensorLike | None = None,
        probs: TensorLike | None = None,
        logits: TensorLike | None = None,
        mu: TensorLike | None = None,
        theta: TensorLike | None = None,
        scale: TensorLike | None = None,
        validate_args: bool = False,
        max_poisson_rate: float = 1e8,
    ) -> None:
        self.mu, self.theta = self._resolve_parameters(total_count, probs, logits, mu, theta)
        self.scale = None if scale is None else _as_tensors(scale, self.mu)[0]
        self.max_poisson_rate = max_poisson_rate
        batch_shape = torch.broadcast_shapes(*(p.shape for p in self._batch_parameters()))
        super().__init__(batch_shape, validate_args=validate_args)

    #: Attributes holding the parameters, in the order the log-pmfs take them.
    _parameter_names: tuple[str, ...] = ("mu", "theta")

    def _batch_parameters(self) -> tuple[Tensor, ...]:
        """Parameters whose broadcast shape is the batch shape."""
        return tuple(getattr(self, name) for name in self._parameter_names)

    @staticmethod
    def _resolve_parameters(
        total_count: TensorLike | None,
        probs: TensorLike | None,
        logits: TensorLike | None,
        mu: TensorLike | None,
        theta: TensorLike | None,
    ) -> tuple[Tensor, Tensor]:
        """Map either parameterisation onto ``(mu, theta)``."""
        uses_torch_style = any(v is not None for v in (total_count, probs, logits))
        if uses_torch_style:
            if mu is not None or theta is not None:
                raise ValueError(
                    "Give either (mu, theta) or (total_count, probs|logits), not both."
                )
            if total_count is None or (probs is None) == (logits is None):
                raise ValueError("total_count needs exactly one of probs or logits.")
            if probs is not None:
                theta, probs = _as_tensors(total_count, probs)
                return theta * probs / (1.0 - probs), theta
            theta, logits = _as_tensors(total_count, logits)
            return theta * torch.exp(logits), theta
        if mu is None or theta is None:
            raise ValueError("Give both mu and theta (or total_count with probs or logits).")
        return _as_tensors(mu, theta)

    @property
    def arg_constraints(self) -> dict[str, Constraint]:
        """Constraints on the stored parameters, checked when ``validate_args=True``."""
        found = {"mu": constraints.nonnegative, "theta": constraints.positive}
        if self.scale is not None:
            found["scale"] = constraints.nonnegative
        return found

    @property
    def total_count(self) -> Tensor:
        """Torch-convention number of failures, equal to ``theta``."""
        return self.theta

    @property
    def probs(self) -> Tensor:
        """Torch-convention success probability ``mu / (mu + theta)``."""
        return self.mu / (self.mu + self.theta)

    @property
    def logits(self) -> Tensor:
        """Log-odds of :attr:`probs`, ``log(mu) - log(theta)``."""
        return torch.log(self.mu) - torch.log(self.theta)

    @property
    def mean(self) -> Tensor:
        """Mean ``mu``, broadcast to the batch shape."""
        return self.mu.expand(self.batch_shape)

    @property
    def variance(self) -> Tensor:
        """Variance ``mu + mu**2 / theta``."""
        return (self.mu + self.mu * self.mu / self.theta).expand(self.batch_shape)

    def get_normalized(self, key: str) -> Tensor:
        """Return ``mu`` (``key="mu"``) or the normalised expression (``key="scale"``).

        Parameters
        ----------
        key
            ``"mu"`` or ``"scale"``.

        Returns
        -------
        Tensor
            The requested parameter.
        """
        if key == "mu":
            return self.mu
        if key == "scale":
            if self.scale is None:
                raise ValueError("This distribution was built without `scale`.")
            return self.scale
        raise ValueError(f"Unknown key {key!r}: expected 'mu' or 'scale'.")

    def _validate_sample(self, value: Tensor) -> None:
        """Warn (as scvi-tools does, not raise) when ``value`` holds non-counts.

        Normalised or ambient-corrected data hold non-integers that users still score; the
        log-pmf extends to them through ``lgamma``, so a warning says it without stopping them.
        """
        if not isinstance(value, Tensor):
            raise ValueError(f"The value argument to log_prob must be a Tensor, got {value!r}.")
        if not bool(self.support.check(value).all()):
            warnings.warn(
                "The value argument must be within the support of the distribution "
                "(non-negative integer counts).",
                UserWarning,
                stacklevel=3,
            )

    # The elementwise and the per-cell summed log-pmf, fed ``_batch_parameters()``.
    _log_pmf = staticmethod(log_nb_positive)
    _log_pmf_sum = staticmethod(nb_log_likelihood_sum)

    def log_prob(self, value: Tensor) -> Tensor:
        """Elementwise log-pmf of ``value`` (``log_nb_positive``; ``log_zinb_positive`` for ZINB).

        Parameters
        ----------
        value
            Counts broadcastable with the batch shape.

        Returns
        -------
        Tensor
            Elementwise log-probabilities.
        """
        if self._validate_args:
            self._validate_sample(value)
        return self._log_pmf(value, *self._batch_parameters())

    def log_prob_sum(self, value: Tensor) -> Tensor:
        """Log-pmf summed over the last (gene) axis, with a fused, faster backward.

        Equal to ``log_prob(value).sum(-1)``; see
        :func:`~cellvi.distributions.nb_log_likelihood_sum` for the broadcasting it
        supports (``value`` may lack the leading sample dimensions of ``mu``).

        Parameters
        ----------
        value
            Counts of shape ``(..., genes)``.

        Returns
        -------
        Tensor
            Per-cell log-probabilities, shape ``batch_shape[:-1]``.
        """
        if self._validate_args:
            self._validate_sample(value)
        return self._log_pmf_sum(value, *self._batch_parameters())

    @torch.no_grad()
    def _sample_rate(self, sample_shape: torch.Size) -> Tensor:
        """Draw the Gamma-distributed Poisson rate, mean ``mu`` and variance ``mu**2/theta``."""
        theta = self.theta.expand(self.batch_shape)
        unit_gamma = Gamma(theta, torch.ones_like(theta), validate_args=False).sample(sample_shape)
        return (unit_gamma * (self.mu / self.theta)).clamp(max=self.max_poisson_rate)

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        """Draw counts through the Gamma-Poisson mixture (then zero-inflated, for ZINB).

        Parameters
        ----------
        sample_shape
            Leading shape of the draw.

        Returns
        -------
        Tensor
            Float tensor of non-negative integers, shape ``sample_shape + batch_shape``.
        """
        return self._inflate_zeros(torch.poisson(self._sample_rate(torch.Size(sample_shape))))

    def _inflate_zeros(self, counts: Tensor) -> Tensor:
        """Counts drawn from the negative binomial, as the final draw (nothing to add here)."""
        return counts

    def expand(
        self, batch_shape: torch.Size, _instance: NegativeBinomial | None = None
    ) -> NegativeBinomial:
        """Return a view of this distribution with a larger batch shape."""
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        for name in self._parameter_names:
            setattr(new, name, getattr(self, name).expand(batch_shape))
        new.scale = None if self.scale is None else self.scale.expand(batch_shape)
        new.max_poisson_rate = self.max_poisson_rate
        Distribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def __repr__(self) -> str:
        params = ", ".join(
            f"{name}: {_format_param(getattr(self, name))}" for name in self.arg_constraints
        )
        return f"{type(self).__name__}({params})"
