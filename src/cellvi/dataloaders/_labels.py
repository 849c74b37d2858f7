"""Which registered cells carry a label, for semi-supervised splits and loaders."""

from __future__ import annotations

import numpy as np

from cellvi._constants import REGISTRY_KEYS
from cellvi.data import AnnDataManager


def label_codes(adata_manager: AnnDataManager) -> tuple[np.ndarray, int | None]:
    """Every cell's label code, and the code of the unlabeled category.

    The labels must be registered with an unlabeled category (as
    :class:`~cellvi.data.fields.LabelsWithUnlabeledObsField` does: its state registry holds
    ``unlabeled_category``). Categories are compared by their string form, as registered.

    Returns
    -------
    ``(codes, unlabeled_code)``: a 1-D int64 array with one code per cell, and the code of the
    unlabeled category, ``None`` when it is not among the registered categories (every cell is
    then labeled).
    """
    state = adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY)
    if "unlabeled_category" not in state:
        raise ValueError(
            "Semi-supervised loading needs labels registered with an unlabeled category "
            "(setup_anndata(..., labels_key=..., unlabeled_category=...), i.e. a "
            "LabelsWithUnlabeledObsField); these labels have none."
        )
    codes = np.asarray(adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY)).ravel()
    mapping = [str(category) for category in state["categorical_mapping"]]
    unlabeled = str(state["unlabeled_category"])
    unlabeled_code = mapping.index(unlabeled) if unlabeled in mapping else None
    return codes.astype(np.int64, copy=False), unlabeled_code


def labeled_cells(adata_manager: AnnDataManager) -> np.ndarray:
    """Boolean mask of the cells whose label is not the unlabeled category."""
    codes, unlabeled_code = label_codes(adata_manager)
    return codes != unlabeled_code if unlabeled_code is not None else np.ones(codes.size, bool)
