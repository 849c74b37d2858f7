"""Simulated single-cell count matrices with known cell types and batch effects."""

from __future__ import annotations

import math
import numbers
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

__all__ = ["simulate"]

# A chunk job (first row, seed of its counts) and its result (data, indices, nonzeros per row).
_Job = tuple[int, np.random.SeedSequence]
_CsrPiece = tuple[np.ndarray, np.ndarray, np.ndarray]

# About 65k entries per dense chunk: every temporary of a chunk (at most 512 kB) stays in the
# CPU cache through the chain of vectorised steps (measured about 1.5x faster than chunks of a
# million entries), while the per-chunk Python overhead stays a few percent.
_CHUNK_ELEMENTS = 1 << 16


def simulate(
    n_cells: int = 10_000,
    n_genes: int = 2_000,
    n_batches: int = 2,
    n_cell_types: int = 5,
    *,
    marker_fraction: float = 0.1,
    type_effect_strength: float = 1.5,
    n_programs: int = 0,
    program_strength: float = 0.3,
    gene_log_std: float = 1.2,
    library_log_mean: float = 7.5,
    library_log_std: float = 0.5,
    batch_effect_strength: float = 0.4,
    theta_log_mean: float = 1.0,
    theta_log_std: float = 0.7,
    seed: int = 0,
    n_threads: int | None = None,
) -> AnnData:
    """Simulate negative binomial counts from cell types observed in several batches.

    Every gene has a baseline log expression drawn from a normal distribution.  Each cell type
    perturbs a random subset of *marker* genes by normally distributed log fold changes, and
    each batch multiplies every gene by a log-normal factor.  The resulting profile of a cell's
    type and batch is normalised to sum to one, scaled by a log-normal library size drawn per
    cell, and counts are drawn as ``NB(mean=library * profile, inverse dispersion=theta_g)``
    with a log-normal gene-wise ``theta``.  Optional continuous *programs* add cell-specific
    variation within types.

    The defaults give a matrix with about 35% nonzero entries at ``n_genes=2_000`` (a median of
    about 1,800 counts per cell); the density grows with the library size and falls as the same
    library is spread over more genes.

    Parameters
    ----------
    n_cells
        Number of cells (rows).  Cells are split into ``n_batches`` contiguous blocks of near-equal
        size.
    n_genes
        Number of genes (columns).
    n_batches
        Number of batches.
    n_cell_types
        Number of cell types; each cell's type is drawn uniformly at random.
    marker_fraction
        Fraction of genes, in ``[0, 1]``, that each cell type perturbs (chosen independently per
        type).  ``0`` makes all types identical.
    type_effect_strength
        Standard deviation of the natural-log fold change of each marker gene.
    n_programs
        Number of continuous gene programs.  Each cell has a standard normal activity for every
        program, which shifts the log expression of all genes by ``activity * loading``.
    program_strength
        Standard deviation of the per-gene log loadings of each program.
    gene_log_std
        Standard deviation of the baseline natural-log expression across genes; larger values
        give a wider range between lowly and highly expressed genes.
    library_log_mean
        Mean of the natural log of the expected total counts per cell.
    library_log_std
        Standard deviation of the natural log of the expected total counts per cell.
    batch_effect_strength
        Standard deviation of the natural-log multiplicative effect of a batch on each gene.
        ``0`` removes batch effects.
    theta_log_mean
        Mean of the natural log of the gene-wise inverse dispersion ``theta`` (the variance of
        a count with mean ``mu`` is ``mu + mu**2 / theta``).
    theta_log_std
        Standard deviation of the natural log of ``theta`` across genes.
    seed
        Seed of the random generator; the same arguments and seed give the same data, whatever
        ``n_threads``.
    n_threads
        Threads drawing the counts; ``None`` uses up to four of the available cores.

    Returns
    -------
    AnnData
        ``X`` is a :class:`scipy.sparse.csr_matrix` of float32 whole-number counts;
        ``obs["batch"]`` (``"batch_0"``, ...) and ``obs["cell_type"]`` (``"type_0"``, ...)
        are categorical; ``var["theta"]`` holds the true inverse dispersions;
        ``varm["type_profiles"]`` (``n_genes x n_cell_types``) the true normalised expression
        of each type before batch effects and programs; ``varm["batch_log_effects"]``
        (``n_genes x n_batches``) the true natural-log batch effects; and
        ``uns["simulation"]`` the parameters used.

    Raises
    ------
    ValueError
        If an argument is out of range.

    Examples
    --------
    >>> adata = simulate(n_cells=1_000, n_genes=500, seed=1)
    >>> adata.shape
    (1000, 500)
    """
    n_cells, n_genes, n_batches, n_cell_types = _checked_ints(
        1, n_cells=n_cells, n_genes=n_genes, n_batches=n_batches, n_cell_types=n_cell_types
    )
    n_programs, seed = _checked_ints(0, n_programs=n_programs, seed=seed)
    if n_threads is not None:
        n_threads = _check_int("n_threads", n_threads, minimum=1)
    marker_fraction = _check_float("marker_fraction", marker_fraction, minimum=0.0, maximum=1.0)
    library_log_mean, theta_log_mean = _checked_floats(
        None, library_log_mean=library_log_mean, theta_log_mean=theta_log_mean
    )
    (
        type_effect_strength,
        program_strength,
        gene_log_std,
        library_log_std,
        batch_effect_strength,
        theta_log_std,
    ) = _checked_floats(
        0.0,
        type_effect_strength=type_effect_strength,
        program_strength=program_strength,
        gene_log_std=gene_log_std,
        library_log_std=library_log_std,
        batch_effect_strength=batch_effect_strength,
        theta_log_std=theta_log_std,
    )

    # Separate streams for the model parameters and for each chunk of counts, so the counts do
    # not depend on how chunks are scheduled across threads.
    params_seq, counts_seq = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(params_seq)

    # --- gene-level truth ---------------------------------------------------------------
    base_log = rng.normal(0.0, gene_log_std, size=n_genes)
    type_log = np.tile(base_log, (n_cell_types, 1))
    n_markers = round(marker_fraction * n_genes)
    if n_markers > 0:
        for t in range(n_cell_types):
            markers = rng.choice(n_genes, size=n_markers, replace=False)
            type_log[t, markers] += rng.normal(0.0, type_effect_strength, size=n_markers)
    batch_log = rng.normal(0.0, batch_effect_strength, size=(n_batches, n_genes))
    theta = np.exp(rng.normal(theta_log_mean, theta_log_std, size=n_genes))
    loadings = rng.normal(0.0, program_strength, size=(n_programs, n_genes))

    # --- cell-level truth ---------------------------------------------------------------
    batch_sizes = np.full(n_batches, n_cells // n_batches)
    batch_sizes[: n_cells % n_batches] += 1
    batch = np.repeat(np.arange(n_batches), batch_sizes)
    cell_type = rng.integers(0, n_cell_types, size=n_cells)
    library = np.exp(rng.normal(library_log_mean, library_log_std, size=n_cells))
    activity = rng.normal(0.0, 1.0, size=(n_cells, n_programs))

    # One unnormalised log profile per (type, batch) pair; cells index into it, so the dense
    # per-cell means only ever exist one chunk at a time.
    combo_log = (type_log[:, None, :] + batch_log[None, :, :]).reshape(-1, n_genes)
    combo = cell_type * n_batches + batch
    combo_rates = _softmax_rows(combo_log) if n_programs == 0 else None

    rows_per_chunk = max(1, _CHUNK_ELEMENTS // n_genes)
    starts = range(0, n_cells, rows_per_chunk)
    chunk_seqs = counts_seq.spawn(len(starts))
    # Per-entry gene parameters for a full chunk, flattened row-major: gathering from these is
    # cheaper than recomputing ``position % n_genes`` for every drawn entry.
    theta_tiled = np.tile(theta, rows_per_chunk)
    columns_tiled = np.tile(np.arange(n_genes, dtype=np.int32), rows_per_chunk)
    rates32 = combo_rates.astype(np.float32) if combo_rates is not None else None

    def draw_chunk(job: _Job) -> _CsrPiece:
        start, chunk_seq = job
        stop = min(start + rows_per_chunk, n_cells)
        if rates32 is not None:
            mu = rates32[combo[start:stop]]
        else:
            log_mu = combo_log[combo[start:stop]]
            log_mu += activity[start:stop] @ loadings
            mu = _softmax_rows(log_mu).astype(np.float32)
        mu *= library[start:stop, None].astype(np.float32)
        n_entries = mu.size
        counts = _negative_binomial(
            mu.ravel(), theta_tiled[:n_entries], np.random.default_rng(chunk_seq)
        )
        # Row-major flat positions of the nonzeros are already in CSR order (sorted columns).
        flat = np.flatnonzero(counts)
        row_ends = np.searchsorted(flat, np.arange(1, stop - start + 1) * n_genes)
        return counts[flat], columns_tiled[flat], np.diff(row_ends, prepend=0)

    jobs = list(zip(starts, chunk_seqs, strict=True))
    if n_threads is None:
        n_threads = min(4, _available_cores())
    n_threads = min(n_threads, len(jobs))
    if n_threads == 1:
        X = _assemble_csr(map(draw_chunk, jobs), n_cells, n_genes)
    else:
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            X = _assemble_csr(
                _ordered_results(pool, draw_chunk, jobs, window=4 * n_threads), n_cells, n_genes
            )

    obs = pd.DataFrame(
        {
            "batch": named_categories(batch, "batch", n_batches),
            "cell_type": named_categories(cell_type, "type", n_cell_types),
        },
        index=pd.Index([str(i) for i in range(n_cells)]),
    )
    var = pd.DataFrame(
        {"theta": theta.astype(np.float32)},
        index=pd.Index([f"gene_{g}" for g in range(n_genes)]),
    )
    adata = AnnData(X=X, obs=obs, var=var)
    adata.varm["type_profiles"] = _softmax_rows(type_log).T.astype(np.float32)
    adata.varm["batch_log_effects"] = batch_log.T.astype(np.float32)
    adata.uns["simulation"] = {
        "n_cells": n_cells,
        "n_genes": n_genes,
        "n_batches": n_batches,
        "n_cell_types": n_cell_types,
        "marker_fraction": marker_fraction,
        "type_effect_strength": type_effect_strength,
        "n_programs": n_programs,
        "program_strength": program_strength,
        "gene_log_std": gene_log_std,
        "library_log_mean": library_log_mean,
        "library_log_std": library_log_std,
        "batch_effect_strength": batch_effect_strength,
        "theta_log_mean": theta_log_mean,
        "theta_log_std": theta_log_std,
        "seed": seed,
        "likelihood": "negative_binomial",
    }
    return adata


# Entries whose mean exceeds this go through the Gamma-Poisson mixture; below it, inverse-CDF
# sampling is cheaper because almost all of its draws end after a few probability terms.
_INVERSE_CDF_MAX_MEAN = 4.0
# CDF terms added for every positive entry before keeping only the still unresolved ones, and
# terms added between later compactions of the few that remain.
_INVERSE_CDF_FIRST_STEPS = 4
_INVERSE_CDF_LATER_STEPS = 8
# Spacing of numpy's single-precision uniforms.
_FLOAT32_UNIFORM_STEP = 2.0**-24
# Stops the search should rounding leave the CDF a hair below a uniform very close to one.
_INVERSE_CDF_MAX_TERMS = 100_000


def named_categories(codes: np.ndarray, prefix: str, n_categories: int) -> pd.Categorical:
    """Integer codes as a categorical with the names ``f"{prefix}_{code}"``."""
    names = [f"{prefix}_{i}" for i in range(n_categories)]
    return pd.Categorical.from_codes(codes, categories=names)


def _negative_binomial(mu: np.ndarray, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw negative binomial counts entry-wise from 1-D means and inverse dispersions.

    Parameters
    ----------
    mu
        Means, float32, 1-D.
    theta
        Inverse dispersions, float64, same length as ``mu``.
    rng
        Generator to draw from.

    Returns
    -------
    np.ndarray
        Float32 whole-number counts shaped like ``mu``.
    """
    # numpy's Poisson sampler holds the GIL for array rates and takes ~50 ns a draw, so the
    # plain Gamma-Poisson mixture is slow and does not scale across threads.  Most entries of
    # a single-cell matrix have small means, so they are drawn by inversion instead: one
    # uniform per entry against the NB cumulative distribution, built with the recurrence
    # P(k) = P(k-1) * (k - 1 + theta) / k * mu / (mu + theta).  That needs only ufuncs, which
    # release the GIL, and the zero test alone settles about two thirds of the entries.
    out = np.zeros(mu.size, dtype=np.float32)
    # Single precision is ample for deciding zero versus positive and halves that pass's cost.
    theta32 = theta.astype(np.float32)
    uniform = rng.random(mu.size, dtype=np.float32)
    failure = np.add(mu, theta32)
    np.divide(theta32, failure, out=failure)  # theta / (mu + theta)
    zero_prob = np.log(failure)
    zero_prob *= theta32
    np.exp(zero_prob, out=zero_prob)
    large = mu > _INVERSE_CDF_MAX_MEAN
    positive = uniform >= zero_prob
    positive &= ~large

    # The positive entries continue in double precision, where the CDF sums stay accurate.
    flat = np.flatnonzero(positive)
    u = uniform[flat].astype(np.float64)
    # Single-precision uniforms are multiples of 2**-24, which would cut off tail events rarer
    # than that; spreading each one uniformly over its bin restores a continuous uniform.
    u += rng.random(flat.size) * _FLOAT32_UNIFORM_STEP
    th = theta[flat]
    pmf = zero_prob[flat].astype(np.float64)
    success = 1.0 - failure[flat].astype(np.float64)
    del uniform, failure, zero_prob, positive, theta32
    cdf = pmf.copy()
    # 1 + the number of terms k >= 1 whose CDF does not exceed the uniform: the draw, once the
    # CDF has passed the uniform.
    count = np.ones(flat.size, dtype=np.float32)
    factor = np.empty_like(pmf)
    last = 0  # the CDF holds the terms 0..last
    steps = _INVERSE_CDF_FIRST_STEPS
    while flat.size:
        for k in range(last + 1, last + steps + 1):
            np.add(th, k - 1, out=factor)
            factor *= success
            factor *= 1.0 / k
            pmf *= factor
            cdf += pmf
            count += u >= cdf
        last += steps
        done = count <= last
        out[flat[done]] = count[done]
        if last >= _INVERSE_CDF_MAX_TERMS:
            out[flat[~done]] = last
            break
        # Compacting to the unresolved entries is what makes the later steps cheap; doing it
        # after a block of steps rather than each step bounds the Python-level work.
        keep = np.flatnonzero(~done)
        flat, u, th, pmf, success, cdf, count = (
            x[keep] for x in (flat, u, th, pmf, success, cdf, count)
        )
        factor = factor[: flat.size]
        steps = _INVERSE_CDF_LATER_STEPS

    flat = np.flatnonzero(large)
    if flat.size:
        th = theta[flat]
        rate = rng.standard_gamma(th)
        rate *= mu[flat] / th
        out[flat] = rng.poisson(rate)
    return out


def _softmax_rows(log_values: np.ndarray) -> np.ndarray:
    """Normalise ``exp(log_values)`` so that each row sums to one."""
    shifted = log_values - log_values.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def _ordered_results(
    pool: ThreadPoolExecutor,
    func: Callable[[_Job], _CsrPiece],
    jobs: list[_Job],
    *,
    window: int,
) -> Iterator[_CsrPiece]:
    """Yield ``func(job)`` in job order, keeping at most ``window`` jobs in flight."""
    # Unlike ``pool.map``, which queues every job at once, a bounded window stops finished
    # pieces from piling up in memory while the consumer copies earlier ones.
    pending: deque[Future[_CsrPiece]] = deque()
    for job in jobs:
        pending.append(pool.submit(func, job))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _assemble_csr(pieces: Iterable[_CsrPiece], n_rows: int, n_cols: int) -> sp.csr_matrix:
    """Concatenate ``(data, indices, row_nnz)`` pieces of consecutive rows into a CSR matrix."""
    # The buffers grow in place (``ndarray.resize`` reallocates, which for large blocks remaps
    # pages rather than copying), so the peak stays near one copy of the final matrix instead
    # of the two that collecting the pieces and concatenating them would need.
    data = np.empty(_CHUNK_ELEMENTS, dtype=np.float32)
    indices = np.empty(_CHUNK_ELEMENTS, dtype=np.int32)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    offset = row = 0
    for chunk_data, chunk_indices, row_nnz in pieces:
        end = offset + chunk_data.size
        if end > data.size:
            capacity = max(end, data.size + data.size // 2)
            data.resize(capacity, refcheck=False)
            indices.resize(capacity, refcheck=False)
        data[offset:end] = chunk_data
        indices[offset:end] = chunk_indices
        next_row = row + row_nnz.size
        np.cumsum(row_nnz, out=indptr[row + 1 : next_row + 1])
        indptr[row + 1 : next_row + 1] += offset
        offset, row = end, next_row
    data.resize(offset, refcheck=False)
    indices.resize(offset, refcheck=False)
    if offset <= np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    else:
        indices = indices.astype(np.int64)
    matrix = sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols), copy=False)
    matrix.has_sorted_indices = True
    return matrix


def _available_cores() -> int:
    """Cores this process may run on (respects CPU affinity where the OS exposes it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS and Windows lack sched_getaffinity
        return max(1, os.cpu_count() or 1)


def _check_int(name: str, value: object, *, minimum: int) -> int:
    """Return ``value`` as a Python int, or raise if it is not an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"`{name}` must be an integer, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be at least {minimum}, got {value}.")
    return int(value)


def _checked_ints(minimum: int, **values: object) -> list[int]:
    """Each of ``values`` as a Python int, checked by :func:`_check_int` under its name."""
    return [_check_int(name, value, minimum=minimum) for name, value in values.items()]


def _checked_floats(minimum: float | None, **values: object) -> list[float]:
    """Each of ``values`` as a finite float of at least ``minimum`` (None: any), by name."""
    return [_check_float(name, value, minimum=minimum) for name, value in values.items()]


def _check_float(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """Return ``value`` as a finite Python float within the given bounds, or raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be a real number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be at least {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be at most {maximum}, got {value}.")
    return value
