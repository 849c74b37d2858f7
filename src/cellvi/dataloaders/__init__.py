"""Minibatches of registered AnnData fields: dataset, data loader, train/validation/test split."""

from cellvi.data import AnnTorchDataset
from cellvi.dataloaders._ann_dataloader import AnnDataLoader
from cellvi.dataloaders._data_splitter import DataSplitter
from cellvi.dataloaders._sampler import BatchIndexSampler

__all__ = ["AnnDataLoader", "AnnTorchDataset", "BatchIndexSampler", "DataSplitter"]
