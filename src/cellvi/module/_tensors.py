"""What modules read from a minibatch the same way: dense counts, the generative inputs."""

from __future__ import annotations

from typing import Any

import torch

from cellvi._constants import REGISTRY_KEYS
from cellvi.module._constants import MODULE_KEYS


def dense_counts(counts: torch.Tensor) -> torch.Tensor:
    """Counts as a strided tensor (loaders may hand over sparse minibatches)."""
    return counts if counts.layout == torch.strided else counts.to_dense()


def latent_and_codes(
    tensors: dict[str, torch.Tensor], inference_outputs: dict[str, Any]
) -> dict[str, Any]:
    """The generative inputs every count VAE shares: ``z``, the library, batch and label codes."""
    return {
        MODULE_KEYS.Z_KEY: inference_outputs[MODULE_KEYS.Z_KEY],
        MODULE_KEYS.LIBRARY_KEY: inference_outputs[MODULE_KEYS.LIBRARY_KEY],
        MODULE_KEYS.BATCH_INDEX_KEY: tensors.get(REGISTRY_KEYS.BATCH_KEY),
        MODULE_KEYS.Y_KEY: tensors.get(REGISTRY_KEYS.LABELS_KEY),
    }
