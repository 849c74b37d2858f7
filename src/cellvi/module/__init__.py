"""Probabilistic modules: pure torch, fed dicts of tensors, no AnnData."""

from cellvi.module._vae import VAE

__all__ = ["VAE"]
