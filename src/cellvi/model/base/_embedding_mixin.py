"""``EmbeddingMixin``: queries of the embeddings a model's module learnt."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from anndata import AnnData

from cellvi._constants import REGISTRY_KEYS
from cellvi.model.base._queries import posterior_query
from cellvi.module.base import EmbeddingModuleMixin


class EmbeddingMixin:
    """Add ``get_batch_representation`` to a model whose module holds a batch embedding."""

    @posterior_query(untrained="warn")
    @torch.inference_mode()
    def get_batch_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """The learnt embedding of each cell's batch, ``(n_cells, embedding_dim)``.

        Raises a ``KeyError`` when the module holds no batch embedding (e.g. one-hot
        batches), and a ``ValueError`` when it cannot hold embeddings at all.
        """
        if not isinstance(self.module, EmbeddingModuleMixin):
            raise ValueError(f"{type(self.module).__name__} holds no embeddings.")
        key = REGISTRY_KEYS.BATCH_KEY
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        rows = [self.module.compute_embedding(key, tensors[key]).cpu() for tensors in loader]
        return torch.cat(rows).numpy()
