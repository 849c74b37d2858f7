"""Dense embedding of a categorical covariate such as the batch, which can grow new rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ._codes import as_code_vector
from ._query_rows import RowSplit, TrainableRows, _FreezeFirstRows, merge_rows_into_tables
from ._query_rows import split_rows_of_tables as _split_rows_of_tables


class Embedding(torch.nn.Embedding):
    """Learnable dense vectors for category codes, e.g. ``batch_representation="embedding"``.

    Takes the same arguments as :class:`torch.nn.Embedding`. ``forward`` accepts codes of
    shape ``(n,)`` or ``(n, 1)`` stored as integers or floats; :meth:`extend` adds rows for new
    categories (reference mapping); :meth:`freeze_rows` freezes the rows of a reference while
    the others train; and a state dict with more rows than the embedding was built with
    resizes it, so an extended embedding loads into a freshly built one.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_state_dict_post_hook(_merge_rows)
        self.register_load_state_dict_pre_hook(_split_rows)

    def freeze_rows(self, rows: int | Sequence[int]) -> None:
        """Freeze some rows exactly (an ``int``: the first ``rows``); the others stay trainable.

        Unlike ``extend(..., freeze_prev=True)``, whose gradient mask leaves the rows to the
        optimizer's weight decay, the frozen rows here keep their exact values however the
        embedding is trained (see :mod:`cellvi.nn._query_rows`). The state dict still holds
        one ``weight`` of every row. Freezing every row freezes the weight.
        """
        self._merge_query_rows()
        frozen = set(range(min(rows, self.num_embeddings)) if isinstance(rows, int) else rows)
        if len(frozen) >= self.num_embeddings:
            self.weight.requires_grad_(False)
        elif frozen:
            self.query_rows = TrainableRows(self.weight, sorted(frozen))

    def _merge_query_rows(self) -> None:
        """Undo :meth:`freeze_rows`: one trainable weight again, holding every row."""
        rows = self._modules.pop("query_rows", None)
        if rows is not None:
            with torch.no_grad():
                self.weight += rows.delta
        self.weight.requires_grad_(True)

    def _row_splits(self) -> list[RowSplit]:
        rows = self._modules.get("query_rows")
        return [] if rows is None else [("weight", "query_rows", rows)]

    @classmethod
    def extend(
        cls, embedding: Embedding, init: int | list[int], freeze_prev: bool = True
    ) -> Embedding:
        """A new embedding with the rows of ``embedding`` followed by new ones.

        Parameters
        ----------
        embedding
            The embedding to extend; it is left unchanged.
        init
            An ``int``: that many new rows drawn from a standard normal (as
            :class:`torch.nn.Embedding` initialises its rows). A ``list[int]``: one new row per
            entry, a copy of that existing row.
        freeze_prev
            Zero the gradient of the original rows, so training changes only the new ones.

        Returns
        -------
        Embedding
            ``embedding.num_embeddings + n_new`` rows of the same width and options.
        """
        old = embedding.weight.detach()
        if isinstance(init, bool) or not isinstance(init, int | list):
            raise TypeError(f"init must be an int or a list of row indices, got {init!r}.")
        if isinstance(init, int):
            if init <= 0:
                raise ValueError(f"init must be a number of new rows >= 1, got {init}.")
            new_rows = torch.randn(init, old.shape[1], dtype=old.dtype, device=old.device)
        else:
            new_rows = old[init].clone()
        extended = cls(
            num_embeddings=old.shape[0] + new_rows.shape[0],
            embedding_dim=old.shape[1],
            _weight=torch.cat([old.clone(), new_rows]),
            padding_idx=embedding.padding_idx,
            max_norm=embedding.max_norm,
            norm_type=embedding.norm_type,
            scale_grad_by_freq=embedding.scale_grad_by_freq,
            sparse=embedding.sparse,
        )
        if freeze_prev:
            extended.weight.register_hook(_FreezeFirstRows(embedding.num_embeddings))
        return extended

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # An extended embedding has more rows than the arguments it is rebuilt with say.
        weight = state_dict.get(f"{prefix}weight")
        if weight is not None and weight.shape != self.weight.shape:
            self.weight = torch.nn.Parameter(torch.empty_like(weight, device=self.weight.device))
            self.num_embeddings, self.embedding_dim = weight.shape
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Look up the embedding of each code.

        Parameters
        ----------
        input
            Category codes of shape ``(n,)`` or ``(n, 1)``.

        Returns
        -------
        torch.Tensor
            Embeddings of shape ``(n, embedding_dim)``.
        """
        codes = as_code_vector(input)
        rows = self._modules.get("query_rows")
        if rows is None:
            return super().forward(codes)
        return super().forward(codes) + rows(codes)


def _merge_rows(module: Embedding, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    merge_rows_into_tables(module._row_splits(), state_dict, prefix)


def _split_rows(module: Embedding, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    _split_rows_of_tables(module._row_splits(), state_dict, prefix)
