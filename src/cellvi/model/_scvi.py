"""``SCVI``: single-cell variational inference, the user-facing model."""

from __future__ import annotations

import warnings
from typing import Any, Literal

from anndata import AnnData

from cellvi.data import REGISTRY_KEYS
from cellvi.data._utils import _get_adata_minify_type
from cellvi.data.fields import (
    CategoricalObsField,
)
from cellvi.model._module_sizes import registry_module_sizes
from cellvi.model.base import (
    ArchesMixin,
    BaseMinifiedModeModelClass,
    EmbeddingMixin,
    RNASeqMixin,
    UnsupervisedTrainingMixin,
    VAEMixin,
)
from cellvi.model.base._count_fields import count_model_fields
from cellvi.module import VAE


class SCVI(
    EmbeddingMixin,
    RNASeqMixin,
    VAEMixin,
    ArchesMixin,
    UnsupervisedTrainingMixin,
    BaseMinifiedModeModelClass,
):
    """single-cell Variational Inference (Lopez et al. 2018) on registered raw counts.

    Parameters
    ----------
    adata
        AnnData registered with ``SCVI.setup_anndata``.
    registry
        Instead of ``adata``: a registry to size the module from (see ``BaseModelClass``).
        With neither, the module is built from the ``datamodule`` of the first ``train``.
    n_hidden, n_latent, n_layers, dropout_rate, dispersion, gene_likelihood
        See ``cellvi.module.VAE``.
    use_observed_lib_size
        Use each cell's total count as its library size; else learn it with a log-normal prior
        per batch estimated from the data.
    latent_distribution
        See ``cellvi.module.VAE``.
    **model_kwargs
        Further ``VAE`` arguments (``encode_covariates``, ``use_layer_norm``, ...).

    Examples
    --------
    >>> adata = cellvi.data.synthetic_iid()
    >>> cellvi.model.SCVI.setup_anndata(adata, batch_key="batch")
    >>> model = cellvi.model.SCVI(adata)
    >>> model.train(max_epochs=20)
    >>> adata.obsm["X_scVI"] = model.get_latent_representation()
    """

    _module_cls = VAE

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict[str, Any] | None = None,
        n_hidden: int = 128,
        n_latent: int = 10,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        dispersion: Literal["gene", "gene-batch", "gene-label", "gene-cell"] = "gene",
        gene_likelihood: Literal["zinb", "nb", "poisson", "normal"] = "zinb",
        use_observed_lib_size: bool = True,
        latent_distribution: Literal["normal", "ln"] = "normal",
        **model_kwargs: Any,
    ) -> None:
        super().__init__(adata, registry)
        self._module_kwargs = {
            "n_hidden": n_hidden,
            "n_latent": n_latent,
            "n_layers": n_layers,
            "dropout_rate": dropout_rate,
            "dispersion": dispersion,
            "gene_likelihood": gene_likelihood,
            "use_observed_lib_size": use_observed_lib_size,
            "latent_distribution": latent_distribution,
            **model_kwargs,
        }
        if self._module_init_on_train:
            self.module = None
            warnings.warn(
                "SCVI was created without adata or registry: its module is built from the "
                "datamodule (its n_vars, n_batch, ...) at the first train(datamodule=...).",
                UserWarning,
                stacklevel=2,
            )
        else:
            self.module = self._module_from_registry()
        self._model_summary_string = (
            f"SCVI model with the following parameters:\nn_hidden: {n_hidden}, n_latent: "
            f"{n_latent}, n_layers: {n_layers}, dropout_rate: {dropout_rate}, dispersion: "
            f"{dispersion}, gene_likelihood: {gene_likelihood}, latent_distribution: "
            f"{latent_distribution}."
        )
        self.init_params_ = self._get_init_params(locals())

    def _module_from_registry(self) -> VAE:
        """The VAE sized by the registry: genes, batches, labels and covariates."""
        return self._module_cls(
            **registry_module_sizes(self, self._module_kwargs["use_observed_lib_size"]),
            n_labels=self.summary_stats.get("n_labels", 0),
            **self._module_kwargs,
        )

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        size_factor_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Register ``adata`` for SCVI.

        Parameters
        ----------
        adata
            AnnData of raw counts.
        layer
            Layer holding the counts; None uses ``adata.X``.
        batch_key
            obs column of the batch (experimental batch, for integration); None: one batch.
        labels_key
            obs column of cell labels (used by ``dispersion="gene-label"``); None: one label.
        size_factor_key
            obs column of size factors, used instead of library sizes.
        categorical_covariate_keys, continuous_covariate_keys
            obs columns of further covariates the decoder (and encoder, with
            ``encode_covariates``) conditions on.
        **kwargs
            Passed to ``AnnDataManager.register_fields`` (e.g. ``source_registry``).
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        fields = count_model_fields(
            layer,
            batch_key,
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key),
            size_factor_key,
            categorical_covariate_keys,
            continuous_covariate_keys,
        )
        if (minify_type := _get_adata_minify_type(adata)) is not None:
            fields += cls._get_fields_for_adata_minification(minify_type)
        cls._register_fields(adata, fields, setup_method_args, **kwargs)
