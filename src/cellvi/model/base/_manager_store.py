"""The two manager stores a model class keeps: per setup, and per model instance."""

from __future__ import annotations

import logging
import weakref
from typing import Any, ClassVar

from anndata import AnnData

from cellvi.data import AnnDataManager
from cellvi.data._constants import SETUP_UUID_KEY
from cellvi.data._identity import separate_copy
from cellvi.data.fields._base import FieldData

logger = logging.getLogger("cellvi")


class ManagerStoreMixin:
    """Class-level and per-instance stores of ``AnnDataManager`` objects.

    ``setup_anndata`` puts its manager in the class store, keyed by the AnnData's UUID
    (``adata.uns["_scvi_uuid"]``); a model built on that AnnData fetches it from there. Each
    model instance also keeps its own store, ``{model.id: {adata UUID: manager}}``, so that two
    models working on one AnnData each find the registration they were trained with. Every
    subclass gets stores of its own.
    """

    _setup_adata_manager_store: ClassVar[dict[str, AnnDataManager]] = {}
    _per_instance_manager_store: ClassVar[dict[str, dict[str, AnnDataManager]]] = {}
    id: str
    adata_manager: AnnDataManager

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._setup_adata_manager_store = {}
        cls._per_instance_manager_store = {}

    @classmethod
    def _register_fields(
        cls,
        adata: AnnData,
        fields: list[Any],
        setup_method_args: dict[str, Any],
        **register_kwargs: Any,
    ) -> None:
        """Register ``fields`` of ``adata`` in a new manager and store it: every setup's end."""
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **register_kwargs)
        cls.register_manager(adata_manager)

    @classmethod
    def register_manager(cls, adata_manager: AnnDataManager) -> None:
        """Store the manager made by ``setup_anndata`` under its AnnData's UUID."""
        adata = adata_manager.adata
        if adata is None:
            raise ValueError("Register the manager's fields (register_fields) before storing it.")
        store = cls._setup_adata_manager_store
        # Managers hold their AnnData weakly; forget those whose AnnData is gone.
        for uuid in [uuid for uuid, manager in store.items() if manager.adata is None]:
            del store[uuid]
        separate_copy(adata, [store.get(adata_manager.adata_uuid)])
        store[adata_manager.adata_uuid] = adata_manager

    @classmethod
    def _get_most_recent_anndata_manager(
        cls, adata: AnnData, required: bool = False
    ) -> AnnDataManager | None:
        """The manager of the latest ``setup_anndata`` of this class on ``adata``, if any."""
        manager = cls._setup_adata_manager_store.get(adata.uns.get(SETUP_UUID_KEY))
        if manager is not None and manager.adata is not adata:
            manager = None
        if manager is None and required:
            raise ValueError(
                f"This AnnData is not set up for {cls.__name__}. Call "
                f"{cls.__name__}.setup_anndata(adata, ...) first."
            )
        return manager

    def _instance_managers(self) -> dict[str, AnnDataManager]:
        store = type(self)._per_instance_manager_store
        if self.id not in store:
            store[self.id] = {}
            # Drop the entry with the model, so stores do not keep AnnData objects alive.
            weakref.finalize(self, store.pop, self.id, None)
        return store[self.id]

    def _register_manager_for_instance(self, adata_manager: AnnDataManager) -> None:
        """Remember ``adata_manager`` as this model's registration of its AnnData."""
        self._instance_managers()[adata_manager.adata_uuid] = adata_manager

    def get_anndata_manager(self, adata: AnnData, required: bool = False) -> AnnDataManager | None:
        """This model's manager for ``adata``, or None if the model has not seen it."""
        managers = self._instance_managers()
        manager = managers.get(adata.uns.get(SETUP_UUID_KEY))
        if manager is not None and manager.adata is not adata:
            manager = None
        if manager is None and required:
            raise ValueError(
                f"This {type(self).__name__} model has no registration of this AnnData; pass it "
                "through a query method (which transfers the setup) first."
            )
        return manager

    def get_from_registry(self, adata: AnnData, registry_key: str) -> FieldData:
        """The data of one registered field of ``adata``, as this model registered them.

        The registration is validated first, so codes are those the model learnt.
        """
        manager = self.get_anndata_manager(adata, required=True)
        manager.validate()
        return manager.get_from_registry(registry_key)

    def _manager_for(self, adata: AnnData, **transfer_kwargs: object) -> AnnDataManager:
        """The registration of ``adata`` this model must read it with, made valid now.

        Known AnnData: its registration is validated and replayed if another setup wrote over
        it since. New AnnData: the training setup is transferred to it (same genes, same
        category codes) and remembered for this model.
        """
        manager = self.get_anndata_manager(adata)
        if manager is not None:
            manager.validate()
            return manager
        training_manager: AnnDataManager = self.adata_manager
        logger.info("Input AnnData not set up with cellvi; transferring the training setup.")
        manager = training_manager.transfer_fields(adata, **transfer_kwargs)
        uuid = manager.adata_uuid
        separate_copy(
            adata,
            [type(self)._setup_adata_manager_store.get(uuid), self._instance_managers().get(uuid)],
        )
        self._register_manager_for_instance(manager)
        return manager

    def deregister_manager(self, adata: AnnData | None = None) -> None:
        """Forget registrations, in this model's store and in its class's setup store.

        With ``adata``, forget that AnnData's (the training data's too, if asked); without,
        forget every registration but this model's training data. Forgetting an AnnData that
        neither store holds is a ``ValueError``.
        """
        stores = (type(self)._setup_adata_manager_store, self._instance_managers())
        if adata is None:
            try:
                training = self.adata_manager
            except RuntimeError:  # a model loaded without its AnnData
                training = None
            keep = None if training is None or training.adata is None else training.adata_uuid
            for store in stores:
                for uuid in [key for key in store if key != keep]:
                    del store[uuid]
            return
        uuid = adata.uns.get(SETUP_UUID_KEY)
        if not any(uuid in store for store in stores):
            raise ValueError(
                f"This AnnData is not registered with {type(self).__name__} (set up or read by "
                "this model), so there is nothing to deregister."
            )
        for store in stores:
            store.pop(uuid, None)
