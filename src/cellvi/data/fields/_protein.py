"""Protein fields: a protein matrix plus, per batch, which proteins were measured at all."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from anndata import AnnData
from scipy import sparse

from cellvi.data.fields._base import BaseAnnDataField, read_attribute
from cellvi.data.fields._layer import LayerField
from cellvi.data.fields._obsm import ObsmField

logger = logging.getLogger("cellvi")


class ProteinFieldMixin:
    """Add the protein batch mask to a matrix field's registration.

    A protein panel may differ between batches: a protein with only zeros throughout a batch
    was not measured there, and TOTALVI leaves it out of that batch's likelihood. When some
    batch misses a protein, the state registry holds ``protein_batch_mask``: for each batch
    code (as a string), whether each protein was measured.

    Parameters
    ----------
    *args, **kwargs
        As for the matrix field.
    use_batch_mask
        Compute the mask; needs ``batch_field``.
    batch_field
        The (registered) field of the batch codes.
    """

    PROTEIN_BATCH_MASK = "protein_batch_mask"
    array_entries = ("column_names", PROTEIN_BATCH_MASK)

    def __init__(
        self,
        *args: Any,
        use_batch_mask: bool = True,
        batch_field: BaseAnnDataField | None = None,
        **kwargs: Any,
    ) -> None:
        if use_batch_mask and batch_field is None:
            raise ValueError(
                "use_batch_mask=True needs the batch field (batch_field=...), whose codes say "
                "which cells form each batch."
            )
        self.use_batch_mask = use_batch_mask
        self.batch_field = batch_field
        super().__init__(*args, **kwargs)

    def _batch_mask(self, adata: AnnData) -> dict[str, list[bool]] | None:
        """Per batch code, which proteins have a nonzero count; None when all are measured."""
        data = self.get_field_data(adata)
        values = data if sparse.issparse(data) else np.asarray(data)
        # Read where the batch field stores its codes, on the data this field reads (a MuData
        # modality holds a copy of them, see copy_batch_codes_to_modality).
        location = self.batch_field.data_registry
        codes = np.asarray(
            read_attribute(adata, location["attr_name"], location["attr_key"])
        ).ravel()
        mask = {}
        for code in np.unique(codes):
            totals = values[codes == code].sum(axis=0)
            mask[str(code)] = (np.asarray(totals).ravel() != 0).tolist()
        if all(all(measured) for measured in mask.values()):
            return None
        logger.info("Some batches lack some proteins (all zero there): they are masked.")
        return mask

    def _with_mask(self, state: dict[str, Any], adata: AnnData) -> dict[str, Any]:
        if self.use_batch_mask and not self.is_empty:
            mask = self._batch_mask(adata)
            if mask is not None:
                state[self.PROTEIN_BATCH_MASK] = mask
        return state

    def register_field(self, adata: AnnData) -> dict[str, Any]:
        # The matrix fields transfer by registering the new data after their checks, so a
        # transfer computes the mask of the new data's batches here too.
        return self._with_mask(super().register_field(adata), adata)


class ProteinObsmField(ProteinFieldMixin, ObsmField):
    """Protein counts in ``adata.obsm`` (see :class:`ObsmField`), with the batch mask.

    Takes the parameters of :class:`ObsmField` and of :class:`ProteinFieldMixin`.
    """


class ProteinLayerField(ProteinFieldMixin, LayerField):
    """Protein counts in ``adata.X`` or a layer (see :class:`LayerField`), with the batch mask.

    Takes the parameters of :class:`LayerField` and of :class:`ProteinFieldMixin`. Its summary
    statistic is ``n_<registry_key>`` (``n_proteins``).
    """
