"""``Embedding.extend``: new rows for new categories, old rows kept (and frozen if asked)."""

from __future__ import annotations

import pickle

import pytest
import torch

from cellvi.nn import Embedding


@pytest.mark.parametrize("init", [3, [0, 4]])
@pytest.mark.parametrize("freeze_prev", [True, False])
def test_extend_keeps_old_rows_and_trains_only_new_ones_when_frozen(init, freeze_prev):
    torch.manual_seed(0)
    embedding = Embedding(6, 4)
    extended = Embedding.extend(embedding, init=init, freeze_prev=freeze_prev)
    n_new = init if isinstance(init, int) else len(init)
    assert extended.weight.shape == (6 + n_new, 4) and extended.num_embeddings == 6 + n_new
    assert torch.equal(extended.weight[:6], embedding.weight)
    if isinstance(init, list):
        assert torch.equal(extended.weight[6:], embedding.weight[init])
    extended(torch.arange(6 + n_new)).pow(2).sum().backward()
    old_grad, new_grad = extended.weight.grad[:6], extended.weight.grad[6:]
    assert (old_grad == 0).all() == freeze_prev
    assert (new_grad != 0).any()
    assert embedding.weight.grad is None  # the original is left alone


def test_extend_refuses_bad_init():
    embedding = Embedding(3, 2)
    with pytest.raises(ValueError, match=">= 1"):
        Embedding.extend(embedding, init=0)
    with pytest.raises(TypeError, match="int or a list"):
        Embedding.extend(embedding, init="two")


def test_an_extended_embedding_loads_into_one_built_smaller():
    extended = Embedding.extend(Embedding(5, 3), init=2)
    rebuilt = Embedding(5, 3)
    rebuilt.load_state_dict(extended.state_dict())
    assert rebuilt.num_embeddings == 7 and torch.equal(rebuilt.weight, extended.weight)
    assert pickle.loads(pickle.dumps(extended)).num_embeddings == 7  # the hook pickles too
