"""``SCANVI``: semi-supervised integration and cell-type annotation (scANVI)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from cellvi.data import REGISTRY_KEYS
from cellvi.data._constants import ADATA_MINIFY_TYPE
from cellvi.data._utils import _get_adata_minify_type, _is_minified
from cellvi.data.fields import (
    LabelsWithUnlabeledObsField,
)
from cellvi.dataloaders import SemiSupervisedDataSplitter
from cellvi.dataloaders._labels import label_codes
from cellvi.model._module_sizes import registry_module_sizes
from cellvi.model.base import (
    ArchesMixin,
    BaseMinifiedModeModelClass,
    EmbeddingMixin,
    RNASeqMixin,
    TrainingMixin,
    VAEMixin,
)
from cellvi.model.base._count_fields import count_model_fields
from cellvi.model.base._init_params import init_arguments
from cellvi.model.base._queries import posterior_query
from cellvi.model.base._training_mixin import run_training
from cellvi.module import SCANVAE
from cellvi.train import SemiSupervisedTrainingPlan, default_max_epochs
from cellvi.train._config import KwargsLike, merge_kwargs

if TYPE_CHECKING:
    from cellvi.model._scvi import SCVI

Minibatches = Iterable[dict[str, torch.Tensor]]


class SCANVI(
    EmbeddingMixin,
    RNASeqMixin,
    VAEMixin,
    ArchesMixin,
    TrainingMixin,
    BaseMinifiedModeModelClass,
):
    """single-cell ANnotation using Variational Inference (Xu et al. 2021).

    scVI with cell labels: cells whose label is ``unlabeled_category`` are unlabeled, the
    others train a classifier of the latent space, and the labels shape the latent prior (see
    :class:`~cellvi.module.SCANVAE`). The usual workflow trains an :class:`SCVI` first and
    continues from it with :meth:`from_scvi_model`; :meth:`predict` then labels every cell.

    Parameters
    ----------
    adata
        AnnData registered with ``SCANVI.setup_anndata``.
    registry
        Instead of ``adata``: the registry of a SCANVI setup (``model.registry`` of another
        model) to size the module from; such a model trains on ``train(datamodule=...)``.
    n_hidden, n_latent, n_layers, dropout_rate, dispersion, gene_likelihood
        See :class:`~cellvi.module.SCANVAE` (``dispersion="gene-label"`` is not supported).
    use_observed_lib_size
        Use each cell's total count as its library size; else learn it with a log-normal prior
        per batch estimated from the data.
    linear_classifier
        Classify with one linear layer of the latent code instead of a multi-layer perceptron.
    datamodule
        Must be None (scvi-tools builds SCANVI on a custom datamodule instead of an AnnData
        there; models it saves record ``datamodule=None``).
    **model_kwargs
        Further ``SCANVAE`` arguments (``classifier_parameters``, ``encode_covariates``,
        ``latent_distribution``, ``y_prior``, ...).

    Attributes
    ----------
    n_labels
        Number of labels the classifier predicts (the registered categories but the
        unlabeled one).
    unlabeled_category_
        The label of unlabeled cells.
    labels_
        Each cell's registered label.
    was_pretrained
        Whether the model was initialised from a trained scVI model (``train`` then defaults
        to fewer epochs).

    Examples
    --------
    >>> adata = cellvi.data.synthetic_iid()
    >>> cellvi.model.SCANVI.setup_anndata(adata, "labels", "label_0", batch_key="batch")
    >>> model = cellvi.model.SCANVI(adata)
    >>> model.train(max_epochs=20)
    >>> adata.obs["predicted"] = model.predict()
    """

    _module_cls = SCANVAE
    _training_plan_cls = SemiSupervisedTrainingPlan
    _data_splitter_cls = SemiSupervisedDataSplitter

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict[str, Any] | None = None,
        n_hidden: int = 128,
        n_latent: int = 10,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        dispersion: Literal["gene", "gene-batch", "gene-label", "gene-cell"] = "gene",
        gene_likelihood: Literal["zinb", "nb", "poisson"] = "zinb",
        use_observed_lib_size: bool = True,
        linear_classifier: bool = False,
        datamodule: pl.LightningDataModule | None = None,
        **model_kwargs: Any,
    ) -> None:
        if datamodule is not None:
            raise ValueError(
                "cellvi builds SCANVI on a registered AnnData; a datamodule in its place is not "
                "supported (train(datamodule=...) can still feed the training minibatches)."
            )
        if adata is None and registry is None:
            raise ValueError(
                "SCANVI needs adata, or the registry of a SCANVI setup (registry=...): its "
                "labels size the classifier."
            )
        super().__init__(adata, registry)
        self._set_indices_and_labels()
        if self.n_labels < 1:
            raise ValueError(
                f"Every registered label is the unlabeled category {self.unlabeled_category_!r}"
                ": SCANVI has no label to learn. Give some cells a label, or use SCVI."
            )
        self.module = self._module_cls(
            **registry_module_sizes(self, use_observed_lib_size),
            n_labels=self.n_labels,
            n_hidden=n_hidden,
            n_latent=n_latent,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            dispersion=dispersion,
            gene_likelihood=gene_likelihood,
            use_observed_lib_size=use_observed_lib_size,
            linear_classifier=linear_classifier,
            **model_kwargs,
        )
        self.unsupervised_history_ = None
        self.semisupervised_history_ = None
        self.was_pretrained = False
        self._model_summary_string = (
            f"ScanVI Model with the following params: \nunlabeled_category: "
            f"{self.unlabeled_category_}, n_hidden: {n_hidden}, n_latent: {n_latent}, "
            f"n_layers: {n_layers}, dropout_rate: {dropout_rate}, dispersion: {dispersion}, "
            f"gene_likelihood: {gene_likelihood}"
        )
        self.init_params_ = self._get_init_params(locals())

    def _set_indices_and_labels(self) -> None:
        """Read the labels: which cells are labeled, and the label of each code.

        A model built from a registry alone knows the labels but no cells (``labels_`` is
        None and no index is labeled).
        """
        state = self.registry["field_registries"][REGISTRY_KEYS.LABELS_KEY]["state_registry"]
        if "unlabeled_category" not in state:
            raise ValueError(
                "SCANVI needs labels registered with an unlabeled category: the registry "
                "must come from SCANVI.setup_anndata."
            )
        self.original_label_key = state["original_key"]
        self.unlabeled_category_ = state["unlabeled_category"]
        self._label_mapping = np.asarray(state["categorical_mapping"], dtype=object)
        self._code_to_label = dict(enumerate(self._label_mapping))
        # The unlabeled category is registered last, after the labels the classifier predicts.
        mapping = [str(category) for category in self._label_mapping]
        self.n_labels = len(mapping) - (str(self.unlabeled_category_) in mapping)
        self.labels_ = None
        self._unlabeled_indices = self._labeled_indices = np.empty(0, dtype=np.int64)
        if self._adata_manager is None:
            return
        codes, unlabeled_code = label_codes(self.adata_manager)
        self.labels_ = self._label_mapping[codes]
        unlabeled = codes == unlabeled_code
        self._unlabeled_indices = np.flatnonzero(unlabeled)
        self._labeled_indices = np.flatnonzero(~unlabeled)

    # Setup ---------------------------------------------------------------------------------

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        labels_key: str,
        unlabeled_category: str | int | float,
        layer: str | None = None,
        batch_key: str | None = None,
        size_factor_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        use_minified: bool = True,
        **kwargs: Any,
    ) -> None:
        """Register ``adata`` for SCANVI.

        Parameters
        ----------
        adata
            AnnData of raw counts.
        labels_key
            obs column of the cell labels.
        unlabeled_category
            The value of ``labels_key`` that marks a cell as unlabeled (need not occur).
        layer
            Layer holding the counts; None uses ``adata.X``.
        batch_key
            obs column of the batch (experimental batch, for integration); None: one batch.
        size_factor_key
            obs column of size factors, used instead of library sizes.
        categorical_covariate_keys, continuous_covariate_keys
            obs columns of further covariates the decoder (and encoder, with
            ``encode_covariates``) conditions on.
        use_minified
            Register a minified AnnData as such (its stored posterior); False registers it
            as plain data.
        **kwargs
            Passed to ``AnnDataManager.register_fields`` (e.g. ``source_registry``).
        """
        if labels_key is None:
            raise ValueError("SCANVI needs the labels: pass labels_key, an obs column.")
        if unlabeled_category is None:
            raise ValueError(
                "unlabeled_category must be the label of unlabeled cells (e.g. 'Unknown'); "
                "it may also be a value no cell has, when every cell is labeled."
            )
        setup_method_args = cls._get_setup_method_args(**locals())
        fields = count_model_fields(
            layer,
            batch_key,
            LabelsWithUnlabeledObsField(REGISTRY_KEYS.LABELS_KEY, labels_key, unlabeled_category),
            size_factor_key,
            categorical_covariate_keys,
            continuous_covariate_keys,
        )
        if use_minified and (minify_type := _get_adata_minify_type(adata)) is not None:
            fields += cls._get_fields_for_adata_minification(minify_type)
        cls._register_fields(adata, fields, setup_method_args, **kwargs)

    @classmethod
    def from_scvi_model(
        cls,
        scvi_model: SCVI,
        unlabeled_category: str | int | float,
        labels_key: str | None = None,
        adata: AnnData | None = None,
        registry: dict[str, Any] | None = None,
        **scanvi_kwargs: Any,
    ) -> SCANVI:
        """A SCANVI model that starts from the weights of a trained SCVI model.

        The SCANVI model has the scVI model's architecture (its init parameters) and setup,
        with labels; every scVI weight is copied, and the classifier and the label hierarchy
        start fresh. SCANVI trains on counts: a scVI model minified without them, or
        minified ``adata``, is refused.

        Parameters
        ----------
        scvi_model
            The scVI model (a warning says so when it is not trained).
        unlabeled_category
            The label of unlabeled cells in ``labels_key``.
        labels_key
            obs column of the labels, when the scVI model was set up without one; if it was
            set up with one, that one is used (and this argument ignored).
        adata
            AnnData to build on, registered like the scVI model's (validated against it);
            None uses the scVI model's AnnData.
        registry
            For an scVI model without AnnData (built from a registry): the registry of a
            SCANVI setup to build the SCANVI model from.
        **scanvi_kwargs
            Further SCANVI arguments; those the scVI model already fixed are ignored, with a
            warning.
        """
        if not scvi_model.is_trained_:
            warnings.warn(
                "Passed in scvi model hasn't been trained yet.", UserWarning, stacklevel=2
            )
        scvi_kwargs = init_arguments(scvi_model.init_params_)
        for name in sorted(set(scvi_kwargs) & set(scanvi_kwargs)):
            warnings.warn(
                f"Ignoring param {name!r}: the pretrained SCVI model fixed it to "
                f"{scvi_kwargs[name]!r}.",
                UserWarning,
                stacklevel=2,
            )
            del scanvi_kwargs[name]
        # Training continues from the scVI model on counts, which minified data lack.
        if scvi_model.minified_data_type == ADATA_MINIFY_TYPE.LATENT_POSTERIOR:
            raise ValueError(
                "We cannot use the given scVI model to initialize scANVI because it has "
                "minified adata. Keep counts when minifying model using "
                "minified_data_type='latent_posterior_parameters_with_counts'."
            )
        if adata is not None and _is_minified(adata):
            raise ValueError("Please provide a non-minified `adata` to initialize scANVI.")
        if adata is None and scvi_model._adata is None:
            if registry is None:
                raise ValueError(
                    "The scVI model has no AnnData: pass adata, or the registry of a SCANVI "
                    "setup (registry=...)."
                )
            scanvi_model = cls(registry=registry, **scvi_kwargs, **scanvi_kwargs)
        else:
            adata = cls._set_up_like(scvi_model, adata, unlabeled_category, labels_key)
            scanvi_model = cls(adata, **scvi_kwargs, **scanvi_kwargs)
        scanvi_model.module.to(scvi_model.device)
        loaded = scanvi_model.module.load_state_dict(scvi_model.module.state_dict(), strict=False)
        if loaded.unexpected_keys:
            raise ValueError(
                "The SCVI module holds weights SCANVI has no place for "
                f"({', '.join(loaded.unexpected_keys[:5])}); it was not built as a VAE."
            )
        scanvi_model.was_pretrained = True
        return scanvi_model

    @classmethod
    def _set_up_like(
        cls,
        scvi_model: SCVI,
        adata: AnnData | None,
        unlabeled_category: str | int | float,
        labels_key: str | None,
    ) -> AnnData:
        """``adata`` (None: the scVI model's) set up for SCANVI as the scVI model's was."""
        setup_args = copy.deepcopy(scvi_model.adata_manager.registry["setup_args"])
        if setup_args.get("labels_key") is None:
            if labels_key is None:
                raise ValueError(
                    "A labels_key is necessary as the scVI model was set up without one."
                )
            setup_args["labels_key"] = labels_key
        adata = scvi_model.adata if adata is None else scvi_model._validate_anndata(adata)
        cls.setup_anndata(
            adata, unlabeled_category=unlabeled_category, use_minified=False, **setup_args
        )
        return adata

    # Training ------------------------------------------------------------------------------

    def train(
        self,
        max_epochs: int | None = None,
        n_samples_per_label: int | None = None,
        check_val_every_n_epoch: int | None = None,
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        batch_size: int = 128,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        adversarial_classifier: bool | None = None,
        datasplitter_kwargs: dict[str, Any] | None = None,
        plan_config: KwargsLike | None = None,
        plan_kwargs: KwargsLike | None = None,
        datamodule: pl.LightningDataModule | None = None,
        trainer_config: KwargsLike | None = None,
        load_sparse_tensor: bool = False,
        device_resident: bool | str = "auto",
        **trainer_kwargs: Any,
    ) -> None:
        """Train the model on every cell, and its classifier on the labeled ones.

        Parameters
        ----------
        max_epochs
            Passes through the data; default ``min(round(20_000 / n_cells * 400), 400)``, and
            a third of that (between 2 and 10) for a model made by :meth:`from_scvi_model`.
        n_samples_per_label
            Labeled cells of each label the classifier sees per epoch (a new draw every
            epoch); None: every labeled cell.
        check_val_every_n_epoch
            Validate every this many epochs (None: only when needed, e.g. early stopping).
        train_size, validation_size, shuffle_set_split
            The split (see :class:`~cellvi.dataloaders.SemiSupervisedDataSplitter`: labeled
            and unlabeled cells are split separately, so each split keeps labeled cells). None
            for ``train_size``: 0.9, moving the one or two cells of a last training minibatch
            that would hold so few to the validation set (a chosen size keeps them).
        batch_size
            Minibatch size, of the cells and of the labeled cells served beside them.
        accelerator, devices
            Where to train (Lightning's names; "auto" picks a GPU when there is one).
        adversarial_classifier
            TOTALANVI's option in scvi-tools; SCANVI has no adversarial classifier, so only
            None or False are accepted.
        datasplitter_kwargs
            More splitter arguments, e.g. ``external_indexing=[train, valid, test]``.
        plan_config, plan_kwargs
            Arguments of :class:`~cellvi.train.SemiSupervisedTrainingPlan`
            (``classification_ratio``, ``lr``, ``n_epochs_kl_warmup``, ...); ``plan_kwargs``
            win over ``plan_config``.
        datamodule
            A ``LightningDataModule`` to train on instead of the splitter; its minibatches are
            ``(cells, labeled cells)`` pairs or dicts of cells.
        trainer_config, **trainer_kwargs
            :class:`~cellvi.train.Trainer` arguments (``early_stopping``, ``callbacks``, ...);
            ``trainer_kwargs`` win.
        load_sparse_tensor, device_resident
            As in :meth:`SCVI.train` (``device_resident``: the labeled minibatches are
            gathered on the device too).
        """
        if adversarial_classifier:
            raise ValueError(
                "adversarial_classifier is TOTALANVI's option; SCANVI has no adversarial "
                "classifier."
            )
        plan_kwargs = merge_kwargs(plan_config, plan_kwargs, name="plan")
        if "n_classes" in plan_kwargs:
            raise ValueError("n_classes is the model's number of labels; do not pass it.")
        plan_kwargs = {"n_classes": self.n_labels, **plan_kwargs}
        if max_epochs is None and datamodule is None and self._adata is not None:
            max_epochs = default_max_epochs(self.adata.n_obs)
            if self.was_pretrained:
                max_epochs = int(min(10, max(2, round(max_epochs / 3.0))))
        splitter_kwargs = {
            "train_size": train_size,
            "validation_size": validation_size,
            "shuffle_set_split": shuffle_set_split,
            "n_samples_per_label": n_samples_per_label,
            "batch_size": batch_size,
            "load_sparse_tensor": load_sparse_tensor,
            "device_resident": device_resident,
        }
        if check_val_every_n_epoch is not None:
            trainer_kwargs["check_val_every_n_epoch"] = check_val_every_n_epoch
        trainer_kwargs.update(
            accelerator=accelerator, devices=devices, trainer_config=trainer_config
        )
        run_training(
            self,
            max_epochs,
            splitter_kwargs,
            plan_kwargs,
            datamodule,
            datasplitter_kwargs,
            **trainer_kwargs,
        )

    # Prediction ----------------------------------------------------------------------------

    @posterior_query(untrained="warn")
    @torch.inference_mode()
    def predict(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        soft: bool = False,
        batch_size: int | None = None,
        use_posterior_mean: bool = True,
        dataloader: Minibatches | None = None,
    ) -> np.ndarray | pd.DataFrame:
        """The label of each cell, or the probability of every label (``soft``).

        Parameters
        ----------
        adata
            AnnData with the training genes; None uses the training data.
        indices
            Cells to label; None: all.
        soft
            Return the probabilities, a DataFrame with one column per label (indexed by the
            cells' obs names), instead of the most probable label.
        batch_size
            Minibatch size (default ``cellvi.settings.batch_size``).
        use_posterior_mean
            Classify the posterior mean of each cell's latent code; else a draw (stochastic
            predictions).
        dataloader
            Minibatches of your own instead of ``adata``.

        Returns
        -------
        An array of label names (an empty list when ``indices`` is empty), or the DataFrame.
        """
        if dataloader is None:
            adata = self._validate_anndata(adata)
            if indices is None:
                indices = np.arange(adata.n_obs)
            if len(indices) == 0:
                return []
        minibatches = self._query_minibatches(adata, indices, batch_size, dataloader)
        chunks = []
        for tensors in minibatches:
            inputs = self.module._get_inference_input(tensors)
            scores = self.module.classify(**inputs, use_posterior_mean=use_posterior_mean)
            if self.module.classifier.logits:
                scores = torch.softmax(scores, dim=-1)
            chunks.append(scores.cpu())
        probabilities = torch.cat(chunks).numpy()
        if not soft:
            return np.array([self._code_to_label[code] for code in probabilities.argmax(axis=1)])
        cells = adata.obs_names[indices] if dataloader is None else None
        return pd.DataFrame(
            probabilities, columns=self._label_mapping[: self.n_labels], index=cells
        )

    # Loading -------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        dir_path: str | Path,
        adata: AnnData | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
    ) -> SCANVI:
        """Load a saved SCANVI model (see :meth:`BaseModelClass.load`).

        A model saved by scvi-tools before 1.1, whose classifier returns probabilities, keeps
        doing so, and records ``classifier_parameters={"logits": False}`` so that saving it
        again keeps that too.
        """
        model = super().load(
            dir_path, adata=adata, accelerator=accelerator, device=device, prefix=prefix
        )
        if not model.module.classifier.logits:
            model_kwargs = model.init_params_["kwargs"].setdefault("model_kwargs", {})
            classifier_parameters = dict(model_kwargs.get("classifier_parameters") or {})
            model_kwargs["classifier_parameters"] = {**classifier_parameters, "logits": False}
        return model
