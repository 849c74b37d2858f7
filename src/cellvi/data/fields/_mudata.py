"""MuData fields: any AnnData field, applied to one modality of a MuData."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rich.table import Table

from cellvi.data._mudata import AnnOrMuData, get_modality, is_mudata
from cellvi.data.fields._base import BaseAnnDataField, FieldData
from cellvi.data.fields._joint_obs import CategoricalJointObsField, NumericalJointObsField
from cellvi.data.fields._labels_with_unlabeled import LabelsWithUnlabeledObsField
from cellvi.data.fields._layer import LayerField
from cellvi.data.fields._obs import CategoricalObsField, NumericalObsField
from cellvi.data.fields._obsm import ObsmField
from cellvi.data.fields._protein import ProteinLayerField

Preregister = Callable[["BaseMuDataWrapperClass", AnnOrMuData], None]


class BaseMuDataWrapperClass(BaseAnnDataField):
    """A field of one modality of a MuData, or of the MuData's own obs (``mod_key=None``).

    Subclasses made by :func:`MuDataWrapper` name the AnnData field they wrap; the wrapper
    builds it from the same arguments and runs it on ``mdata.mod[mod_key]``.

    Parameters
    ----------
    *args, **kwargs
        The wrapped field's parameters.
    mod_key
        Modality to read; None reads the MuData itself (e.g. a batch column of ``mdata.obs``).
    mod_required
        Refuse ``mod_key=None`` (for data that only a modality holds, such as counts).
    """

    adata_field_cls: ClassVar[type[BaseAnnDataField]]
    #: Runs before each registration, transfer and check, with the whole MuData.
    preregister_fn: ClassVar[Preregister | None] = None

    def __init__(
        self, *args: Any, mod_key: str | None = None, mod_required: bool = False, **kwargs: Any
    ) -> None:
        if mod_required and mod_key is None:
            raise ValueError(f"{type(self).__name__} reads a modality: give its mod_key.")
        self.mod_key = mod_key
        self.adata_field = self.adata_field_cls(*args, **kwargs)

    @property
    def registry_key(self) -> str:
        return self.adata_field.registry_key

    @property
    def attr_name(self) -> str:
        return self.adata_field.attr_name

    @property
    def attr_key(self) -> str | None:
        return self.adata_field.attr_key

    @property
    def is_empty(self) -> bool:
        return self.adata_field.is_empty

    @property
    def array_entries(self) -> tuple[str, ...]:
        return self.adata_field.array_entries

    @property
    def data_registry(self) -> dict[str, str | None]:
        return {**self.adata_field.data_registry, "mod_key": self.mod_key}

    def get_modality(self, mdata: AnnOrMuData) -> AnnOrMuData:
        """The modality this field reads (the MuData itself for ``mod_key=None``)."""
        if not is_mudata(mdata):
            raise ValueError(
                f"{type(self).__name__} reads a MuData, got a {type(mdata).__name__}; use "
                f"{self.adata_field_cls.__name__} for an AnnData."
            )
        return get_modality(mdata, self.mod_key)

    def preregister(self, mdata: AnnOrMuData) -> None:
        """Prepare the modality from the whole MuData (see ``preregister_fn``)."""
        if self.preregister_fn is not None:
            type(self).preregister_fn(self, mdata)

    def validate_field(self, mdata: AnnOrMuData) -> None:
        self.adata_field.validate_field(self.get_modality(mdata))

    def register_field(self, mdata: AnnOrMuData) -> dict[str, Any]:
        modality = self.get_modality(mdata)
        self.preregister(mdata)
        return self.adata_field.register_field(modality)

    def transfer_field(
        self, state_registry: dict[str, Any], mdata_target: AnnOrMuData, **kwargs: Any
    ) -> dict[str, Any]:
        modality = self.get_modality(mdata_target)
        self.preregister(mdata_target)
        return self.adata_field.transfer_field(state_registry, modality, **kwargs)

    def revalidate(self, mdata: AnnOrMuData, state_registry: dict[str, Any]) -> None:
        modality = self.get_modality(mdata)
        self.preregister(mdata)
        self.adata_field.revalidate(modality, state_registry)

    def correct_layout(self, mdata: AnnOrMuData) -> None:
        self.adata_field.correct_layout(self.get_modality(mdata))

    def get_summary_stats(self, state_registry: dict[str, Any]) -> dict[str, int]:
        return self.adata_field.get_summary_stats(state_registry)

    def view_state_registry(self, state_registry: dict[str, Any]) -> Table | None:
        return self.adata_field.view_state_registry(state_registry)

    def get_field_data(self, mdata: AnnOrMuData) -> FieldData:
        return self.adata_field.get_field_data(self.get_modality(mdata))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mod_key={self.mod_key!r}, {self.adata_field!r})"


def MuDataWrapper(  # scvi-tools' name for this class factory
    adata_field_cls: type[BaseAnnDataField], preregister_fn: Preregister | None = None
) -> type[BaseMuDataWrapperClass]:
    """Make the MuData version of an AnnData field class (``MuData<Name>``).

    Parameters
    ----------
    adata_field_cls
        The AnnData field class to wrap.
    preregister_fn
        ``fn(field, mdata)``, run before each registration, transfer and check; it may copy
        data between modalities (see :data:`MuDataProteinLayerField`).
    """
    if not isinstance(adata_field_cls, type):
        raise ValueError(f"Expected a field class, got the instance {adata_field_cls!r}.")
    name = f"MuData{adata_field_cls.__name__}"
    return type(
        name,
        (BaseMuDataWrapperClass,),
        {
            "adata_field_cls": adata_field_cls,
            "preregister_fn": preregister_fn,
            "__module__": __name__,
            "__qualname__": name,
            "__doc__": f"{adata_field_cls.__name__} applied to one modality of a MuData "
            "(see BaseMuDataWrapperClass).",
        },
    )


def copy_batch_codes_to_modality(field: BaseMuDataWrapperClass, mdata: AnnOrMuData) -> None:
    """Give a protein modality the MuData's batch codes, for its batch mask.

    The protein field's ``batch_field`` reads the MuData (usually ``mdata.obs``); its codes are
    copied to the modality's obs under the same key, where the protein field reads them.
    """
    protein = field.adata_field
    if protein.use_batch_mask:
        codes = protein.batch_field.get_field_data(mdata)
        field.get_modality(mdata).obs[protein.batch_field.attr_key] = codes.ravel()


MuDataLayerField = MuDataWrapper(LayerField)
MuDataObsmField = MuDataWrapper(ObsmField)
MuDataCategoricalObsField = MuDataWrapper(CategoricalObsField)
MuDataNumericalObsField = MuDataWrapper(NumericalObsField)
MuDataCategoricalJointObsField = MuDataWrapper(CategoricalJointObsField)
MuDataNumericalJointObsField = MuDataWrapper(NumericalJointObsField)
MuDataLabelsWithUnlabeledObsField = MuDataWrapper(LabelsWithUnlabeledObsField)
MuDataProteinLayerField = MuDataWrapper(
    ProteinLayerField, preregister_fn=copy_batch_codes_to_modality
)
