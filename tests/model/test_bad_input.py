"""Misuse of model classes fails early, with errors that say what to do."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from anndata import AnnData

import cellvi
from cellvi import REGISTRY_KEYS
from cellvi.data import AnnDataManager
from cellvi.data.fields import LayerField
from cellvi.model import SCVI
from cellvi.model.base import BaseModelClass

from ._model_helpers import TRAIN_KW


class CountsOnlyModel(BaseModelClass):
    """A second model class, registering nothing but the counts."""

    def __init__(self, adata: AnnData) -> None:
        super().__init__(adata)
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def setup_anndata(cls, adata: AnnData, layer: str | None = None, **kwargs) -> None:
        setup_method_args = cls._get_setup_method_args(**locals())
        manager = AnnDataManager(
            fields=[LayerField(REGISTRY_KEYS.X_KEY, layer)], setup_method_args=setup_method_args
        )
        manager.register_fields(adata, **kwargs)
        cls.register_manager(manager)


class SubSCVI(SCVI):
    """A subclass of SCVI keeps its own manager store."""


def _adata(cls=SCVI) -> AnnData:
    adata = cellvi.data.synthetic_iid()
    cls.setup_anndata(adata, batch_key="batch")
    return adata


def test_model_before_setup():
    with pytest.raises(ValueError, match=r"SCVI\.setup_anndata"):
        SCVI(cellvi.data.synthetic_iid())


def test_anndata_set_up_by_another_model_class():
    adata = cellvi.data.synthetic_iid()
    CountsOnlyModel.setup_anndata(adata)
    assert CountsOnlyModel(adata).summary_stats["n_vars"] == 100
    with pytest.raises(ValueError, match=r"not set up for SCVI.*SCVI\.setup_anndata"):
        SCVI(adata)


def test_subclass_and_parent_class_do_not_share_setups():
    adata = _adata(SubSCVI)
    with pytest.raises(ValueError, match="not set up for SCVI"):
        SCVI(adata)
    assert SubSCVI(adata).module.n_batch == 2
    adata = _adata(SCVI)
    with pytest.raises(ValueError, match="not set up for SubSCVI"):
        SubSCVI(adata)


def test_setup_with_a_missing_key_leaves_the_anndata_untouched():
    adata = cellvi.data.synthetic_iid()
    with pytest.raises((KeyError, ValueError), match="donor"):
        SCVI.setup_anndata(adata, batch_key="batch", categorical_covariate_keys=["donor"])
    assert not [c for c in adata.obs.columns if c.startswith("_scvi")]
    assert "_scvi_uuid" not in adata.uns


def test_latent_of_an_untrained_model_is_refused():
    model = SCVI(_adata())
    with pytest.raises(RuntimeError, match=r"model\.train\(\)"):
        model.get_latent_representation()


@pytest.mark.parametrize(
    ("query", "sign"),
    [
        (lambda m: m.get_elbo(), 1),
        (lambda m: m.get_marginal_ll(n_mc_samples=2), 1),
        (lambda m: m.get_reconstruction_error()["reconstruction_loss"], -1),
    ],
    ids=["elbo", "marginal_ll", "reconstruction_error"],
)
def test_untrained_model_answers_likelihood_queries_with_a_warning(query, sign):
    """As in scvi-tools; users compare these figures before and after training."""
    model = SCVI(_adata())
    with pytest.warns(UserWarning, match="not trained yet"):
        before = query(model)
    assert np.isfinite(before)
    model.train(max_epochs=5, **TRAIN_KW)
    assert sign * query(model) > sign * before  # higher ELBO and log p(x), lower loss


@pytest.mark.parametrize(
    ("indexing", "message"),
    [
        ([np.array([0, 1, 1, 2]), np.array([3]), None], "duplicate indexing in train"),
        ([np.array([0, 1, 2]), np.array([400]), None], "400"),
        ([np.array([0, 1, -1]), None, None], "-1"),
        ([np.arange(0, 300), np.arange(250, 400), None], "between train and valid"),
        ([np.array([], dtype=int), np.arange(400), None], "train"),
        ([np.arange(10), np.arange(10, 20)], "missing indices"),
    ],
    ids=["duplicates", "beyond-last-cell", "negative", "overlap", "empty-train", "missing"],
)
def test_bad_external_indices(indexing, message):
    model = SCVI(_adata())
    with pytest.raises(ValueError, match=message):
        model.train(max_epochs=1, datasplitter_kwargs={"external_indexing": indexing}, **TRAIN_KW)
    assert not model.is_trained_ and model.history_ is None


def test_latent_of_anndata_with_other_genes(trained):
    model, _ = trained
    other = cellvi.data.synthetic_iid(n_genes=80)
    with pytest.raises(ValueError, match="80 genes but the model was set up with 100"):
        model.get_latent_representation(other)
    assert "_scvi_uuid" not in other.uns and "_scvi_batch" not in other.obs
    renamed = cellvi.data.synthetic_iid()
    renamed.var_names = [f"g{i}" for i in range(100)]
    with pytest.raises(ValueError, match="'g0' where 'gene_0' was expected"):
        model.get_latent_representation(renamed)


def test_latent_of_anndata_with_an_unseen_batch(trained):
    model, _ = trained
    other = cellvi.data.synthetic_iid(n_batches=3)
    with pytest.raises(ValueError, match="batch_2"):
        model.get_latent_representation(other)


def test_latent_of_anndata_with_negative_counts(trained):
    model, _ = trained
    other = cellvi.data.synthetic_iid()
    other.X[0, 0] = -1.0
    with pytest.raises(ValueError, match="negative"):
        model.get_latent_representation(other)


def test_view_is_copied_with_a_warning(trained):
    model, adata = trained
    view = adata[100:150]
    assert view.is_view
    with pytest.warns(UserWarning, match="view"):
        latent = model.get_latent_representation(view)
    np.testing.assert_allclose(
        latent, model.get_latent_representation()[100:150], rtol=1e-5, atol=1e-6
    )
    assert view.is_view  # the caller's object is not modified
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.get_latent_representation(adata[100:150].copy())
