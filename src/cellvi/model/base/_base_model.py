"""``BaseModelClass``: a module bound to registered AnnData, with save/load and queries."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import numpy as np
import torch
from anndata import AnnData

from cellvi.data import AnnDataManager
from cellvi.data._anntorchdataset import reads_from_disk
from cellvi.dataloaders import AnnDataLoader, StreamingLoader
from cellvi.model.base._init_params import record_init_params
from cellvi.model.base._manager_store import ManagerStoreMixin
from cellvi.model.base._persistence import PersistenceMixin
from cellvi.module.base import BaseModuleClass
from cellvi.plotting import plot_history
from cellvi.train import TrainingState
from cellvi.utils import attrdict

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger("cellvi")
# Query loader options the out-of-core loader takes too.
_STREAMING_OPTIONS = {"data_and_attributes", "load_sparse_tensor", "streaming"}


class _StateField:
    """A model attribute kept on the model's :class:`TrainingState` (under another name)."""

    def __init__(self, name: str, doc: str) -> None:
        self.name = name
        self.__doc__ = doc

    def __get__(self, model: BaseModelClass | None, owner: type) -> Any:
        return self if model is None else getattr(model.training_state, self.name)

    def __set__(self, model: BaseModelClass, value: Any) -> None:
        setattr(model.training_state, self.name, value)


