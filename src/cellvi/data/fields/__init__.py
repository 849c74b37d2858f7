"""Typed AnnData fields: where each piece of data a model reads lives, and how it is checked."""

from cellvi.data.fields._base import BaseAnnDataField
from cellvi.data.fields._joint_obs import CategoricalJointObsField, NumericalJointObsField
from cellvi.data.fields._labels_with_unlabeled import LabelsWithUnlabeledObsField
from cellvi.data.fields._layer import LayerField
from cellvi.data.fields._mudata import (
    BaseMuDataWrapperClass,
    MuDataCategoricalJointObsField,
    MuDataCategoricalObsField,
    MuDataLabelsWithUnlabeledObsField,
    MuDataLayerField,
    MuDataNumericalJointObsField,
    MuDataNumericalObsField,
    MuDataObsmField,
    MuDataProteinLayerField,
    MuDataWrapper,
)
from cellvi.data.fields._obs import CategoricalObsField, NumericalObsField
from cellvi.data.fields._obsm import ObsmField
from cellvi.data.fields._protein import ProteinLayerField, ProteinObsmField
from cellvi.data.fields._uns import StringUnsField

__all__ = [
    "BaseAnnDataField",
    "BaseMuDataWrapperClass",
    "CategoricalJointObsField",
    "CategoricalObsField",
    "LabelsWithUnlabeledObsField",
    "LayerField",
    "MuDataCategoricalJointObsField",
    "MuDataCategoricalObsField",
    "MuDataLabelsWithUnlabeledObsField",
    "MuDataLayerField",
    "MuDataNumericalJointObsField",
    "MuDataNumericalObsField",
    "MuDataObsmField",
    "MuDataProteinLayerField",
    "MuDataWrapper",
    "NumericalJointObsField",
    "NumericalObsField",
    "ObsmField",
    "ProteinLayerField",
    "ProteinObsmField",
    "StringUnsField",
]
