"""``EmbeddingModuleMixin``: named embeddings of categorical covariates held by a module."""

from __future__ import annotations

from typing import Any

import torch

from cellvi.nn import Embedding

_PREFIX = "_embeddings_dict."


class EmbeddingModuleMixin:
    """Keep learnt embeddings (e.g. of the batch) in a module, by registry key.

    The embeddings live in ``module.embeddings_dict`` (a ``ModuleDict``), so their tensors are
    named ``_embeddings_dict.<key>.weight``, as in scvi-tools. Reference mapping extends them
    with :meth:`Embedding.extend <cellvi.nn.Embedding.extend>`.
    """

    @property
    def embeddings_dict(self) -> torch.nn.ModuleDict:
        """The module's embeddings, by registry key."""
        if "_embeddings_dict" not in self._modules:
            self._embeddings_dict = torch.nn.ModuleDict()
            # Files of cellvi 0.1 named the batch embedding ``batch_embedding``.
            self._register_load_state_dict_pre_hook(_rename_legacy_batch_embedding)
        return self._modules["_embeddings_dict"]

    def add_embedding(self, key: str, embedding: Embedding, overwrite: bool = False) -> None:
        """Hold ``embedding`` under ``key``; a ``KeyError`` if one is there (unless overwrite)."""
        if key in self.embeddings_dict and not overwrite:
            raise KeyError(f"An embedding {key!r} exists already; pass overwrite=True.")
        self.embeddings_dict[key] = embedding

    def remove_embedding(self, key: str) -> None:
        """Drop the embedding of ``key`` (a ``KeyError`` if there is none)."""
        if key not in self.embeddings_dict:
            raise KeyError(f"No embedding {key!r}; held: {list(self.embeddings_dict)}.")
        del self.embeddings_dict[key]

    def get_embedding(self, key: str) -> Embedding:
        """The embedding of ``key`` (a ``KeyError`` if there is none)."""
        if key not in self.embeddings_dict:
            raise KeyError(f"No embedding {key!r}; held: {list(self.embeddings_dict)}.")
        return self.embeddings_dict[key]

    def init_embedding(
        self, key: str, num_embeddings: int, embedding_dim: int = 5, **kwargs: Any
    ) -> None:
        """Create the embedding of ``key``: ``num_embeddings`` rows of ``embedding_dim``."""
        self.add_embedding(key, Embedding(num_embeddings, embedding_dim, **kwargs))

    @property
    def batch_embedding(self) -> Embedding | None:
        """The embedding of the batch, or None when the module has none."""
        return self.embeddings_dict["batch"] if "batch" in self.embeddings_dict else None

    def compute_embedding(self, key: str, indices: torch.Tensor) -> torch.Tensor:
        """The embedding of each code in ``indices`` (shape ``(n,)`` or ``(n, 1)``)."""
        return self.get_embedding(key)(indices)


def _rename_legacy_batch_embedding(state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    old = f"{prefix}batch_embedding.weight"
    if old in state_dict:
        state_dict[f"{prefix}{_PREFIX}batch.weight"] = state_dict.pop(old)
