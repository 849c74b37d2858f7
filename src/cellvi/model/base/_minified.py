"""``BaseMinifiedModeModelClass``: models that answer from a minified AnnData.

A minified AnnData keeps what a trained model needs to answer most queries without the
counts: each cell's latent posterior (mean and variance, in ``obsm``) and its observed
library size (in ``obs``); its count matrix (and layers) become all-zero sparse matrices of
the same shape, so the file is small. The module then draws from the stored posterior
instead of encoding counts (``VAE._cached_inference``). What needs the counts (the ELBO,
reconstruction errors, training) refuses with a clear message.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
from anndata import AnnData
from scipy import sparse

from cellvi._constants import REGISTRY_KEYS
from cellvi.data import AnnDataManager
from cellvi.data._constants import (
    _ADATA_MINIFY_TYPE_UNS_KEY,
    _FIELD_REGISTRIES_KEY,
    ADATA_MINIFY_TYPE,
    SETUP_UUID_KEY,
)
from cellvi.data.fields import BaseAnnDataField, NumericalObsField, ObsmField, StringUnsField
from cellvi.model.base._base_model import BaseModelClass
from cellvi.module.base import BaseModuleClass

Model = TypeVar("Model", bound="BaseMinifiedModeModelClass")
# Where data without counts may hold a posterior for a later ``minify_adata`` (scvi-tools'
# names, read when such data are loaded with a model saved with full data).
_POSTERIOR_FOR_LATER = ("_scvi_latent_qzm", "_scvi_latent_qzv")


class BaseMinifiedModeModelClass(BaseModelClass):
    """A model class whose AnnData can be minified (:meth:`minify_adata`).

    Its module must read the stored posterior when ``module.minified_data_type`` is set, as
    :class:`~cellvi.module.VAE` does; the model keeps that attribute in step with its data.
    """

    _LATENT_QZM_KEY = "scvi_latent_qzm"
    _LATENT_QZV_KEY = "scvi_latent_qzv"
    _OBSERVED_LIB_SIZE_KEY = "observed_lib_size"

    @property
    def module(self) -> BaseModuleClass:
        """The model's module (told how the model's data are minified, when they are)."""
        return self.__dict__["module"]

    @module.setter
    def module(self, module: BaseModuleClass) -> None:
        self.__dict__["module"] = module
        if hasattr(module, "minified_data_type"):
            module.minified_data_type = self.minified_data_type

    @property
    def minified_data_type(self) -> str | None:
        """How the model's AnnData is minified (an ``ADATA_MINIFY_TYPE``), or None."""
        manager = self._adata_manager
        if manager is None or REGISTRY_KEYS.MINIFY_TYPE_KEY not in manager.data_registry:
            return None
        return manager.get_from_registry(REGISTRY_KEYS.MINIFY_TYPE_KEY)

    def minify_adata(
        self,
        minified_data_type: str = ADATA_MINIFY_TYPE.LATENT_POSTERIOR,
        use_latent_qzm_key: str = "X_latent_qzm",
        use_latent_qzv_key: str = "X_latent_qzv",
    ) -> None:
        """Replace the model's AnnData by a minified copy (the original is left unchanged).

        Parameters
        ----------
        minified_data_type
            ``"latent_posterior_parameters"``: keep the latent posterior, drop the counts;
            ``"latent_posterior_parameters_with_counts"``: keep both.
        use_latent_qzm_key, use_latent_qzv_key
            Keys of ``adata.obsm`` holding the posterior means and variances, e.g. from
            ``model.get_latent_representation(return_dist=True)``.
        """
        if minified_data_type not in ADATA_MINIFY_TYPE:
            raise NotImplementedError(
                f"Minification method {minified_data_type} is not supported; use one of "
                f"{list(ADATA_MINIFY_TYPE)}."
            )
        if not getattr(self.module, "use_observed_lib_size", True):
            raise ValueError(
                "Minification is not supported for models that do not use observed library size."
            )
        for key in (use_latent_qzm_key, use_latent_qzv_key):
            if key not in self.adata.obsm:
                raise KeyError(
                    f"adata.obsm[{key!r}] is missing: store the latent posterior first, e.g. "
                    "qzm, qzv = model.get_latent_representation(return_dist=True)."
                )
        minified = get_minified_adata_scrna(
            self.adata_manager,
            keep_count_data=minified_data_type == ADATA_MINIFY_TYPE.LATENT_POSTERIOR_WITH_COUNTS,
        )
        minified.uns.pop(SETUP_UUID_KEY, None)  # another AnnData: another identity
        minified.uns[_ADATA_MINIFY_TYPE_UNS_KEY] = minified_data_type
        minified.obsm[self._LATENT_QZM_KEY] = self.adata.obsm[use_latent_qzm_key]
        minified.obsm[self._LATENT_QZV_KEY] = self.adata.obsm[use_latent_qzv_key]
        counts = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        minified.obs[self._OBSERVED_LIB_SIZE_KEY] = np.squeeze(np.asarray(counts.sum(axis=-1)))
        self._update_adata_and_manager_post_minification(minified, minified_data_type)
        self.module.minified_data_type = minified_data_type

    @classmethod
    def _get_fields_for_adata_minification(cls, minified_data_type: str) -> list[BaseAnnDataField]:
        """The fields a minified AnnData registers on top of the model's setup."""
        if minified_data_type not in ADATA_MINIFY_TYPE:
            raise NotImplementedError(
                f"Minification method {minified_data_type} is not supported."
            )
        return [
            ObsmField(REGISTRY_KEYS.LATENT_QZM_KEY, cls._LATENT_QZM_KEY),
            ObsmField(REGISTRY_KEYS.LATENT_QZV_KEY, cls._LATENT_QZV_KEY),
            NumericalObsField(REGISTRY_KEYS.OBSERVED_LIB_SIZE, cls._OBSERVED_LIB_SIZE_KEY),
            StringUnsField(REGISTRY_KEYS.MINIFY_TYPE_KEY, _ADATA_MINIFY_TYPE_UNS_KEY),
        ]

    def _update_adata_and_manager_post_minification(
        self, minified_adata: AnnData, minified_data_type: str
    ) -> None:
        """Register ``minified_adata`` (the setup plus the minification fields) as the data."""
        minified_adata = self._validate_anndata(minified_adata)
        manager = self.get_anndata_manager(minified_adata, required=True)
        manager.register_new_fields(self._get_fields_for_adata_minification(minified_data_type))
        self.adata = minified_adata

    @classmethod
    def _check_data_for_load(cls, adata: AnnData, registry: dict[str, Any]) -> None:
        """Minified data need a model saved minified.

        A model saved with full data cannot check that minified data were made by it, so
        loading it with an AnnData without counts (an all-zero sparse matrix) is refused,
        unless that AnnData holds a posterior for a later :meth:`minify_adata`
        (``obsm["_scvi_latent_qzm"]`` and ``obsm["_scvi_latent_qzv"]``, scvi-tools' rule). The
        loaded model follows its data: minified or not.
        """
        if not isinstance(adata, AnnData) or _is_full(adata):
            return
        saved_minified = REGISTRY_KEYS.MINIFY_TYPE_KEY in registry.get(_FIELD_REGISTRIES_KEY, {})
        has_posterior = all(key in adata.obsm for key in _POSTERIOR_FOR_LATER)
        if not saved_minified and not has_posterior:
            raise ValueError(
                "It appears you are trying to load a non-minified model with minified adata"
            )


def get_minified_adata_scrna(
    adata_manager: AnnDataManager, keep_count_data: bool = False
) -> AnnData:
    """A copy of the manager's AnnData whose counts (``X`` and every layer) are all zeros.

    The zero matrices are sparse, of the original shape; ``raw`` is dropped. With
    ``keep_count_data`` the copy keeps its counts.
    """
    adata = adata_manager.adata.copy()
    if keep_count_data:
        return adata
    del adata.raw
    zeros = sparse.csr_matrix(adata.shape, dtype=np.float32)
    adata.X = zeros
    for layer in list(adata.layers):
        adata.layers[layer] = zeros.copy()
    return adata


def _is_full(adata: AnnData) -> bool:
    """Whether ``adata`` has counts (its matrix is not an all-zero sparse one)."""
    return not (sparse.issparse(adata.X) and adata.X.nnz == 0)
