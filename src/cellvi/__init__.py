"""cellvi: deep probabilistic analysis of single-cell omics."""

from cellvi import data, dataloaders, distributions, model, module, nn, train, utils
from cellvi._constants import REGISTRY_KEYS
from cellvi._settings import settings
from cellvi._version import __version__

__all__ = [
    "REGISTRY_KEYS",
    "__version__",
    "data",
    "dataloaders",
    "distributions",
    "model",
    "module",
    "nn",
    "settings",
    "train",
    "utils",
]
