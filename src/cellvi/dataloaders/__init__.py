"""Minibatches of registered AnnData fields: dataset, data loaders, train/validation/test split."""

from cellvi.data import AnnTorchDataset
from cellvi.dataloaders._ann_dataloader import AnnDataLoader
from cellvi.dataloaders._anncollection import CollectionAdapter
from cellvi.dataloaders._concat_dataloader import ConcatDataLoader
from cellvi.dataloaders._data_splitter import DataSplitter
from cellvi.dataloaders._device_backed_splitter import DeviceBackedDataSplitter
from cellvi.dataloaders._distributed_sampler import BatchDistributedSampler
from cellvi.dataloaders._sampler import BatchIndexSampler
from cellvi.dataloaders._semi_dataloader import SemiSupervisedDataLoader
from cellvi.dataloaders._semi_splitter import SemiSupervisedDataSplitter
from cellvi.dataloaders._streaming import StreamingConfig, StreamingLoader

__all__ = [
    "AnnDataLoader",
    "AnnTorchDataset",
    "BatchDistributedSampler",
    "BatchIndexSampler",
    "CollectionAdapter",
    "ConcatDataLoader",
    "DataSplitter",
    "DeviceBackedDataSplitter",
    "SemiSupervisedDataLoader",
    "SemiSupervisedDataSplitter",
    "StreamingConfig",
    "StreamingLoader",
]
