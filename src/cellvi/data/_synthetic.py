"""A tiny synthetic multi-modal dataset for tutorials and tests."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from cellvi.data._mudata import AnnOrMuData
from cellvi.data._simulate import _check_float, _check_int, _checked_ints, named_categories
from cellvi.utils import error_on_missing_dependencies

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
# The alternative ``rna_dist="normal"``: continuous values around 5.
_NORMAL_MEAN = 5.0
_NORMAL_SD = 2.0
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
    generate_coordinates: bool = False,
    return_mudata: bool = False,
    seed: int | None = None,
    *,
    batch_key: str = "batch",
    labels_key: str = "labels",
    rna_key: str = "rna",
    gene_names_prefix: str = "gene",
    protein_expression_key: str = "protein_expression",
    protein_names_key: str = "protein_names",
    protein_names_prefix: str = "protein",
    accessibility_key: str = "accessibility",
    region_names_prefix: str = "region",
    coordinates_key: str = "coordinates",
    rna_dist: Literal["nb", "normal"] = "nb",
) -> AnnOrMuData:
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
        Number of proteins; ``0`` leaves out the protein data.
    n_regions
        Number of accessibility regions; ``0`` leaves out the accessibility data.
    n_batches
        Number of batches; the cells of a batch are contiguous.
    n_labels
        Number of labels, assigned to cells uniformly at random; ``0`` leaves out the labels.
    dropout_ratio
        Probability, in ``[0, 1]``, that a gene count is replaced by zero, on top of the zeros of
        the negative binomial itself (zero inflation).
    sparse_format
        ``None`` for dense matrices, or one of ``"csr_matrix"``, ``"csc_matrix"``,
        ``"csr_array"``, ``"csc_array"`` to store the genes, proteins and regions as that
        scipy sparse type.
    generate_coordinates
        Add random two-dimensional spatial coordinates of the cells (standard normal) in
        ``obsm[coordinates_key]``.
    return_mudata
        Return a :class:`mudata.MuData` (needs mudata) with the genes, proteins and regions as
        modalities ``rna_key``, ``protein_expression_key`` and ``accessibility_key``; the
        batch, labels and coordinates are then the MuData's own.
    seed
        Seed of the random generator; the same arguments and seed give the same data. None
        (as scvi-tools) draws new data at each call, from numpy's global random state, so
        that ``cellvi.settings.seed`` makes a script reproducible.
    batch_key, labels_key
        Names of the batch and label columns of ``obs``.
    rna_key, protein_expression_key, accessibility_key
        Modality names (MuData) or ``obsm`` keys (proteins and regions of an AnnData).
    gene_names_prefix, protein_names_prefix, region_names_prefix
        Feature names are ``f"{prefix}_{i}"``.
    protein_names_key
        ``uns`` key of the protein names (AnnData only: a modality names them as its genes).
    coordinates_key
        ``obsm`` key of the coordinates.
    rna_dist
        ``"nb"``: zero-inflated negative binomial counts; ``"normal"``: values drawn from a
        normal distribution of mean 5 and standard deviation 2, with the same dropout.

    Returns
    -------
    AnnData or MuData
        ``batch_size * n_batches`` cells by ``n_genes`` genes with float32 counts in ``X``;
        categorical ``obs["batch"]`` (``"batch_0"``, ...) and ``obs["labels"]``
        (``"label_0"``, ...); float32 protein counts in ``obsm["protein_expression"]`` with
        their names in ``uns["protein_names"]``; and float32 0/1 values in
        ``obsm["accessibility"]`` (each under the names the keyword arguments give).

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
    batch_size, n_genes, n_batches = _checked_ints(
        1, batch_size=batch_size, n_genes=n_genes, n_batches=n_batches
    )
    n_proteins, n_regions, n_labels = _checked_ints(
        0, n_proteins=n_proteins, n_regions=n_regions, n_labels=n_labels
    )
    dropout_ratio = _check_float("dropout_ratio", dropout_ratio, minimum=0.0, maximum=1.0)
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    seed = _check_int("seed", seed, minimum=0)
    if sparse_format is not None and sparse_format not in _SPARSE_FORMATS:
        allowed = ", ".join(repr(name) for name in (None, *_SPARSE_FORMATS))
        raise ValueError(f"`sparse_format` must be one of {allowed}; got {sparse_format!r}.")
    if rna_dist not in ("nb", "normal"):
        raise ValueError(f"`rna_dist` must be 'nb' or 'normal'; got {rna_dist!r}.")

    def stored(values: np.ndarray) -> np.ndarray | sp.spmatrix | sp.sparray:
        values = values.astype(np.float32)
        return values if sparse_format is None else _SPARSE_FORMATS[sparse_format](values)

    rng = np.random.default_rng(seed)
    n_cells = batch_size * n_batches
    if rna_dist == "nb":
        counts = rng.negative_binomial(_NB_SUCCESSES, _NB_PROB, size=(n_cells, n_genes))
    else:
        counts = rng.normal(_NORMAL_MEAN, _NORMAL_SD, size=(n_cells, n_genes))
    counts[rng.random((n_cells, n_genes)) < dropout_ratio] = 0
    cell_names = pd.Index([str(i) for i in range(n_cells)])
    genes = _modality(stored(counts), cell_names, gene_names_prefix)
    batch = np.repeat(np.arange(n_batches), batch_size)
    obs = pd.DataFrame({batch_key: named_categories(batch, "batch", n_batches)}, index=cell_names)
    if n_labels > 0:
        labels = rng.integers(0, n_labels, size=n_cells)
        obs[labels_key] = named_categories(labels, "label", n_labels)

    others = {}
    if n_proteins > 0:
        proteins = rng.negative_binomial(_NB_SUCCESSES, _NB_PROB, size=(n_cells, n_proteins))
        others[protein_expression_key] = (stored(proteins), protein_names_prefix)
    if n_regions > 0:
        accessible = rng.random((n_cells, n_regions)) < _ACCESSIBILITY_PROB
        others[accessibility_key] = (stored(accessible), region_names_prefix)

    if return_mudata:
        error_on_missing_dependencies("mudata")
        import mudata

        mods = {rna_key: genes}
        mods.update(
            {
                key: _modality(matrix, cell_names, prefix)
                for key, (matrix, prefix) in others.items()
            }
        )
        data = mudata.MuData(mods)
        for key, column in obs.items():
            data.obs[key] = column
    else:
        data = genes
        data.obs = obs
        for key, (matrix, prefix) in others.items():
            data.obsm[key] = matrix
            if key == protein_expression_key:
                data.uns[protein_names_key] = _names(prefix, matrix.shape[1])
    if generate_coordinates:
        data.obsm[coordinates_key] = rng.normal(size=(n_cells, 2))
    return data


def _names(prefix: str, n: int) -> np.ndarray:
    return np.array([f"{prefix}_{i}" for i in range(n)])


def _modality(matrix: object, cell_names: pd.Index, prefix: str) -> AnnData:
    var = pd.DataFrame(index=pd.Index(_names(prefix, matrix.shape[1])))
    return AnnData(X=matrix, obs=pd.DataFrame(index=cell_names), var=var)
