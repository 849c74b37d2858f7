"""A tiny synthetic multi-modal dataset for tutorials and tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from cellvi.data._simulate import _check_float, _check_int, named_categories

__all__ = ["synthetic_iid"]

_SPARSE_FORMATS = {
    "csr_matrix": sp.csr_matrix,
    "csc_matrix": sp.csc_matrix,
    "csr_array": sp.csr_array,
    "csc_array": sp.csc_array,
}

# Negative binomial in numpy's (number of successes, success probability) form: mean 11.7 and
# variance 39, counts of a moderately expressed gene.
_NB_SUCCESSES = 5
_NB_PROB = 0.3
# Chance that a region is open in a cell, for the binary accessibility matrix.
_ACCESSIBILITY_PROB = 0.2


def synthetic_iid(
    batch_size: int = 200,
    n_genes: int = 100,
    n_proteins: int = 100,
    n_regions: int = 100,
    n_batches: int = 2,
    n_labels: int = 3,
    dropout_ratio: float = 0.7,
    sparse_format: str | None = None,
    seed: int = 0,
) -> AnnData:
    """Make a small dataset of independent, identically distributed random counts.

    Every cell's values are drawn from the same distributions whatever its batch and label, so
    the data carry no biological or batch signal; they exist to exercise code paths quickly.

    Parameters
    ----------
    batch_size
        Number of cells in each batch.
    n_genes
        Number of genes in ``X``.
    n_proteins
        Number of proteins in ``obsm["protein_expression"]``; ``0`` leaves out the protein data.
    n_regions
        Number of regions in ``obsm["accessibility"]``; ``0`` leaves out the accessibility data.
    n_batches
        Number of batches; the cells of a batch are contiguous.
    n_labels
        Number of labels, assigned to cells uniformly at random.
    dropout_ratio
        Probability, in ``[0, 1]``, that a gene count is replaced by zero, on top of the zeros of
        the negative binomial itself (zero inflation).
    sparse_format
        ``None`` for a dense ``X``, or one of ``"csr_matrix"``, ``"csc_matrix"``,
        ``"csr_array"``, ``"csc_array"`` for that scipy sparse type.
    seed
        Seed of the random generator; the same arguments and seed give the same data.

    Returns
    -------
    AnnData
        ``batch_size * n_batches`` cells by ``n_genes`` genes with float32 counts in ``X``;
        categorical ``obs["batch"]`` (``"batch_0"``, ...) and ``obs["labels"]``
        (``"label_0"``, ...); float32 protein counts in ``obsm["protein_expression"]`` with
        their names in ``uns["protein_names"]``; and float32 0/1 values in
        ``obsm["accessibility"]``.

    Raises
    ------
    ValueError
        If an argument is out of range or ``sparse_format`` is not a supported format.

    Examples
    --------
    >>> adata = synthetic_iid()
    >>> adata.shape
    (400, 100)
    """
    batch_size = _check_int("batch_size", batch_size, minimum=1)
    n_genes = _check_int("n_genes", n_genes, minimum=1)
    n_proteins = _check_int("n_proteins", n_proteins, minimum=0)
    n_regions = _check_int("n_regions", n_regions, minimum=0)
    n_batches = _check_int("n_batches", n_batches, minimum=1)
    n_labels = _check_int("n_labels", n_labels, minimum=1)
    dropout_ratio = _check_float("dropout_ratio", dropout_ratio, minimum=0.0, maximum=1.0)
    seed = _check_int("seed", seed, minimum=0)
    if sparse_format is not None and sparse_format not in _SPARSE_FORMATS:
        allowed = ", ".join(repr(name) for name in (None, *_SPARSE_FORMATS))
        raise ValueError(f"`sparse_format` must be one of {allowed}; got {sparse_format!r}.")

    rng = np.random.default_rng(seed)
    n_cells = batch_size * n_batches

    counts = rng.negative_binomial(_NB_SUCCESSES, _NB_PROB, size=(n_cells, n_genes))
    counts[rng.random((n_cells, n_genes)) < dropout_ratio] = 0
    X: np.ndarray | sp.spmatrix | sp.sparray = counts.astype(np.float32)
    if sparse_format is not None:
        X = _SPARSE_FORMATS[sparse_format](X)

    batch = np.repeat(np.arange(n_batches), batch_size)
    labels = rng.integers(0, n_labels, size=n_cells)
    obs = pd.DataFrame(
        {
            "batch": named_categories(batch, "batch", n_batches),
            "labels": named_categories(labels, "label", n_labels),
        },
        index=pd.Index([str(i) for i in range(n_cells)]),
    )
    var = pd.DataFrame(index=pd.Index([f"gene_{g}" for g in range(n_genes)]))
    adata = AnnData(X=X, obs=obs, var=var)

    if n_proteins > 0:
        proteins = rng.negative_binomial(_NB_SUCCESSES, _NB_PROB, size=(n_cells, n_proteins))
        adata.obsm["protein_expression"] = proteins.astype(np.float32)
        adata.uns["protein_names"] = np.array([f"protein_{p}" for p in range(n_proteins)])
    if n_regions > 0:
        accessible = rng.random((n_cells, n_regions)) < _ACCESSIBILITY_PROB
        adata.obsm["accessibility"] = accessible.astype(np.float32)
    return adata
