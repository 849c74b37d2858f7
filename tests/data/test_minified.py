"""Whether data are minified: read from ``uns``, of an object or of a file."""

from __future__ import annotations

import pytest

import cellvi
from cellvi.data._constants import _ADATA_MINIFY_TYPE_UNS_KEY, ADATA_MINIFY_TYPE
from cellvi.data._utils import _get_adata_minify_type, _is_minified


def test_minify_type_of_an_anndata_and_of_its_file(tmp_path):
    adata = cellvi.data.synthetic_iid(n_genes=5, batch_size=10)
    assert _get_adata_minify_type(adata) is None and not _is_minified(adata)
    adata.write_h5ad(tmp_path / "full.h5ad")
    adata.uns[_ADATA_MINIFY_TYPE_UNS_KEY] = ADATA_MINIFY_TYPE.LATENT_POSTERIOR
    assert _get_adata_minify_type(adata) == "latent_posterior_parameters"
    assert _is_minified(adata)
    adata.write_h5ad(tmp_path / "minified.h5ad")
    assert _is_minified(tmp_path / "minified.h5ad") and _is_minified(
        str(tmp_path / "minified.h5ad")
    )
    assert not _is_minified(tmp_path / "full.h5ad")


def test_minify_type_of_a_mudata():
    pytest.importorskip("mudata")
    mdata = cellvi.data.synthetic_iid(n_genes=5, batch_size=10, return_mudata=True)
    assert not _is_minified(mdata)
    mdata.uns[_ADATA_MINIFY_TYPE_UNS_KEY] = ADATA_MINIFY_TYPE.LATENT_POSTERIOR_WITH_COUNTS
    assert _is_minified(mdata)


def test_other_objects_are_refused():
    with pytest.raises(TypeError, match="Expected an AnnData, a MuData or a file path"):
        _is_minified(42)
