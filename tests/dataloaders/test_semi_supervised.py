"""Semi-supervised splits and loaders: labeled cells in every split, labeled minibatches."""

from __future__ import annotations

from collections.abc import Iterator

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from anndata import AnnData

import cellvi
from cellvi.data import REGISTRY_KEYS, AnnDataManager
from cellvi.data.fields import (
    CategoricalObsField,
    LabelsWithUnlabeledObsField,
    LayerField,
    NumericalJointObsField,
)
from cellvi.dataloaders import (
    AnnDataLoader,
    ConcatDataLoader,
    SemiSupervisedDataLoader,
    SemiSupervisedDataSplitter,
)
from cellvi.dataloaders._resident_loader import ResidentLoader

from .test_lightning_integration import fit

X, LABELS, IDS = REGISTRY_KEYS.X_KEY, REGISTRY_KEYS.LABELS_KEY, REGISTRY_KEYS.CONT_COVS_KEY
UNLABELED = "label_0"

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*")


def setup(adata: AnnData, unlabeled: str = UNLABELED) -> AnnDataManager:
    """Counts, batch, labels with an unlabeled category, and each cell's id as a covariate."""
    adata.obs["cell_id"] = np.arange(adata.n_obs, dtype=np.float32)
    manager = AnnDataManager(
        fields=[
            LayerField(X, None),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, "batch"),
            LabelsWithUnlabeledObsField(LABELS, "labels", unlabeled),
            NumericalJointObsField(IDS, ["cell_id"]),
        ]
    )
    manager.register_fields(adata)
    return manager


@pytest.fixture
def adata() -> AnnData:
    return cellvi.data.synthetic_iid(batch_size=100, n_batches=2, n_labels=3, seed=0)


@pytest.fixture
def manager(adata) -> Iterator[AnnDataManager]:
    yield setup(adata)


def ids(batch: dict[str, torch.Tensor]) -> np.ndarray:
    return batch[IDS][:, 0].cpu().numpy().astype(np.int64)


def labeled_mask(adata: AnnData) -> np.ndarray:
    return (adata.obs["labels"] != UNLABELED).to_numpy()


def test_each_group_is_split_by_the_sizes_labeled_first(adata, manager, restore_seed):
    cellvi.settings.seed = 4
    splitter = SemiSupervisedDataSplitter(
        manager, train_size=0.7, validation_size=0.2, batch_size=500
    )
    labeled = labeled_mask(adata)
    for group, first in ((np.flatnonzero(labeled), 0), (np.flatnonzero(~labeled), 1)):
        n_train, n_val = int(np.ceil(0.7 * group.size)), int(np.floor(group.size * 0.2))
        order = group[np.random.RandomState(4).permutation(group.size)]
        n_labeled = np.ceil(0.7 * labeled.sum()).astype(int)
        part = slice(0, n_labeled) if first == 0 else slice(n_labeled, None)
        np.testing.assert_array_equal(splitter.train_idx[part], order[n_val : n_val + n_train])
    for split in (splitter.train_idx, splitter.val_idx, splitter.test_idx):
        flags = labeled[split]
        assert flags.any() and not flags.all()
        assert np.all(np.diff(flags.astype(int)) <= 0)  # labeled cells come first
    everything = np.concatenate([splitter.train_idx, splitter.val_idx, splitter.test_idx])
    np.testing.assert_array_equal(np.sort(everything), np.arange(adata.n_obs))


def test_external_indexing_keeps_the_given_cells_labeled_first(adata, manager):
    order = np.random.default_rng(1).permutation(adata.n_obs)
    splitter = SemiSupervisedDataSplitter(manager, external_indexing=[order[:150], order[150:]])
    labeled = labeled_mask(adata)
    expected = np.concatenate(
        [np.sort(order[:150][labeled[order[:150]]]), np.sort(order[:150][~labeled[order[:150]]])]
    )
    np.testing.assert_array_equal(splitter.train_idx, expected)
    assert set(splitter.val_idx.tolist()) == set(order[150:].tolist())