class BaseModelClass(PersistenceMixin, ManagerStoreMixin):
    """Wrap a module with the AnnData it learns from: registration, training state, queries.

    A subclass defines ``setup_anndata`` (which fields to register) and, in ``__init__``,
    builds ``self.module`` from ``self.summary_stats`` and records
    ``self.init_params_ = self._get_init_params(locals())``.

    Parameters
    ----------
    adata
        AnnData registered with the subclass's ``setup_anndata``.
    registry
        Without ``adata``: the registry of a setup (``model.registry`` of another model, or
        a saved one) that the module is sized from; the model then trains on a
        ``datamodule``. With neither, a model that supports it (``SCVI``) builds its module
        from the datamodule at its first ``train`` (``_module_init_on_train``).
    """

    module: BaseModuleClass

    is_trained_ = _StateField("is_trained", "Whether the model has been trained.")
    is_trained = _StateField("is_trained", "Whether the model has been trained.")
    history_ = _StateField("history", "Training metrics, one DataFrame per metric (by epoch).")
    history = _StateField("history", "Training metrics, one DataFrame per metric (by epoch).")
    train_indices = _StateField("train_indices", "Cells the last fit trained on.")
    validation_indices = _StateField("validation_indices", "Cells the last fit validated on.")
    test_indices = _StateField("test_indices", "Cells the last fit held out for testing.")
    # scvi-tools keeps the same three under these names too.
    train_indices_ = _StateField("train_indices", "Cells the last fit trained on.")
    validation_indices_ = _StateField("validation_indices", "Cells the last fit validated on.")
    test_indices_ = _StateField("test_indices", "Cells the last fit held out for testing.")
    trainer = _StateField("trainer", "The Lightning trainer of the last fit.")

    def __init__(
        self, adata: AnnData | None = None, registry: dict[str, Any] | None = None
    ) -> None:
        self.id = str(uuid4())
        self._adata: AnnData | None = None
        self._adata_manager: AnnDataManager | None = None
        self._registry: dict[str, Any] | None = None
        self.summary_stats = attrdict()
        if adata is not None:
            manager = self._get_most_recent_anndata_manager(adata, required=True)
            manager.validate()
            self._adata = adata
            self._adata_manager = manager
            self._register_manager_for_instance(manager)
            self.summary_stats = manager.summary_stats
        elif registry is not None:
            self._registry = registry
            self.summary_stats = AnnDataManager._get_summary_stats_from_registry(registry)
        self._module_init_on_train = adata is None and registry is None
        self.training_state = TrainingState()
        self.init_params_: dict[str, Any] = {}
        self._model_summary_string = ""

    # Data ----------------------------------------------------------------------------------

    @property
    def adata(self) -> AnnData:
        """The AnnData the model was built on."""
        if self._adata is None:
            raise RuntimeError("This model holds no AnnData (load it with adata=...).")
        return self._adata

    @adata.setter
    def adata(self, adata: AnnData) -> None:
        """Bind the model to other data, registered as its training data were (by transfer)."""
        if adata is None:
            raise ValueError("A model's AnnData cannot be set to None.")
        adata = self._validate_anndata(adata)
        manager = self.get_anndata_manager(adata, required=True)
        self._adata, self._adata_manager = adata, manager
        self.summary_stats = manager.summary_stats

    @property
    def registry_(self) -> dict[str, Any]:
        """The registry of the model's AnnData (scvi-tools' name for ``registry``)."""
        return self.registry

    @property
    def adata_manager(self) -> AnnDataManager:
        """The registration of the training AnnData."""
        if self._adata_manager is None:
            raise RuntimeError("This model holds no AnnData (load it with adata=...).")
        return self._adata_manager

    @property
    def registry(self) -> dict[str, Any]:
        """The registry of the training setup (its AnnData's, or the one it was built from)."""
        if self._adata_manager is None and self._registry is not None:
            return self._registry
        return self.adata_manager.registry

    def _validate_anndata(
        self, adata: AnnData | None = None, copy_if_view: bool = True
    ) -> AnnData:
        """Return ``adata`` ready to be read with this model's setup.

        None means the training AnnData. A view is copied (registration must write codes). A
        known AnnData has its registration validated and replayed if another setup wrote over
        it; a new one receives the training setup by transfer (same genes, same codes).
        """
        if adata is None:
            adata = self.adata
        if adata.is_view:
            if not copy_if_view:
                raise ValueError("Got a view of an AnnData; pass adata.copy().")
            warnings.warn(
                "Got a view of an AnnData; working on a copy.", UserWarning, stacklevel=3
            )
            adata = adata.copy()
        self._manager_for(adata)
        return adata

    def _make_data_loader(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        batch_size: int | None = None,
        shuffle: bool = False,
        **loader_kwargs: Any,
    ) -> AnnDataLoader | StreamingLoader:
        """A loader over ``adata`` (validated first) with this model's registration.

        Data on disk (a backed h5ad, a zarr store's matrix) stream through the out-of-core
        loader, read ahead by a background thread, unless ``loader_kwargs`` ask for options
        only :class:`AnnDataLoader` has.
        """
        adata = self._validate_anndata(adata)
        manager = self.get_anndata_manager(adata, required=True)
        if reads_from_disk(manager) and set(loader_kwargs) <= _STREAMING_OPTIONS:
            return StreamingLoader(
                manager, indices=indices, batch_size=batch_size, shuffle=shuffle, **loader_kwargs
            )
        return AnnDataLoader(
            manager, indices=indices, batch_size=batch_size, shuffle=shuffle, **loader_kwargs
        )

    # The name older scvi-tools (and its model-building tutorial) gave the same method.
    _make_dataloader = _make_data_loader

    def _example_batch(self, n_cells: int = 128) -> dict[str, torch.Tensor]:
        """The first minibatch of the model's AnnData, as its module receives minibatches."""
        indices = np.arange(min(n_cells, self.adata.n_obs))
        return next(iter(self._make_data_loader(indices=indices, batch_size=n_cells)))

    def _check_if_trained(self) -> None:
        if not self.is_trained_:
            raise RuntimeError(
                f"This {type(self).__name__} model is not trained yet: call model.train() first."
            )

    @classmethod
    def _get_setup_method_args(cls, /, **setup_locals: Any) -> dict[str, Any]:
        """Record the arguments of ``setup_anndata`` (all but ``cls``, ``adata``, ``kwargs``)."""
        skipped = {"cls", "adata", "kwargs", "__class__"}
        args = {key: value for key, value in setup_locals.items() if key not in skipped}
        return {
            "model_name": cls.__name__,
            "setup_method_name": "setup_anndata",
            "setup_args": args,
        }

    def _get_init_params(self, init_locals: dict[str, Any]) -> dict[str, Any]:
        """Record the arguments of ``__init__`` for save/load (see :func:`record_init_params`)."""
        return record_init_params(type(self).__init__, init_locals)

    # Device and state ----------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Device of the module's parameters."""
        return self.module.device

    def to_device(self, device: str | int | torch.device) -> None:
        """Move the module to ``device`` (e.g. "cpu", "cuda:0", 0); queries then run there."""
        self.module.to(torch.device(f"cuda:{device}") if isinstance(device, int) else device)

    def view_anndata_setup(
        self, adata: AnnData | None = None, hide_state_registries: bool = False
    ) -> None:
        """Print how ``adata`` (default: the training AnnData) is registered for this model."""
        adata = self._validate_anndata(adata)
        self.get_anndata_manager(adata, required=True).view_registry(hide_state_registries)

    # Pictures ------------------------------------------------------------------------------

    def plot_history(
        self,
        terms: Sequence[str] | None = None,
        path: str | Path | None = None,
        **plot_kwargs: Any,
    ) -> Figure:
        """Plot the ELBO and its terms per epoch, for the training and validation cells.

        The validation curves appear when the fit validated (``train(...,
        check_val_every_n_epoch=1)``, early stopping). Needs matplotlib
        (``pip install 'cellvi[plot]'``); see :func:`cellvi.plotting.plot_history`.

        Parameters
        ----------
        terms
            Metrics to draw (``"elbo"``, ``"reconstruction_loss"``, ``"kl_local"``, ...);
            default the ELBO and its terms, and a classifier's loss and accuracy (SCANVI).
        path
            Also write the figure there (PNG unless the suffix says otherwise).
        **plot_kwargs
            ``title``, ``panel_size``, ``dpi``.

        Returns
        -------
        The matplotlib ``Figure``.
        """
        if not self.history:
            raise RuntimeError(
                f"This {type(self).__name__} model has no training history: call "
                "model.train() first."
            )
        plot_kwargs.setdefault("title", f"{type(self).__name__} training")
        return plot_history(self.history, terms=terms, path=path, **plot_kwargs)

    def __repr__(self) -> str:
        summary = self._model_summary_string or f"{type(self).__name__} model"
        status = "Trained" if self.is_trained_ else "Not Trained"
        return f"{summary}\nTraining status: {status}"
