"""``DifferentialComputation``: Bayesian differential expression from posterior samples.

Two populations of cells are each summarised by draws from their aggregate posterior of
normalized expression (``n_samples_overall`` rows of genes). ``"vanilla"`` mode (Lopez et al.
2018) estimates ``p(rho_1 > rho_2)`` per gene from paired draws; ``"change"`` mode (Boyeau et
al. 2019) forms the posterior of the log2 fold change ``r`` and estimates the probability that
``|r|`` exceeds ``delta``. The default change statistics are computed over pieces of genes
(torch and numpy, whichever is faster for each step), so that no temporary exceeds a few MB.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch

from cellvi._constants import REGISTRY_KEYS

logger = logging.getLogger("cellvi")

_EPS = 1e-8
# Entries (draws x genes) of one piece of the change statistics: 4 MB of float32 per buffer,
# small enough to stay in cache and to be reused by the allocator rather than mapped afresh.
_PIECE_ENTRIES = 1 << 20


class DifferentialComputation:
    """Differential expression between two sets of cells, from a model's posterior samples.

    Parameters
    ----------
    model_fn
        Draws normalized expression: called as ``model_fn(adata, indices=...,
        transform_batch=..., n_samples_overall=...)`` and returning a numpy array of
        ``(n_samples_overall, n_genes)`` (e.g. a partial of ``get_normalized_expression``).
    representation_fn
        Latent representation of cells (``get_latent_representation``), used to drop outlier
        cells; None keeps every cell.
    adata_manager
        The registration of the AnnData the cells belong to.
    """

    def __init__(
        self,
        model_fn: Callable[..., np.ndarray],
        representation_fn: Callable[..., np.ndarray] | None,
        adata_manager: Any,
    ) -> None:
        self.adata_manager = adata_manager
        self.adata = adata_manager.adata
        self.model_fn = model_fn
        self.representation_fn = representation_fn

    def process_selection(
        self, selection: Sequence[bool] | Sequence[int] | np.ndarray
    ) -> np.ndarray:
        """Cell positions of a selection given as a boolean mask or as positions."""
        selection = np.asarray(selection)
        if selection.dtype == bool:
            if len(selection) != self.adata.n_obs:
                raise ValueError(
                    f"A boolean mask must have one entry per cell ({self.adata.n_obs}), got "
                    f"{len(selection)}."
                )
            selection = np.flatnonzero(selection)
        return selection.astype(np.int64, copy=False)

    def filter_outlier_cells(self, selection: Sequence[bool] | np.ndarray) -> np.ndarray:
        """The selected cells minus outliers of their latent space (a robust Gaussian fit)."""
        from sklearn.covariance import EllipticEnvelope

        selection = self.process_selection(selection)
        representation = self.representation_fn(self.adata, indices=selection)
        try:
            inliers = EllipticEnvelope().fit_predict(representation) == 1
        except ValueError:
            warnings.warn(
                "Could not estimate the covariance of the latent representations; using "
                "every cell.",
                UserWarning,
                stacklevel=2,
            )
            return selection
        return selection[inliers]

    def scale_sampler(
        self,
        selection: Sequence[bool] | np.ndarray,
        n_samples_overall: int | None = 5000,
        n_samples_per_cell: int | None = None,
        batchid: Sequence[Any] | None = None,
        use_observed_batches: bool | None = False,
        give_mean: bool | None = False,
    ) -> dict[str, np.ndarray]:
        """Draws of the selection's aggregate posterior of normalized expression.

        Parameters
        ----------
        selection
            Cells (mask or positions).
        n_samples_overall
            Draws in all, shared equally by the batches decoded in.
        n_samples_per_cell
            Instead, this many draws per selected cell (per batch).
        batchid
            Batches to decode the cells in (default: every batch); with
            ``use_observed_batches``, each cell's own batch and ``batchid`` must be None.
        use_observed_batches
            Decode each cell in its own batch.
        give_mean
            Return the mean of the draws instead.

        Returns
        -------
        ``{"scale": (n_draws, n_genes), "batch": (n_draws,)}``: the draws and the batch each
        was decoded in (NaN for the cell's own batch).
        """
        if use_observed_batches:
            if batchid is not None:
                raise ValueError(
                    "Inconsistent batch policy: batchid given with use_observed_batches=True."
                )
            batchid = [None]
        elif batchid is None:
            state = self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY)
            batchid = list(state.categorical_mapping)
        selection = self.process_selection(selection)
        if len(selection) == 0:
            raise ValueError("The selection holds no cells.")
        if n_samples_per_cell is not None and n_samples_overall is not None:
            warnings.warn(
                "n_samples_overall and n_samples_per_cell were both given; n_samples_per_cell "
                "is not used.",
                UserWarning,
                stacklevel=2,
            )
        if n_samples_overall is not None:
            n_samples = n_samples_overall
        elif n_samples_per_cell is not None:
            n_samples = n_samples_per_cell * len(selection)
        else:
            n_samples = 5000
        n_per_batch = int(n_samples / len(batchid))
        if n_per_batch == 0:
            warnings.warn(
                "Very few posterior samples per batch; consider a larger n_samples.",
                UserWarning,
                stacklevel=2,
            )
            n_per_batch = 2
        scales, batches = [], []
        for batch in batchid:
            draws = np.asarray(
                self.model_fn(
                    self.adata,
                    indices=selection,
                    transform_batch=batch,
                    n_samples_overall=n_per_batch,
                )
            )
            scales.append(draws)
            batches.append(np.full(len(draws), np.nan if batch is None else batch, dtype=object))
        scale = scales[0] if len(scales) == 1 else np.concatenate(scales)
        batch = np.concatenate(batches)
        if give_mean:
            scale = scale.mean(0)
        return {"scale": scale, "batch": batch}

    def get_bayes_factors(
        self,
        idx1: Sequence[bool] | np.ndarray,
        idx2: Sequence[bool] | np.ndarray,
        mode: Literal["vanilla", "change"] = "change",
        batchid1: Sequence[Any] | None = None,
        batchid2: Sequence[Any] | None = None,
        use_observed_batches: bool | None = False,
        n_samples_overall: int = 5000,
        use_permutation: bool = False,
        m_permutation: int = 10000,
        change_fn: str | Callable[..., np.ndarray] | None = None,
        m1_domain_fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
        delta: float | None = 0.5,
        pseudocounts: float | None = None,
        threshold_counts: float = 0.01,
        test_mode: Literal["two", "three"] = "three",
        cred_interval_lvls: Sequence[float] | np.ndarray | None = None,
    ) -> dict[str, Any]:
        r"""Bayes factors and posterior statistics of differential expression, per gene.

        Parameters
        ----------
        idx1, idx2
            The two populations (masks or positions).
        mode
            ``"vanilla"``: ``proba_m1 = p(rho_1 > rho_2)``, ``proba_m2`` and the log Bayes
            factor. ``"change"``: the posterior of the effect ``r = change_fn(rho_1,
            rho_2)`` (log2 fold change by default) and ``proba_de = p(r in R_1)`` with
            ``R_1 = {|r| >= delta}`` (or ``m1_domain_fn``), its summaries (``lfc_mean``,
            ``lfc_median``, ``lfc_std``, ``lfc_min``, ``lfc_max``) and the log Bayes factor.
        batchid1, batchid2
            Batches to decode each population in (default every batch). Draws of the same
            batch are paired when both populations use the same batches.
        use_observed_batches
            Decode each cell in its own batch instead (``batchid1`` / ``batchid2`` unused).
        n_samples_overall
            Posterior draws per population.
        use_permutation
            Pair ``m_permutation`` draws picked at random from each population instead of the
            draws in order.
        m_permutation
            Number of random pairs with ``use_permutation``.
        change_fn
            ``"log-fold"`` / None (log2 fold change with pseudocounts) or a function
            ``f(rho_1, rho_2, pseudocounts)`` of the draws.
        m1_domain_fn
            A function of the effect draws returning the two boolean arrays ``(r in
            R_1^+, r in R_1^-)``; default ``(r >= delta, r < -delta)``.
        delta
            Threshold of the default region; None estimates it from the genes' mean effects
            (:func:`estimate_delta`).
        pseudocounts
            Added to both expressions before the log; None estimates it from genes without
            counts in a population (:func:`estimate_pseudocounts_offset`).
        threshold_counts
            Mean count below which a gene counts as not expressed in a population.
        test_mode
            ``"three"``: ``proba_de`` is the larger of up- and down-regulation; ``"two"``
            their sum.
        cred_interval_lvls
            Levels of the highest-density credible intervals of the fold change to add.

        Returns
        -------
        A dict of per-gene arrays (and scalar ``pseudocounts`` and ``delta`` in change mode).
        """
        if mode not in ("vanilla", "change"):
            raise NotImplementedError(f"Mode {mode!r} is not known: use 'vanilla' or 'change'.")
        if test_mode not in ("two", "three"):
            raise ValueError(f"test_mode must be 'two' or 'three', got {test_mode!r}.")
        if self.representation_fn is not None:
            idx1 = self.filter_outlier_cells(idx1)
            idx2 = self.filter_outlier_cells(idx2)
        draws1 = self.scale_sampler(
            idx1,
            batchid=batchid1,
            use_observed_batches=use_observed_batches,
            n_samples_overall=n_samples_overall,
        )
        draws2 = self.scale_sampler(
            idx2,
            batchid=batchid2,
            use_observed_batches=use_observed_batches,
            n_samples_overall=n_samples_overall,
        )
        scale1_mean = draws1["scale"].mean(0)
        scale2_mean = draws2["scale"].mean(0)
        scales_1, scales_2 = _paired_draws(
            draws1, draws2, bool(use_observed_batches), use_permutation, m_permutation
        )
        if mode == "vanilla":
            proba_m1 = _mean_over_draws(lambda a, b: a > b, scales_1, scales_2)
            return {
                "proba_m1": proba_m1,
                "proba_m2": 1.0 - proba_m1,
                "bayes_factor": np.log(proba_m1 + _EPS) - np.log(1.0 - proba_m1 + _EPS),
                "scale1": scale1_mean,
                "scale2": scale2_mean,
            }

        if pseudocounts is None:
            pseudocounts = self._estimate_pseudocounts(
                idx1, idx2, scales_1, scales_2, threshold_counts
            )
        logger.debug("Using pseudocounts ~ %s", pseudocounts)
        default_change = change_fn is None or change_fn == "log-fold"
        if not default_change and not callable(change_fn):
            raise ValueError(f"change_fn {change_fn!r} not understood: 'log-fold' or a function.")
        if not default_change and _n_parameters(change_fn) != 3:
            raise ValueError("change_fn must take three parameters: (rho_1, rho_2, pseudocounts).")
        if m1_domain_fn is not None and _n_parameters(m1_domain_fn) != 1:
            raise ValueError("m1_domain_fn must take one parameter: the effect draws.")
        if default_change and m1_domain_fn is None:
            stats = _log_fold_statistics(
                scales_1, scales_2, float(pseudocounts), delta, cred_interval_lvls
            )
            proba_plus, proba_minus, delta_, summaries = stats
        else:
            change = change_fn if callable(change_fn) else _log2_fold_change
            try:
                effects = change(scales_1, scales_2, pseudocounts)
                delta_ = estimate_delta(effects.mean(0)) if delta is None else delta
                domain = m1_domain_fn or _default_domain(delta_)
                is_plus, is_minus = domain(effects)
                summaries = describe_continuous_distrib(
                    change(scales_1, scales_2, 1e-3 * pseudocounts), cred_interval_lvls
                )
            except TypeError as error:
                raise TypeError(
                    "change_fn or m1_domain_fn failed on the draws: they must take and return "
                    "numpy arrays (see the signatures in get_bayes_factors)."
                ) from error
            proba_plus, proba_minus = np.mean(is_plus, 0), np.mean(is_minus, 0)
        proba_de = (
            proba_plus + proba_minus if test_mode == "two" else np.maximum(proba_plus, proba_minus)
        )
        return {
            "proba_de": proba_de,
            "proba_not_de": 1.0 - proba_de,
            "bayes_factor": np.log(proba_de + _EPS) - np.log(1.0 - proba_de + _EPS),
            "scale1": scale1_mean,
            "scale2": scale2_mean,
            "pseudocounts": pseudocounts,
            "delta": delta_,
            **{f"lfc_{name}": values for name, values in summaries.items()},
        }

    def _estimate_pseudocounts(
        self,
        idx1: np.ndarray,
        idx2: np.ndarray,
        scales_1: np.ndarray,
        scales_2: np.ndarray,
        threshold_counts: float,
    ) -> float:
        x = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        where_zero = [
            np.asarray(x[self.process_selection(idx)].mean(0)).ravel() < threshold_counts
            for idx in (idx1, idx2)
        ]
        return estimate_pseudocounts_offset(
            scales_a=scales_1,
            scales_b=scales_2,
            where_zero_a=where_zero[0],
            where_zero_b=where_zero[1],
            quantile=0.9,
        )


# Pairing draws ---------------------------------------------------------------------------------


def _paired_draws(
    draws1: dict[str, np.ndarray],
    draws2: dict[str, np.ndarray],
    use_observed_batches: bool,
    use_permutation: bool,
    m_permutation: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the two populations' draws to compare pairwise.

    When both were decoded in the same batches, draws are paired within each batch, so that
    batch effects cancel in each pair.
    """
    batches1 = set(draws1["batch"].tolist())
    batches2 = set(draws2["batch"].tolist())
    if not use_observed_batches and batches1 == batches2:
        n_per_batch = None if m_permutation is None else m_permutation // len(batches1)
        pairs = [
            pairs_sampler(
                draws1["scale"][draws1["batch"] == batch],
                draws2["scale"][draws2["batch"] == batch],
                use_permutation=use_permutation,
                m_permutation=n_per_batch,
            )
            for batch in sorted(batches1)
        ]
        first = np.concatenate([pair[0] for pair in pairs])
        second = np.concatenate([pair[1] for pair in pairs])
    else:
        if not use_observed_batches and batches1 & batches2:
            warnings.warn(
                "The two populations are decoded in different but overlapping batches; "
                "comparing them without matching batches, so batch correction is not "
                "trustworthy here.",
                UserWarning,
                stacklevel=3,
            )
        first, second = pairs_sampler(
            draws1["scale"],
            draws2["scale"],
            use_permutation=use_permutation,
            m_permutation=m_permutation,
        )
    n = min(len(first), len(second))  # unequal only when batches split the draws unevenly
    return first[:n], second[:n]


def pairs_sampler(
    arr1: np.ndarray,
    arr2: np.ndarray,
    use_permutation: bool = True,
    m_permutation: int | None = None,
    sanity_check_perm: bool = False,
    weights1: np.ndarray | None = None,
    weights2: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of draws of two populations.

    Without ``use_permutation`` the draws are paired in order. With it, ``m_permutation``
    draws are picked at random (with probabilities ``weights1`` / ``weights2``) from each;
    ``sanity_check_perm`` picks both from the pooled draws instead (a null check).
    """
    if not use_permutation:
        return arr1, arr2
    if sanity_check_perm:
        pooled = np.concatenate((arr1, arr2))
        u = np.random.choice(len(pooled), size=m_permutation)
        v = np.random.choice(len(pooled), size=m_permutation)
        return pooled[u], pooled[v]
    u = np.random.choice(arr1.shape[0], size=m_permutation, p=weights1)
    v = np.random.choice(arr2.shape[0], size=m_permutation, p=weights2)
    return arr1[u], arr2[v]


# Statistics ------------------------------------------------------------------------------------


def _mean_over_draws(
    compare: Callable[[np.ndarray, np.ndarray], np.ndarray],
    scales_1: np.ndarray,
    scales_2: np.ndarray,
) -> np.ndarray:
    """Mean over draws of a boolean comparison of paired draws, per gene (float64)."""
    return np.count_nonzero(compare(scales_1, scales_2), axis=0) / scales_1.shape[0]


def _log_fold_statistics(
    scales_1: np.ndarray,
    scales_2: np.ndarray,
    pseudocounts: float,
    delta: float | None,
    levels: Sequence[float] | None,
) -> tuple[np.ndarray, np.ndarray, float, dict[str, np.ndarray]]:
    """Up / down probabilities, threshold and summaries of the log2 fold change.

    The probabilities use ``pseudocounts``; the summaries a thousandth of it (so that they
    describe the fold change itself). Computed a piece of genes at a time (draws x genes,
    reductions over the draws), in reused buffers: no temporary is larger than
    ``_PIECE_ENTRIES`` entries.
    """
    a = torch.from_numpy(np.ascontiguousarray(scales_1, dtype=np.float32))
    b = torch.from_numpy(np.ascontiguousarray(scales_2, dtype=np.float32))
    n_draws, n_genes = a.shape
    width = max(1, min(n_genes, _PIECE_ENTRIES // max(1, n_draws)))
    pieces = [slice(g, min(g + width, n_genes)) for g in range(0, n_genes, width)]
    buffers = torch.empty(2, n_draws, width)

    def ratio(genes: slice, offset: float) -> torch.Tensor:
        return _ratio_into(
            buffers[:, :, : genes.stop - genes.start], a[:, genes], b[:, genes], offset
        )

    if delta is None:
        means = [ratio(genes, pseudocounts).log2_().mean(0).numpy() for genes in pieces]
        delta = estimate_delta(np.concatenate(means))
    # |log2 r| >= delta is decided on r itself (the logarithm is monotone): one pass of
    # logarithms fewer.
    above, below = np.float32(2.0**delta), np.float32(2.0**-delta)
    plus, minus = np.empty(n_genes), np.empty(n_genes)
    names = ["mean", "median", "std", "min", "max"]
    for level in levels or []:
        names += [f"confidence_interval_{str(level)[:5]}_min"]
        names += [f"confidence_interval_{str(level)[:5]}_max"]
    summaries = {name: np.empty(n_genes, dtype=np.float32) for name in names}
    for genes in pieces:
        ratios = ratio(genes, pseudocounts).numpy()
        plus[genes] = np.count_nonzero(ratios >= above, axis=0) / n_draws
        minus[genes] = np.count_nonzero(ratios < below, axis=0) / n_draws
        fold = ratio(genes, 1e-3 * pseudocounts).log2_()
        mean = fold.mean(0)
        scratch = buffers[1, :, : genes.stop - genes.start]
        std = torch.sub(fold, mean, out=scratch).square_().mean(0).sqrt_()
        summaries["mean"][genes], summaries["std"][genes] = mean.numpy(), std.numpy()
        per_gene = fold.T.contiguous().numpy()  # (genes, draws): each gene's draws in a row
        median, low, high = _row_median_min_max(per_gene)
        summaries["median"][genes] = median
        summaries["min"][genes], summaries["max"][genes] = low, high
        for level in levels or []:
            low, high = credible_intervals(per_gene.T, confidence_level=level).T
            summaries[f"confidence_interval_{str(level)[:5]}_min"][genes] = low
            summaries[f"confidence_interval_{str(level)[:5]}_max"][genes] = high
    return plus, minus, float(delta), summaries


def _ratio_into(
    buffers: torch.Tensor, a: torch.Tensor, b: torch.Tensor, pseudocounts: float
) -> torch.Tensor:
    """``(a + c) / (b + c)`` for a piece of genes, written into ``buffers[0]``.

    Its ``log2`` is the log fold change: one logarithm of the ratio instead of a difference
    of two (the logarithm is the costly step; the two agree to float32 rounding).
    """
    out, scratch = buffers[0], buffers[1]
    torch.add(a, pseudocounts, out=out)
    torch.add(b, pseudocounts, out=scratch)
    return out.div_(scratch)


def _log2_fold_change(x: np.ndarray, y: np.ndarray, pseudocounts: float) -> np.ndarray:
    return np.log2(x + pseudocounts) - np.log2(y + pseudocounts)


def _default_domain(delta: float) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    def domain(effects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return effects >= delta, effects < -delta

    return domain


def _row_median_min_max(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median (as ``np.median``: the mean of the middle two for an even count), min and max of
    each row, from one partial sort around the middle (``rows`` is reordered in place)."""
    n = rows.shape[1]
    middle = n // 2
    rows.partition(middle, axis=1)
    # After the partition the left part holds the ``middle`` smallest values.
    upper = rows[:, middle]
    low = rows[:, :middle].min(1) if middle else upper
    high = rows[:, middle:].max(1)
    if n % 2:
        return upper, low, high
    return (rows[:, :middle].max(1) + upper) / 2, low, high


def _n_parameters(function: Callable[..., Any]) -> int:
    return len(inspect.signature(function).parameters)


def estimate_delta(lfc_means: np.ndarray, coef: float = 0.6, min_thres: float = 0.1) -> float:
    """LFC threshold from the genes' mean log fold changes.

    A 3-component Gaussian mixture is fitted to the means; the threshold is ``coef`` times
    the mean absolute location of the lowest and highest components, at least
    ``min_thres``.
    """
    from sklearn.mixture import GaussianMixture

    lfc_means = np.asarray(lfc_means)
    if lfc_means.ndim != 1:
        raise ValueError("lfc_means must be 1-dimensional, of shape (n_genes,).")
    mixture = GaussianMixture(n_components=3).fit(lfc_means[:, None])
    locations = np.sort(mixture.means_.ravel())
    return float(max(min_thres, coef * np.abs(locations[[0, -1]]).mean()))


def estimate_pseudocounts_offset(
    scales_a: np.ndarray,
    scales_b: np.ndarray,
    where_zero_a: np.ndarray,
    where_zero_b: np.ndarray,
    quantile: float | None = 0.9,
) -> float:
    """Pseudocount that shrinks the fold changes of genes without counts towards zero.

    Among the genes without counts in a population, the ``quantile`` of their largest
    normalized expression draw is the size of an artefactual expression; the pseudocount is
    the larger of the two populations' values, divided by the number of genes (at least
    1e-10).
    """
    max_a, max_b = np.max(scales_a, 0), np.max(scales_b, 0)
    where_zero_a, where_zero_b = np.asarray(where_zero_a), np.asarray(where_zero_b)
    if not (max_a.shape == where_zero_a.shape == max_b.shape == where_zero_b.shape):
        raise ValueError(
            "Dimension mismatch between the scales and the masks of unexpressed genes."
        )
    eps_a = np.quantile(max_a[where_zero_a], q=quantile) if where_zero_a.any() else 1e-10
    eps_b = np.quantile(max_b[where_zero_b], q=quantile) if where_zero_b.any() else 1e-10
    return float(np.maximum(1e-10, max(eps_a, eps_b) / len(max_a)))


def credible_intervals(
    ary: np.ndarray, confidence_level: float | Sequence[float] | np.ndarray = 0.94
) -> np.ndarray:
    """Highest-density interval of samples at ``confidence_level`` (unimodal distributions).

    ``ary`` of shape ``(n_samples,)`` gives ``[low, high]``; of shape ``(n_samples,
    n_features)``, one row ``[low, high]`` per feature.
    """
    ary = np.asarray(ary)
    columns = ary[:, None] if ary.ndim == 1 else ary
    n = columns.shape[0]
    ordered = np.sort(columns, axis=0)
    width = int(np.floor(confidence_level * n))
    n_intervals = n - width
    if n_intervals <= 0:
        raise ValueError("Too few samples for the interval: confidence_level must be in [0, 1).")
    widths = ordered[width:] - ordered[:n_intervals]
    start = np.argmin(widths, axis=0)
    features = np.arange(columns.shape[1])
    intervals = np.stack([ordered[start, features], ordered[start + width, features]], axis=1)
    return intervals[0] if ary.ndim == 1 else intervals


def describe_continuous_distrib(
    samples: np.ndarray, credible_intervals_levels: Sequence[float] | None = None
) -> dict[str, np.ndarray]:
    """Mean, median, standard deviation, min, max (and credible intervals) of each column."""
    samples = np.asarray(samples)
    properties = {
        "mean": samples.mean(0),
        "median": np.median(samples, 0),
        "std": samples.std(0),
        "min": samples.min(0),
        "max": samples.max(0),
    }
    for level in credible_intervals_levels or []:
        low, high = credible_intervals(samples, confidence_level=level).T
        properties[f"confidence_interval_{str(level)[:5]}_min"] = low
        properties[f"confidence_interval_{str(level)[:5]}_max"] = high
    return properties
