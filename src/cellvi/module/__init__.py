"""Probabilistic modules: pure torch, fed dicts of tensors, no AnnData."""

from cellvi.module._scanvae import SCANVAE
from cellvi.module._vae import VAE
from cellvi.module._vaec import VAEC

__all__ = ["SCANVAE", "VAE", "VAEC"]
