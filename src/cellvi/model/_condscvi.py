"""``CondSCVI``: single-cell variational inference conditioned on the cell type."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from cellvi.data import REGISTRY_KEYS
from cellvi.data.fields import (
    CategoricalObsField,
    LabelsWithUnlabeledObsField,
    LayerField,
    NumericalObsField,
)
from cellvi.data.fields._categorical import categories_of
from cellvi.model.base import (
    ArchesMixin,
    BaseModelClass,
    RNASeqMixin,
    UnsupervisedTrainingMixin,
    VAEMixin,
)
from cellvi.model.base._queries import posterior_query
from cellvi.module import VAEC
from cellvi.module._vaec import FINE_LABELS_KEY

# Floor on a label's share before inverting it: a label with a handful of cells would
# otherwise get a weight in the thousands and its few cells would dominate every minibatch.
_MIN_LABEL_SHARE = 0.05
# k-means of get_vamp_prior: restarts as scvi-tools runs them, and a fixed seed of the seedings.
_KMEANS_N_INIT = 30
_KMEANS_SEED = 0


class CondSCVI(RNASeqMixin, VAEMixin, ArchesMixin, UnsupervisedTrainingMixin, BaseModelClass):
    """Conditional scVI (Lopez et al. 2022): a latent space of variation within each cell type.

    Parameters
    ----------
    adata
        AnnData registered with ``CondSCVI.setup_anndata`` (a ``labels_key`` is required).
    n_hidden, n_latent, n_layers, dropout_rate
        See ``cellvi.module.VAEC``.
    weight_obs
        Weight each cell by the inverse frequency of its label, so that rare cell types count
        as much as common ones in the loss (see ``inverse_frequency_weights``).
    **module_kwargs
        Further ``VAEC`` arguments (``ct_weight``, ``encode_covariates``, ...).

    Examples
    --------
    >>> cellvi.model.CondSCVI.setup_anndata(adata, labels_key="cell_type")
    >>> model = cellvi.model.CondSCVI(adata, weight_obs=True)
    >>> model.train(max_epochs=100)
    >>> prior = model.get_vamp_prior(p=10)
    """

    def __init__(
        self,
        adata: AnnData,
        n_hidden: int = 128,
        n_latent: int = 5,
        n_layers: int = 2,
        weight_obs: bool = False,
        dropout_rate: float = 0.05,
        **module_kwargs: Any,
    ) -> None:
        super().__init__(adata)
        stats = self.summary_stats
        if "ct_weight" in module_kwargs:
            # Stored as a list: init parameters are saved as JSON.
            weights = np.asarray(module_kwargs["ct_weight"], dtype=float)
            module_kwargs["ct_weight"] = weights.tolist()
        vaec_kwargs = dict(module_kwargs)
        if weight_obs:
            # As in scvi-tools, weight_obs computes the weights (its files record both).
            codes = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY))
            computed = inverse_frequency_weights(codes.ravel(), stats["n_labels"])
            given = module_kwargs.get("ct_weight")
            if given is not None and not np.allclose(given, computed):
                warnings.warn(
                    "weight_obs=True computes the label weights from the data; the ct_weight "
                    "given as well is not used.",
                    UserWarning,
                    stacklevel=2,
                )
            vaec_kwargs["ct_weight"] = computed
        # The registry counts the unlabeled category (kept last) among the fine labels; the
        # classifier predicts only the real ones.
        n_fine_labels = stats.get("n_fine_labels")
        self.module = VAEC(
            n_input=stats["n_vars"],
            n_labels=stats["n_labels"],
            n_fine_labels=None if n_fine_labels is None else n_fine_labels - 1,
            n_hidden=n_hidden,
            n_latent=n_latent,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            n_batch=stats.get("n_batch", 0),
            **vaec_kwargs,
        )
        self._model_summary_string = (
            f"CondSCVI model with the following parameters:\nn_hidden: {n_hidden}, n_latent: "
            f"{n_latent}, n_layers: {n_layers}, dropout_rate: {dropout_rate}, weight_obs: "
            f"{weight_obs}."
        )
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        batch_key: str | None = None,
        labels_key: str | None = None,
        fine_labels_key: str | None = None,
        layer: str | None = None,
        unlabeled_category: str = "unlabeled",
        size_factor_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Register ``adata`` for CondSCVI.

        Parameters
        ----------
        adata
            AnnData of raw counts.
        batch_key
            obs column of the batch; with two or more batches the decoder gets a learnt batch
            embedding.
        labels_key
            obs column of the cell labels (cell types) the model conditions on; required.
        fine_labels_key
            obs column of finer labels (sub-types) that a classifier learns from the latent
            space (see :meth:`predict`); cells labelled ``unlabeled_category`` do not count.
        layer
            Layer holding the counts; None uses ``adata.X``.
        unlabeled_category
            The fine label of cells whose fine label is unknown.
        size_factor_key
            obs column of size factors, registered as scvi-tools does; CondSCVI's module
            reads each cell's total count as its library size, as in scvi-tools.
        **kwargs
            Passed to ``AnnDataManager.register_fields`` (e.g. ``source_registry``).
        """
        if labels_key is None:
            raise ValueError(
                "CondSCVI conditions on the cell label: give labels_key, the adata.obs column "
                "of cell types (e.g. setup_anndata(adata, labels_key='cell_type'))."
            )
        setup_method_args = cls._get_setup_method_args(**locals())
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, size_factor_key, required=False),
        ]
        if fine_labels_key is not None:
            fields.append(
                LabelsWithUnlabeledObsField(FINE_LABELS_KEY, fine_labels_key, unlabeled_category)
            )
        cls._register_fields(adata, fields, setup_method_args, **kwargs)

    def train(
        self,
        max_epochs: int = 300,
        lr: float = 1e-3,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        train_size: float = 1.0,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        batch_size: int = 128,
        datasplitter_kwargs: dict[str, Any] | None = None,
        plan_kwargs: dict[str, Any] | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        """Train the model; by default on every cell (no validation split), as scvi-tools does.

        The arguments are those of ``TrainingMixin.train`` (``lr`` takes precedence over a
        learning rate in ``plan_kwargs``), with CondSCVI's defaults.
        """
        super().train(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            train_size=train_size,
            validation_size=validation_size,
            shuffle_set_split=shuffle_set_split,
            batch_size=batch_size,
            lr=lr,
            datasplitter_kwargs=datasplitter_kwargs,
            plan_kwargs=plan_kwargs,
            **trainer_kwargs,
        )

    def get_vamp_prior(self, adata: AnnData | None = None, p: int = 10) -> dict[str, np.ndarray]:
        """Summarise each label's posterior as a mixture of ``p`` Gaussians (a VampPrior).

        The posterior means of a label's cells are clustered into ``p`` groups by
        scikit-learn's ``KMeans`` (k-means++ seeding, 30 restarts, as scvi-tools runs it); a
        group's component has the mean of its cells' posterior means, the variance of the
        mixture of its cells' posteriors (mean posterior variance plus variance of the
        means) and a weight equal to its share of the label's cells. A label with at most
        ``p`` cells gets one component per cell. Components come in the order of the
        cluster indices; unused slots hold mean 0, variance 1 and weight 0.

        scvi-tools gives ``KMeans`` no ``random_state``, so its seedings come from NumPy's
        global generator and a second call can give another prior; cellvi fixes
        ``random_state=0``, so the same model and data always give the same prior, whatever
        the global random state.

        Parameters
        ----------
        adata
            AnnData with the training genes and labels; None uses the training data.
        p
            Number of components per label.

        Returns
        -------
        dict
            ``mean_vprior`` and ``var_vprior`` of shape (n_labels, p, n_latent), and
            ``weights_vprior`` of shape (n_labels, p) (each label's row sums to 1, or is all
            zeros for a label without cells in ``adata``).
        """
        from sklearn.cluster import KMeans  # imported here: ``import cellvi`` stays light

        if p < 1:
            raise ValueError(f"p (components per label) must be >= 1, got {p}.")
        adata = self._validate_anndata(adata)
        means, variances = self.get_latent_representation(adata, return_dist=True)
        manager = self.get_anndata_manager(adata, required=True)
        codes = np.asarray(manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY)).ravel()
        n_labels, n_latent = self.summary_stats["n_labels"], self.module.n_latent
        mean_vprior = np.zeros((n_labels, p, n_latent))
        var_vprior = np.ones((n_labels, p, n_latent))
        weights_vprior = np.zeros((n_labels, p))
        for label in range(n_labels):
            cells = np.flatnonzero(codes == label)
            if len(cells) == 0:
                continue
            if len(cells) > p:
                kmeans = KMeans(n_clusters=p, n_init=_KMEANS_N_INIT, random_state=_KMEANS_SEED)
                groups = kmeans.fit_predict(means[cells])
            else:
                groups = np.arange(len(cells))  # every cell its own component
            for slot, group in enumerate(np.unique(groups)):
                members = cells[groups == group]
                mean_vprior[label, slot] = means[members].mean(0)
                var_vprior[label, slot] = variances[members].mean(0) + means[members].var(0)
                weights_vprior[label, slot] = len(members) / len(cells)
        return {
            "mean_vprior": mean_vprior,
            "var_vprior": var_vprior,
            "weights_vprior": weights_vprior,
        }

    @posterior_query
    @torch.no_grad()
    def predict(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        soft: bool = False,
        batch_size: int | None = None,
        use_posterior_mean: bool = True,
    ) -> np.ndarray | pd.DataFrame:
        """Predict each cell's fine label with the classifier trained on ``fine_labels_key``.

        Parameters
        ----------
        adata
            AnnData with the training setup; None uses the training data.
        indices
            Cells to predict; None predicts all.
        soft
            Return each fine label's probability instead of the most probable label.
        batch_size
            Minibatch size (default ``cellvi.settings.batch_size``).
        use_posterior_mean
            Classify the posterior mean of ``z``; else one draw from the posterior, which
            makes the predictions random.

        Returns
        -------
        numpy.ndarray or pandas.DataFrame
            The fine label of each cell, or (``soft``) a DataFrame of probabilities, one
            column per fine label, indexed by the cells' names.
        """
        if self.module.classifier is None:
            raise ValueError(
                "This CondSCVI has no fine-label classifier: set it up with "
                "setup_anndata(..., fine_labels_key=...) to predict fine labels."
            )
        adata = self._validate_anndata(adata)
        indices = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        probabilities = []
        for tensors in loader:
            inference_inputs = self.module._get_inference_input(tensors)
            qz = self.module.inference(**inference_inputs)["qz"]
            z = qz.loc if use_posterior_mean else qz.sample()
            logits = self.module.classify(z, inference_inputs["y"])
            probabilities.append(torch.softmax(logits, dim=-1).cpu())
        probability = torch.cat(probabilities).numpy()
        fine_labels = self._fine_label_names()
        if soft:
            return pd.DataFrame(probability, columns=fine_labels, index=adata.obs_names[indices])
        return np.asarray(fine_labels, dtype=object)[probability.argmax(axis=1)]

    def _fine_label_names(self) -> list:
        """The fine labels the classifier predicts, in code order (the unlabeled one left out)."""
        state = self.adata_manager.get_state_registry(FINE_LABELS_KEY)
        return list(state["categorical_mapping"])[: self.module.n_fine_labels]

    def _validate_anndata(
        self, adata: AnnData | None = None, copy_if_view: bool = True
    ) -> AnnData:
        """As the base class, but name labels unseen at training before transferring a setup."""
        if adata is not None and self.get_anndata_manager(adata) is None:
            self._check_labels_known(adata)
        return super()._validate_anndata(adata, copy_if_view)

    def _check_labels_known(self, adata: AnnData) -> None:
        state = self.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY)
        key, known = state["original_key"], set(state["categorical_mapping"])
        if key not in adata.obs:
            return  # the transfer reports the missing column
        present = categories_of(pd.Series(adata.obs[key].to_numpy(dtype=object)))
        unseen = [label for label in present if label not in known]
        if unseen:
            raise ValueError(
                f"adata.obs[{key!r}] holds labels unseen at training: {unseen[:10]}. CondSCVI "
                "conditions its encoder and decoder on the label and has no weights for these; "
                "drop those cells, or train a model on data that includes them."
            )


def inverse_frequency_weights(codes: np.ndarray, n_labels: int) -> list[float]:
    """Per-label weights inverse to label frequency, as scvi-tools' ``weight_obs`` computes them.

    Shares below 5% are raised to 5% and the shares renormalised before inverting, so a
    label's weight is at most about 20x.

    Parameters
    ----------
    codes
        Label code of each cell.
    n_labels
        Number of labels (labels without cells get the floor share).

    Returns
    -------
    One weight per label code.
    """
    counts = np.bincount(np.asarray(codes, dtype=np.int64), minlength=n_labels)
    shares = np.maximum(counts / counts.sum(), _MIN_LABEL_SHARE)
    return (1.0 / (shares / shares.sum())).tolist()
