"""The contract every registered AnnData field follows."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import h5py
import numpy as np
import pandas as pd
from anndata import AnnData
from anndata.abc import CSCDataset, CSRDataset
from rich.table import Table
from scipy import sparse

from cellvi.data._constants import INTERNAL_PREFIX

#: What a field reads: arrays, sparse matrices, DataFrames (an obsm table) and, for a backed
#: AnnData, its on-disk matrix (an h5py dataset or an anndata sparse dataset).
FieldData = np.ndarray | sparse.spmatrix | sparse.sparray | pd.DataFrame | Any
#: Matrices of a backed AnnData, read from its file a block of rows at a time.
ON_DISK = (h5py.Dataset, CSRDataset, CSCDataset)


class BaseAnnDataField(ABC):
    """One piece of an AnnData that a model reads, under one registry key.

    A field knows where its data live (``attr_name`` / ``attr_key``), how to register them on
    the AnnData a model is set up with (``register_field``), how to apply that registration to
    new data so that codes and columns keep their meaning (``transfer_field``), how to check
    that data still fit (``validate_field``), and which summary statistics it adds to the
    model's ``summary_stats``.
    """

    #: Registry key under which the data reach a module (a ``REGISTRY_KEYS`` value).
    registry_key: str
    #: Attribute of AnnData holding the data: "X", "layers", "obs" or "obsm".
    attr_name: str
    #: Entries of the state registry that list names (categories, columns): the registry holds
    #: them as JSON lists, ``AnnDataManager.get_state_registry`` shows them as numpy arrays.
    array_entries: tuple[str, ...] = ()

    @property
    @abstractmethod
    def attr_key(self) -> str | None:
        """Key inside ``attr_name`` (None for ``adata.X``)."""

    @property
    def is_empty(self) -> bool:
        """Whether the field registers nothing (an optional field left unset)."""
        return False

    @abstractmethod
    def validate_field(self, adata: AnnData) -> None:
        """Check that ``adata`` holds valid data for this field; raise a clear error if not."""

    @abstractmethod
    def register_field(self, adata: AnnData) -> dict[str, Any]:
        """Register the field on ``adata`` and return its state registry (JSON-serialisable)."""

    @abstractmethod
    def transfer_field(
        self, state_registry: dict[str, Any], adata_target: AnnData, **kwargs: Any
    ) -> dict[str, Any]:
        """Register the field on ``adata_target`` following a source ``state_registry``."""

    def revalidate(self, adata: AnnData, state_registry: dict[str, Any]) -> None:
        """Check that ``adata`` still holds what was registered, and refresh what it wrote.

        Called before every read of a registered AnnData, which the user may have edited in
        place since. The default replays the registration from ``state_registry``, so codes
        follow the current values and anything unseen at registration is an error; fields
        whose replay would rescan all their values override it with a cheaper check.
        """
        self.transfer_field(state_registry, adata)

    @abstractmethod
    def get_summary_stats(self, state_registry: dict[str, Any]) -> dict[str, int]:
        """Summary statistics (e.g. ``n_batch``) this field contributes."""

    def view_state_registry(self, state_registry: dict[str, Any]) -> Table | None:
        """A table describing the state registry, or None when there is nothing to show."""
        return None

    def correct_layout(self, adata: AnnData) -> None:
        """Store the registered data in the layout minibatches read fastest (default: as is).

        Runs once every field is registered, so a failed registration never changes it.
        """
        return None

    def get_field_data(self, adata: AnnData) -> FieldData:
        """The registered data of this field on ``adata`` (obs fields as an (n, 1) array)."""
        if self.is_empty:
            raise ValueError(f"Field {self.registry_key!r} is empty: nothing is registered.")
        return read_attribute(adata, self.attr_name, self.attr_key)

    @property
    def data_registry(self) -> dict[str, str | None]:
        """Where the registered data live on the AnnData."""
        return {"attr_name": self.attr_name, "attr_key": self.attr_key}

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(registry_key={self.registry_key!r}, attr_key={self.attr_key!r})"


def internal_key(registry_key: str) -> str:
    """The obs/obsm column cellvi writes for a registry key (``_scvi_batch``)."""
    return f"{INTERNAL_PREFIX}{registry_key}"


def read_attribute(adata: AnnData, attr_name: str, attr_key: str | None) -> FieldData:
    """Read ``adata.<attr_name>[<attr_key>]``: an obs column as an (n, 1) array, else as stored.

    Matrices come as they are stored (dense, sparse, backed); obsm tables stay DataFrames, with
    their column names.
    """
    if attr_name == "X":
        return adata.X
    container = getattr(adata, attr_name)
    if attr_key not in container:
        raise KeyError(f"{attr_key!r} is not in adata.{attr_name}.")
    value = container[attr_key]
    if isinstance(value, pd.Series):
        return value.to_numpy().reshape(-1, 1)
    return value


def require_key(adata: AnnData, attr_name: str, key: str, what: str) -> None:
    """Raise a KeyError naming the missing key, what it was for, and the keys that exist."""
    container = getattr(adata, attr_name)
    if key not in container:
        present = list(container.keys())
        shown = ", ".join(map(repr, present[:10])) + (" ..." if len(present) > 10 else "")
        raise KeyError(
            f"{what}: {key!r} is not a key of adata.{attr_name} (present: {shown or 'none'}). "
            f"Check the spelling or add it to adata.{attr_name} before setup_anndata."
        )


def store_c_contiguous(adata: AnnData, attr_name: str, attr_key: str | None) -> None:
    """Rewrite a dense matrix (or obsm table) stored in Fortran order in C order.

    Minibatches take rows, which a C-ordered array holds contiguously. Values, index and
    column names are kept; sparse and on-disk matrices, and tables of mixed dtypes, are left
    alone.
    """
    data = read_attribute(adata, attr_name, attr_key)
    if isinstance(data, np.ndarray) and not data.flags.c_contiguous:
        fixed: Any = np.ascontiguousarray(data)
    elif (
        isinstance(data, pd.DataFrame)
        and data.dtypes.nunique() == 1  # one dtype: the values are one array
        and not data.to_numpy().flags.c_contiguous
    ):
        fixed = pd.DataFrame(
            np.ascontiguousarray(data.to_numpy()), index=data.index, columns=data.columns
        )
    else:
        return
    if attr_name == "X":
        adata.X = fixed
    else:
        getattr(adata, attr_name)[attr_key] = fixed


class KeyedField(BaseAnnDataField):
    """A field at one key of ``attr_name`` (an obs column, an obsm or uns entry).

    An optional field (``required=False``) may be left unset: its key is None and it
    registers nothing.
    """

    #: How error messages name the key ("obs column", "obsm key", ...).
    key_description: str

    def __init__(self, registry_key: str, attr_key: str | None, required: bool = True) -> None:
        if required and attr_key is None:
            raise ValueError(
                f"{registry_key!r} is required: give the {self.key_description} that holds it."
            )
        self.registry_key = registry_key
        self.required = required
        self._attr_key = attr_key

    @property
    def attr_key(self) -> str | None:
        return self._attr_key

    @property
    def is_empty(self) -> bool:
        return self._attr_key is None
