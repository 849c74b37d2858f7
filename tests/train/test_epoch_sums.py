"""``EpochSums`` across the processes of a distributed fit: the metrics of all their cells."""

from __future__ import annotations

import torch

from cellvi.train._epoch_sums import EpochSums


def _sums(minibatches: list[tuple[int, float, float]]) -> EpochSums:
    sums = EpochSums()
    for n_obs, cell_sum, batch_value in minibatches:
        sums.update(n_obs, {"rec": torch.tensor(cell_sum)}, {"glob": torch.tensor(batch_value)})
    return sums


def test_summed_across_ranks_the_metrics_are_those_of_all_cells():
    rank0_batches, rank1_batches = [(10, 30.0, 1.0), (10, 50.0, 3.0)], [(10, 70.0, 5.0)]
    rank0, rank1 = _sums(rank0_batches), _sums(rank1_batches)
    alone = rank0.compute()
    # Every rank makes the same calls in the same order: rank 1's tensors, as it passes them,
    # are what the reduction adds to rank 0's.
    passed: list[torch.Tensor] = []
    rank1.sum_across(lambda value: passed.append(value) or value)
    others = iter(passed)
    rank0.sum_across(lambda value: value + next(others))
    summed = rank0.compute()
    for name, value in _sums(rank0_batches + rank1_batches).compute().items():
        torch.testing.assert_close(summed[name], value)
    assert summed["rec"] != alone["rec"]  # 150 / 30 cells, not 80 / 20
