"""``BatchDistributedSampler`` and ``AnnDataLoader(distributed_sampler=True)``."""

from __future__ import annotations

from math import ceil, floor

import numpy as np
import pytest
import torch.distributed as dist

from cellvi.data import REGISTRY_KEYS
from cellvi.dataloaders import AnnDataLoader, BatchDistributedSampler

N = 101


@pytest.mark.parametrize("drop_dataset_tail", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("batch_size", [10, 17, 50])
def test_each_replica_gets_its_share_in_minibatches(batch_size, drop_last, drop_dataset_tail):
    samplers = [
        BatchDistributedSampler(
            range(N),
            num_replicas=2,
            rank=rank,
            batch_size=batch_size,
            drop_last=drop_last,
            drop_dataset_tail=drop_dataset_tail,
        )
        for rank in range(2)
    ]
    share = floor(N / 2) if drop_dataset_tail else ceil(N / 2)
    full, rest = divmod(share, batch_size)
    sizes = [batch_size] * full + ([] if drop_last or rest == 0 else [rest])
    batches = [list(sampler) for sampler in samplers]
    for sampler, replica in zip(samplers, batches, strict=True):
        assert len(sampler) == len(replica) == len(sizes)
        assert [len(batch) for batch in replica] == sizes
        assert all(batch.dtype == np.int64 for batch in replica)
    assert samplers[0].drop_last is drop_dataset_tail
    assert samplers[0].drop_last_batch is drop_last
    if not (drop_last or drop_dataset_tail):
        seen = np.concatenate([np.concatenate(replica) for replica in batches])
        assert set(seen.tolist()) == set(range(N))  # the tail is repeated to even the shares


def test_replicas_are_disjoint_and_reshuffled_each_epoch():
    samplers = [BatchDistributedSampler(range(100), num_replicas=2, rank=r) for r in range(2)]
    first = [np.concatenate(list(s)) for s in samplers]
    assert set(first[0].tolist()).isdisjoint(first[1].tolist())
    assert sorted(np.concatenate(first).tolist()) == list(range(100))
    samplers[0].set_epoch(1)
    assert not np.array_equal(np.concatenate(list(samplers[0])), first[0])
    unshuffled = BatchDistributedSampler(range(10), num_replicas=2, rank=1, shuffle=False)
    np.testing.assert_array_equal(np.concatenate(list(unshuffled)), [1, 3, 5, 7, 9])


@pytest.fixture
def process_group(tmp_path):
    """A one-process gloo group, as a distributed run's every process has."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_anndataloader_serves_its_cells_through_the_process_group(
    manager, expected_arrays, process_group
):
    indices = np.array([3, 40, 7, 12, 0, 33, 8])
    loader = AnnDataLoader(
        manager, indices=indices, batch_size=3, shuffle=True, distributed_sampler=True
    )
    assert isinstance(loader.sampler, BatchDistributedSampler)
    batches = list(loader)
    assert [len(b[REGISTRY_KEYS.X_KEY]) for b in batches] == [3, 3, 1]
    ages = manager.adata.obs["age"].to_numpy(np.float32)
    served = np.concatenate([b[REGISTRY_KEYS.CONT_COVS_KEY][:, 0].numpy() for b in batches])
    np.testing.assert_array_equal(np.sort(served), np.sort(ages[indices]))
    tail = AnnDataLoader(manager, batch_size=16, distributed_sampler=True, drop_last=True)
    assert len(tail) == len(list(tail)) == 3  # 50 cells, one replica: 3 full minibatches
