"""``AnnDataManager``: the registration of one AnnData for one model setup."""

from __future__ import annotations

import copy
import logging
import weakref
from collections.abc import Sequence
from typing import Any
from uuid import uuid4

from anndata import AnnData
from rich.console import Console
from rich.table import Table

from cellvi._version import __version__
from cellvi.data._anndata_checks import check_anndata
from cellvi.data._constants import MANAGER_UUID_KEY, SETUP_UUID_KEY
from cellvi.data._identity import separate_copy, stamp_identity
from cellvi.data._snapshot import RegistrationSnapshot
from cellvi.data.fields import BaseAnnDataField
from cellvi.data.fields._base import FieldData, read_attribute

logger = logging.getLogger("cellvi")


class SummaryStats(dict):
    """Summary statistics readable as ``stats["n_batch"]`` or ``stats.n_batch``."""

    def __getattr__(self, name: str) -> int:
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(f"No summary statistic {name!r}; known: {list(self)}") from error


class AnnDataManager:
    """Register the fields a model reads on an AnnData, and keep that registration valid.

    One manager holds one AnnData. ``register_fields`` writes codes for categorical fields,
    stamps ``adata.uns["_scvi_uuid"]`` (the AnnData's identity, kept when present) and
    ``adata.uns["_scvi_manager_uuid"]`` (which manager wrote the codes last), and records a
    JSON-serialisable registry. ``transfer_fields`` applies the same setup to new data with the
    same category codes; ``validate`` replays the registration when another manager has
    written over this AnnData since.

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
        self._adata_ref: weakref.ref[AnnData] | None = None
        self.fields = list(fields or [])
        keys = [field.registry_key for field in self.fields]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise ValueError(
                f"Several fields use the registry keys {repeated}; each needs its own."
            )
        setup_method_args = setup_method_args or {}
        self._registry: dict[str, Any] = {
            "cellvi_version": __version__,
            "model_name": setup_method_args.get("model_name"),
            "setup_method_name": setup_method_args.get("setup_method_name", "setup_anndata"),
            "setup_args": copy.deepcopy(setup_method_args.get("setup_args", {})),
            "field_registries": {},
        }
        self._transfer_kwargs: dict[str, Any] = {}

    # Registration --------------------------------------------------------------------------

    def register_fields(
        self,
        adata: AnnData,
        source_registry: dict[str, Any] | None = None,
        **transfer_kwargs: Any,
    ) -> None:
        """Register every field on ``adata``; on any error ``adata`` is left as it was.

        Parameters
        ----------
        adata
            The AnnData to register.
        source_registry
            A registry to follow (transfer: same genes, same category codes); None registers
            from scratch.
        **transfer_kwargs
            Passed to each field's ``transfer_field`` (e.g. ``extend_categories=True``).
        """
        if self.adata is not None:
            raise RuntimeError(
                "This manager already holds an AnnData; use transfer_fields(new_adata) for "
                "another one."
            )
        check_anndata(adata)
        self._registry["field_registries"] = self._write_fields(
            adata, source_registry, transfer_kwargs
        )
        self._adata_ref = weakref.ref(adata)
        self._transfer_kwargs = dict(transfer_kwargs)
        stamp_identity(adata)

    def _write_fields(
        self, adata: AnnData, source_registry: dict[str, Any] | None, transfer_kwargs: dict
    ) -> dict[str, Any]:
        snapshot = RegistrationSnapshot.take(adata)
        registries = {}
        try:
            for field in self.fields:
                # A field the source setup did not have (an older version's) is registered
                # anew.
                source = (
                    (source_registry or {}).get("field_registries", {}).get(field.registry_key)
                )
                if source is None:
                    state = field.register_field(adata)
                else:
                    state = field.transfer_field(
                        source["state_registry"], adata, **transfer_kwargs
                    )
                registries[field.registry_key] = {
                    "data_registry": {} if field.is_empty else field.data_registry,
                    # A copy, so the registry never shares lists with the field objects.
                    "state_registry": copy.deepcopy(state),
                    "summary_stats": field.get_summary_stats(state),
                }
        except Exception:
            snapshot.restore(adata)
            raise
        adata.uns[MANAGER_UUID_KEY] = self.id
        return registries

    def transfer_fields(self, adata_target: AnnData, **kwargs: Any) -> AnnDataManager:
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
        new_manager = AnnDataManager(
            fields=self.fields,
            setup_method_args={
                "model_name": self._registry["model_name"],
                "setup_method_name": self._registry["setup_method_name"],
                "setup_args": self._registry["setup_args"],
            },
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
        if adata.uns.get(MANAGER_UUID_KEY) != self.id:
            logger.info("Replaying the registration of this AnnData for manager %s.", self.id)
        snapshot = RegistrationSnapshot.take(adata)
        try:
            for field in self.fields:
                field.revalidate(adata, self.get_state_registry(field.registry_key))
        except Exception:
            snapshot.restore(adata)
            raise
        adata.uns[MANAGER_UUID_KEY] = self.id

    def _require_adata(self) -> AnnData:
        if self.adata is None:
            raise RuntimeError(
                "No AnnData is registered with this manager yet: call register_fields."
            )
        return self.adata

    # Reading -------------------------------------------------------------------------------

    @property
    def adata(self) -> AnnData | None:
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
        return self._require_adata().uns[SETUP_UUID_KEY]

    @property
    def data_registry(self) -> dict[str, dict[str, str | None]]:
        """Where each non-empty field's data live: ``{registry_key: {attr_name, attr_key}}``."""
        return {
            key: entry["data_registry"]
            for key, entry in self._registry["field_registries"].items()
            if entry["data_registry"]
        }

    @property
    def summary_stats(self) -> SummaryStats:
        """All fields' summary statistics (``n_cells``, ``n_vars``, ``n_batch``, ...)."""
        stats = SummaryStats()
        for entry in self._registry["field_registries"].values():
            stats.update(entry["summary_stats"])
        return stats

    def get_state_registry(self, registry_key: str) -> dict[str, Any]:
        """The state registry of one field (e.g. its categorical mapping)."""
        return self._field_registry(registry_key)["state_registry"]

    def get_from_registry(self, registry_key: str) -> FieldData:
        """The registered data of one field, read from the AnnData.

        Obs fields come as (n_cells, 1) arrays, joint obs fields as (n_cells, n_keys) arrays,
        layers as they are stored (dense or sparse).
        """
        location = self._field_registry(registry_key)["data_registry"]
        if not location:
            raise ValueError(f"Field {registry_key!r} is registered empty: it holds no data.")
        return read_attribute(self._require_adata(), location["attr_name"], location["attr_key"])

    def _field_registry(self, registry_key: str) -> dict[str, Any]:
        registries = self._registry["field_registries"]
        if registry_key not in registries:
            raise KeyError(f"{registry_key!r} is not registered; registered: {list(registries)}.")
        return registries[registry_key]

    # Display -------------------------------------------------------------------------------

    def view_registry(self, hide_state_registries: bool = False) -> None:
        """Print the setup as readable tables: summary, data locations, category codes."""
        console = Console()
        console.print(
            f"AnnData set up for {self._registry['model_name'] or 'a model'} with cellvi "
            f"{self._registry['cellvi_version']}; setup args: {self._registry['setup_args']}"
        )
        summary = Table(title="Summary statistics")
        summary.add_column("Statistic")
        summary.add_column("Value")
        for name, value in self.summary_stats.items():
            summary.add_row(name, str(value))
        console.print(summary)
        locations = Table(title="Data registry")
        locations.add_column("Registry key")
        locations.add_column("AnnData location")
        for key, location in self.data_registry.items():
            where = (
                "adata.X"
                if location["attr_name"] == "X"
                else (f"adata.{location['attr_name']}[{location['attr_key']!r}]")
            )
            locations.add_row(key, where)
        console.print(locations)
        if hide_state_registries:
            return
        for field in self.fields:
            table = field.view_state_registry(self.get_state_registry(field.registry_key))
            if table is not None:
                console.print(table)

    def __repr__(self) -> str:
        stats = ", ".join(f"{k}={v}" for k, v in self.summary_stats.items())
        held = "no AnnData" if self.adata is None else f"AnnData {self.adata_uuid}"
        return f"AnnDataManager(id={self.id}, {held}, {stats})"
