"""Dense embedding of a categorical covariate such as the batch."""

from __future__ import annotations

import torch

from ._codes import as_code_vector


class Embedding(torch.nn.Embedding):
    """Learnable dense vectors for category codes, e.g. ``batch_representation="embedding"``.

    Takes the same arguments as :class:`torch.nn.Embedding`; only ``forward`` differs,
    accepting codes of shape ``(n,)`` or ``(n, 1)`` stored as integers or floats.
    """

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
        return super().forward(as_code_vector(input))
