"""``AnnDataManager``: the registration of one AnnData for one model setup."""

from __future__ import annotations

import copy
import logging
import weakref
from collections.abc import Sequence
from typing import Any
from uuid import uuid4

import numpy.typing as npt
from torch.utils.data import Subset

from cellvi._version import __version__
from cellvi.data import _constants as keys
from cellvi.data._anndata_checks import check_anndata
from cellvi.data._anntorchdataset import AnnTorchDataset
from cellvi.data._identity import separate_copy, stamp_identity
from cellvi.data._mudata import AnnOrMuData, get_modality
from cellvi.data._registry_view import print_registry, state_registry_view
from cellvi.data._snapshot import RegistrationSnapshot
from cellvi.data.fields import BaseAnnDataField
from cellvi.data.fields._base import FieldData, read_attribute
from cellvi.utils import attrdict

logger = logging.getLogger("cellvi")


class AnnDataManager:
    """Register the fields a model reads on an AnnData, and keep that registration valid.

    One manager holds one AnnData (or MuData). ``register_fields`` writes codes for
    categorical fields, stamps ``adata.uns["_scvi_uuid"]`` (the AnnData's identity, kept when
    present) and ``adata.uns["_scvi_manager_uuid"]`` (which manager wrote the codes last), and
    records a JSON-serialisable registry. ``transfer_fields`` applies the same setup to new
    data with the same category codes; ``validate`` replays the registration when another
    manager has written over this AnnData since.

    Parameters
    ----------
    fields
        The fields to register, each under a distinct registry key.
    setup_method_args
        ``{"model_name": ..., "setup_args": {...}}`` as made by a model's
        ``_get_setup_method_args``; recorded in the registry.
    """

    def __init__(
        self,
        fields: Sequence[BaseAnnDataField] | None = None,
        setup_method_args: dict[str, Any] | None = None,
    ) -> None:
        self.id = str(uuid4())
        self._adata_ref: weakref.ref[AnnOrMuData] | None = None
        self.fields: list[BaseAnnDataField] = []
        self._check_new_keys(fields or [])
        self.fields = list(fields or [])
        setup_method_args = setup_method_args or {}
        self._registry: dict[str, Any] = {
            keys._CELLVI_VERSION_KEY: __version__,
            keys._MODEL_NAME_KEY: setup_method_args.get(keys._MODEL_NAME_KEY),
            keys._SETUP_METHOD_NAME: setup_method_args.get(
                keys._SETUP_METHOD_NAME, "setup_anndata"
            ),
            keys._SETUP_ARGS_KEY: copy.deepcopy(setup_method_args.get(keys._SETUP_ARGS_KEY) or {}),
            keys._FIELD_REGISTRIES_KEY: {},
        }

    def _check_new_keys(self, fields: Sequence[BaseAnnDataField]) -> None:
        """Refuse fields whose registry keys repeat one another's or this manager's fields'."""
        new_keys = [field.registry_key for field in fields]
        known = {field.registry_key for field in self.fields}
        repeated = sorted({k for k in new_keys if new_keys.count(k) > 1 or k in known})
        if repeated:
            raise ValueError(
                f"Several fields use the registry keys {repeated}; each needs its own."
            )

    # Registration --------------------------------------------------------------------------

    def register_fields(
        self,
        adata: AnnOrMuData,
        source_registry: dict[str, Any] | None = None,
        **transfer_kwargs: Any,
    ) -> None:
        """Register every field on ``adata``; on any error ``adata`` is left as it was.

        Parameters
        ----------
        adata
            The AnnData (or MuData) to register.
        source_registry
            A registry to follow (transfer: same genes, same category codes); None registers
            from scratch.
        **transfer_kwargs
            Passed to each field's ``transfer_field`` (e.g. ``extend_categories=True``); only
            with a ``source_registry``.
        """
        if self.adata is not None:
            raise RuntimeError(
                "This manager already holds an AnnData; use transfer_fields(new_adata) for "
                "another one."
            )
        if source_registry is None and transfer_kwargs:
            raise TypeError(
                f"register_fields() got the transfer options {sorted(transfer_kwargs)} without "
                "a source_registry to transfer from."
            )
        check_anndata(adata)
        self._registry[keys._FIELD_REGISTRIES_KEY] = self._write_fields(
            adata, self.fields, source_registry, transfer_kwargs
        )
        self._adata_ref = weakref.ref(adata)
        stamp_identity(adata)

    def register_new_fields(self, fields: Sequence[BaseAnnDataField]) -> None:
        """Register further fields on the AnnData this manager holds, from scratch.

        The registration is validated first; a registry key already in use is an error. A
        manager transferred from this one carries the new fields too.
        """
        adata = self._require_adata()
        self._check_new_keys(fields)
        self.validate()
        registries = self._registry[keys._FIELD_REGISTRIES_KEY]
        added = self._write_fields(adata, fields, None, {}, existing=registries)
        self.fields += list(fields)
        registries.update(added)

    def _write_fields(
        self,
        adata: AnnOrMuData,
        fields: Sequence[BaseAnnDataField],
        source_registry: dict[str, Any] | None,
        transfer_kwargs: dict[str, Any],
        existing: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Register (or transfer) ``fields``; return their field registries.

        A field the source registry lacks is registered from scratch. ``existing`` are the
        field registries held already, whose summary statistics the new ones may not repeat.
        """
        source = (source_registry or {}).get(keys._FIELD_REGISTRIES_KEY, {})
        stats_owner = {
            stat: key
            for key, entry in (existing or {}).items()
            for stat in entry[keys._SUMMARY_STATS_KEY]
        }
        snapshot = RegistrationSnapshot.take(adata)
        registries: dict[str, Any] = {}
        try:
            for field in fields:
                if field.registry_key in source:
                    state = field.transfer_field(
                        source[field.registry_key][keys._STATE_REGISTRY_KEY],
                        adata,
                        **transfer_kwargs,
                    )
                else:
                    state = field.register_field(adata)
                stats = field.get_summary_stats(state)
                for stat in stats:
                    if stat in stats_owner:
                        raise ValueError(
                            f"Fields {stats_owner[stat]!r} and {field.registry_key!r} both give "
                            f"the summary statistic {stat!r}; give them distinct registry keys."
                        )
                    stats_owner[stat] = field.registry_key
                registries[field.registry_key] = {
                    keys._DATA_REGISTRY_KEY: {} if field.is_empty else field.data_registry,
                    # A copy, so the registry never shares lists with the field objects.
                    keys._STATE_REGISTRY_KEY: copy.deepcopy(state),
                    keys._SUMMARY_STATS_KEY: stats,
                }
        except Exception:
            snapshot.restore(adata)
            raise
        for field in fields:
            field.correct_layout(adata)
        adata.uns[keys.MANAGER_UUID_KEY] = self.id
        return registries

    def transfer_fields(self, adata_target: AnnOrMuData, **kwargs: Any) -> AnnDataManager:
        """A new manager registering ``adata_target`` with this setup (same genes and codes).

        Parameters
        ----------
        adata_target
            New data with the training genes; categorical columns may hold a subset of the
            training categories (codes stay the training codes).
        **kwargs
            ``extend_categories=True`` adds unseen categories instead of raising.
        """
        self._require_adata()
        new_manager = type(self)(
            fields=self.fields, setup_method_args=self._get_setup_method_args()
        )
        new_manager.register_fields(adata_target, source_registry=self._registry, **kwargs)
        separate_copy(adata_target, [self])
        return new_manager

    def validate(self) -> None:
        """Check the AnnData still fits its registration, and refresh the codes it holds.

        The user may have edited the AnnData in place since it was registered (genes subset or
        reordered, categories relabelled), or another model's setup may have written its own
        codes over it. Each field checks its data against the registry and rewrites what
        cellvi stores (codes, covariate tables) from the current values with this manager's
        categories, so codes always mean what the model learnt; anything the registry does not
        know is an error, and the AnnData is then left as it was.
        """
        adata = self._require_adata()
        check_anndata(adata)
        if adata.uns.get(keys.MANAGER_UUID_KEY) != self.id:
            logger.info("Replaying the registration of this AnnData for manager %s.", self.id)
        snapshot = RegistrationSnapshot.take(adata)
        try:
            for field in self.fields:
                field.revalidate(adata, self._state_registry(field.registry_key))
        except Exception:
            snapshot.restore(adata)
            raise
        adata.uns[keys.MANAGER_UUID_KEY] = self.id

    def update_setup_method_args(self, setup_method_args: dict[str, Any]) -> None:
        """Record further setup arguments (e.g. ones a model adds after setup) in the registry."""
        self._registry[keys._SETUP_ARGS_KEY].update(copy.deepcopy(setup_method_args))

    def _get_setup_method_args(self) -> dict[str, Any]:
        """The model name, setup method and setup arguments this manager was made with."""
        return {
            name: copy.deepcopy(self._registry[name])
            for name in (keys._MODEL_NAME_KEY, keys._SETUP_METHOD_NAME, keys._SETUP_ARGS_KEY)
        }

    def _require_adata(self) -> AnnOrMuData:
        if self.adata is None:
            raise RuntimeError(
                "No AnnData is registered with this manager yet: call register_fields."
            )
        return self.adata

    # Reading -------------------------------------------------------------------------------

    @property
    def adata(self) -> AnnOrMuData | None:
        """The registered AnnData (None before registration or once the user dropped it).

        The manager refers to it weakly: the manager stores of model classes would otherwise
        keep every AnnData ever set up alive.
        """
        return None if self._adata_ref is None else self._adata_ref()

    @property
    def registry(self) -> dict[str, Any]:
        """The JSON-serialisable record of the setup: version, setup args, field registries."""
        return self._registry

    @property
    def adata_uuid(self) -> str:
        """Identity of the registered AnnData (``adata.uns["_scvi_uuid"]``)."""
        return self._require_adata().uns[keys.SETUP_UUID_KEY]

    @property
    def data_registry(self) -> attrdict:
        """Where each non-empty field's data live: ``{registry_key: {attr_name, attr_key}}``.

        MuData fields also name their modality (``mod_key``).
        """
        return attrdict(
            {
                key: entry[keys._DATA_REGISTRY_KEY]
                for key, entry in self._registry[keys._FIELD_REGISTRIES_KEY].items()
                if entry[keys._DATA_REGISTRY_KEY]
            }
        )

    @property
    def summary_stats(self) -> attrdict:
        """All fields' summary statistics (``n_cells``, ``n_vars``, ``n_batch``, ...)."""
        return self._get_summary_stats_from_registry(self._registry)

    @staticmethod
    def _get_summary_stats_from_registry(registry: dict[str, Any]) -> attrdict:
        """All fields' summary statistics, read from a registry (e.g. a saved model's)."""
        stats: dict[str, int] = {}
        for entry in registry[keys._FIELD_REGISTRIES_KEY].values():
            stats.update(entry[keys._SUMMARY_STATS_KEY])
        return attrdict(stats)

    def get_state_registry(self, registry_key: str) -> attrdict:
        """The state registry of one field (e.g. its categorical mapping), read-only.

        Lists of names (categories, column names) come as numpy arrays, so that
        ``state.categorical_mapping == "B cell"`` compares element-wise.
        """
        field = next((f for f in self.fields if f.registry_key == registry_key), None)
        state = self._state_registry(registry_key)
        return state_registry_view(state, () if field is None else field.array_entries)

    def _state_registry(self, registry_key: str) -> dict[str, Any]:
        return self._field_registry(registry_key)[keys._STATE_REGISTRY_KEY]

    def get_from_registry(self, registry_key: str) -> FieldData:
        """The registered data of one field, read from the AnnData.

        Obs fields come as (n_cells, 1) arrays, other data as they are stored: dense or sparse
        matrices, obsm tables as DataFrames (joint obs fields: one column per obs key).
        """
        location = self._field_registry(registry_key)[keys._DATA_REGISTRY_KEY]
        if not location:
            raise ValueError(f"Field {registry_key!r} is registered empty: it holds no data.")
        data = get_modality(self._require_adata(), location.get(keys._DR_MOD_KEY))
        return read_attribute(data, location[keys._DR_ATTR_NAME], location[keys._DR_ATTR_KEY])

    def create_torch_dataset(
        self,
        indices: npt.ArrayLike | None = None,
        data_and_attributes: Sequence[str] | dict[str, npt.DTypeLike] | None = None,
        load_sparse_tensor: bool = False,
    ) -> AnnTorchDataset | Subset:
        """A dataset of the registered data (see :class:`AnnTorchDataset`).

        Parameters
        ----------
        indices
            Cells to keep: the dataset is then a :class:`torch.utils.data.Subset` whose
            position ``i`` is cell ``indices[i]``. None keeps every cell.
        data_and_attributes
            Registry keys to serve, or registry keys mapped to dtypes; None serves all.
        load_sparse_tensor
            Serve fields stored sparse as torch sparse CSR tensors.
        """
        dataset = AnnTorchDataset(self, data_and_attributes, load_sparse_tensor)
        return dataset if indices is None else Subset(dataset, indices)

    def _field_registry(self, registry_key: str) -> dict[str, Any]:
        registries = self._registry[keys._FIELD_REGISTRIES_KEY]
        if registry_key not in registries:
            raise KeyError(f"{registry_key!r} is not registered; registered: {list(registries)}.")
        return registries[registry_key]

    # Display -------------------------------------------------------------------------------

    def view_registry(self, hide_state_registries: bool = False) -> None:
        """Print the setup as readable tables: summary, data locations, category codes."""
        print_registry(self, hide_state_registries)

    def __repr__(self) -> str:
        stats = ", ".join(f"{k}={v}" for k, v in self.summary_stats.items())
        held = "no AnnData" if self.adata is None else f"AnnData {self.adata_uuid}"
        return f"AnnDataManager(id={self.id}, {held}, {stats})"
