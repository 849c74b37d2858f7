"""Data registration: registry keys, typed fields, ``AnnDataManager`` and built-in datasets."""

from cellvi._constants import REGISTRY_KEYS
from cellvi.data import fields
from cellvi.data._anntorchdataset import AnnTorchDataset
from cellvi.data._manager import AnnDataManager
from cellvi.data._simulate import simulate
from cellvi.data._synthetic import synthetic_iid

__all__ = [
    "REGISTRY_KEYS",
    "AnnDataManager",
    "AnnTorchDataset",
    "fields",
    "simulate",
    "synthetic_iid",
]