def test_loaders_serve_a_minibatch_and_a_labeled_minibatch(adata, manager):
    # 161 training cells: minibatches of 30 leave no cell alone (32 would, and is refused).
    splitter = SemiSupervisedDataSplitter(
        manager, train_size=0.8, batch_size=30, device_resident=False
    )
    loader = splitter.train_dataloader()
    assert isinstance(loader, SemiSupervisedDataLoader)
    assert all(isinstance(dl, AnnDataLoader) for dl in loader.dataloaders)
    steps = list(loader)
    n_steps = -(-splitter.train_idx.size // 30)
    assert len(steps) == len(loader) == len(loader.dataloaders[0]) == n_steps
    labeled = labeled_mask(adata)
    train = set(splitter.train_idx.tolist())
    served = np.concatenate([ids(full) for full, _ in steps])
    np.testing.assert_array_equal(np.sort(served), np.sort(splitter.train_idx))
    for _, labeled_batch in steps:
        cells = ids(labeled_batch)
        assert labeled[cells].all() and set(cells.tolist()) <= train
        assert (labeled_batch[LABELS].numpy() != 2).all()  # the unlabeled code is the last one
    assert isinstance(splitter.val_dataloader(), SemiSupervisedDataLoader)


@pytest.mark.parametrize("device_resident", [False, True])
def test_n_samples_per_label_draws_anew_each_epoch(adata, manager, device_resident):
    splitter = SemiSupervisedDataSplitter(
        manager, n_samples_per_label=10, batch_size=64, device_resident=device_resident
    )
    splitter.setup()
    loader = splitter.train_dataloader()
    expected_cls = ResidentLoader if device_resident else AnnDataLoader
    assert all(isinstance(dl, expected_cls) for dl in loader.dataloaders)
    epochs = []
    for _ in range(3):
        drawn = set()
        for _, labeled_batch in loader:
            _, counts = np.unique(labeled_batch[LABELS].numpy(), return_counts=True)
            assert counts.tolist() == [10, 10]  # two labeled classes, 10 cells each
            drawn |= set(ids(labeled_batch).tolist())
        epochs.append(drawn)
    assert epochs[0] != epochs[1] != epochs[2]
    # The validation loader is not shuffled: its subsample stays the same.
    val = splitter.val_dataloader()
    assert [ids(b).tolist() for _, b in val] == [ids(b).tolist() for _, b in val]


def test_resample_labels_takes_effect_without_a_second_draw(manager):
    loader = SemiSupervisedDataLoader(manager, n_samples_per_label=5, shuffle=True)
    loader.resample_labels()
    chosen = loader.dataloaders[1]
    next(iter(loader))
    assert loader.dataloaders[1] is chosen  # the epoch keeps the callback's draw
    next(iter(loader))
    assert loader.dataloaders[1] is not chosen


def test_without_labeled_cells_the_loaders_are_plain(adata):
    adata.obs["labels"] = UNLABELED
    manager = setup(adata)
    splitter = SemiSupervisedDataSplitter(manager, batch_size=32, device_resident=False)
    assert isinstance(splitter.train_dataloader(), AnnDataLoader)


def test_what_the_splitter_refuses(adata, manager):
    with pytest.raises(ValueError, match="a custom datamodule"):
        SemiSupervisedDataSplitter(manager, datamodule=pl.LightningDataModule())
    plain = AnnDataManager(fields=[LayerField(X, None), CategoricalObsField(LABELS, "labels")])
    plain.register_fields(adata)
    with pytest.raises(ValueError, match="labels registered with an unlabeled category"):
        SemiSupervisedDataSplitter(plain)
    with pytest.raises(ValueError, match="n_samples_per_label must be an integer >= 1"):
        SemiSupervisedDataLoader(manager, n_samples_per_label=0)


def with_labeled(adata: AnnData, n_labeled: int) -> AnnDataManager:
    """``adata`` registered with its first ``n_labeled`` cells labeled, the others not."""
    adata.obs["labels"] = np.where(np.arange(adata.n_obs) < n_labeled, "label_1", UNLABELED)
    return setup(adata)


@pytest.mark.parametrize("device_resident", [False, True])
def test_a_lone_last_labeled_cell_is_left_out_of_training_only(adata, device_resident):
    # 200 training cells (128 + 72); 129 labeled ones would end on a minibatch of one cell.
    manager = with_labeled(adata, 129)
    splitter = SemiSupervisedDataSplitter(
        manager, train_size=1.0, batch_size=128, device_resident=device_resident
    )
    splitter.setup()
    train = splitter.train_dataloader()
    assert splitter.train_idx.size == 200 and len(train) == 2
    seen = set()
    for _ in range(8):
        labeled_sizes = [len(ids(labeled)) for _, labeled in train]
        assert labeled_sizes == [128, 128]  # the cycled labeled stream never serves one cell
        seen |= {cell for _, labeled in train for cell in ids(labeled).tolist()}
    assert seen == set(range(129))  # another cell is left out each epoch
    # Loaders that do not shuffle (validation, queries) serve every labeled cell.
    steady = SemiSupervisedDataLoader(manager, indices=np.arange(200), batch_size=128)
    assert [len(ids(labeled)) for labeled in steady.dataloaders[1]] == [128, 1]


def test_the_whole_training_split_must_not_end_on_one_cell(restore_seed):
    cellvi.settings.seed = 0
    adata = cellvi.data.synthetic_iid(batch_size=80, n_batches=2, seed=1)
    # Groups of 100 and 60 training cells, 160 in all: one minibatch of 159 leaves one alone,
    # though neither group alone would.
    manager = with_labeled(adata, 100)
    with pytest.raises(ValueError, match="would hold 1 cell .160 training cells, batch_size=159"):
        SemiSupervisedDataSplitter(manager, train_size=1.0, batch_size=159)
    # A group's own tail is no minibatch of its own: 101 labeled cells train in batches of 100.
    manager = with_labeled(adata, 101)
    splitter = SemiSupervisedDataSplitter(manager, train_size=1.0, batch_size=100)
    assert splitter.train_idx.size == 160
    # drop_last: one full minibatch; the 101 labeled cells, fewer than one, are all kept.
    kept = SemiSupervisedDataSplitter(manager, train_size=1.0, batch_size=159, drop_last=True)
    steps = list(kept.train_dataloader())
    assert [(len(ids(full)), len(ids(labeled))) for full, labeled in steps] == [(159, 101)]


def test_concat_loader_repeats_shorter_subsets_in_new_orders(manager):
    loader = ConcatDataLoader(manager, [np.arange(10), np.arange(100, 125)], batch_size=4)
    steps = list(loader)
    assert len(loader) == len(steps) == 7 and loader.largest_dl is loader.dataloaders[1]
    short = np.concatenate([ids(first) for first, _ in steps])
    np.testing.assert_array_equal(short, np.concatenate([np.arange(10)] * 3)[: short.size])
    np.testing.assert_array_equal(
        np.concatenate([ids(second) for _, second in steps]), np.arange(100, 125)
    )
    shuffled = ConcatDataLoader(
        manager, [np.arange(6), np.arange(6, 60)], shuffle=True, batch_size=6
    )
    passes = [ids(first).tolist() for first, _ in shuffled]
    assert all(sorted(p) == list(range(6)) for p in passes)
    empty = ConcatDataLoader(manager, [np.arange(10), []], batch_size=4)
    assert len(empty) == 0 and list(empty) == []


class LabeledCounter(pl.LightningModule):
    """Reads ``(full, labeled)`` minibatches and resamples the labels each epoch (as SCANVI)."""

    def __init__(self, n_genes: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(n_genes, 1)
        self.labeled_seen: list[int] = []

    def on_train_epoch_start(self) -> None:
        self.trainer.train_dataloader.resample_labels()

    def training_step(self, batch, batch_idx) -> torch.Tensor:
        full, labeled = batch
        assert full[X].layout == labeled[X].layout == torch.strided
        self.labeled_seen.append(labeled[X].shape[0])
        return self.linear(full[X]).pow(2).mean() + self.linear(labeled[X]).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("load_sparse_tensor", [False, True])
def test_lightning_fits_on_the_semi_supervised_splitter(adata, load_sparse_tensor):
    adata.X = cellvi.data.synthetic_iid(batch_size=100, sparse_format="csr_matrix").X
    manager = setup(adata)
    splitter = SemiSupervisedDataSplitter(
        manager, n_samples_per_label=4, batch_size=50, load_sparse_tensor=load_sparse_tensor
    )
    module = LabeledCounter(adata.n_vars)
    fit(splitter, module, max_epochs=2, limit_val_batches=0)
    assert module.labeled_seen == [8] * (2 * len(splitter.train_dataloader()))
