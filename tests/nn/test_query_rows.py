"""Frozen reference rows of grown tables: exact under any optimizer, invisible in state dicts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cellvi.nn import Embedding, FCLayers


def _layers() -> FCLayers:
    torch.manual_seed(0)
    return FCLayers(6, 4, n_cat_list=[5, 1, 3], n_cont=2, n_layers=2, n_hidden=8)


def _inputs(n: int = 32):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, 6, generator=generator)
    codes = [torch.randint(0, 5, (n, 1), generator=generator), None]
    codes.append(torch.randint(0, 3, (n, 1), generator=generator))
    return x, codes, torch.randn(n, 2, generator=generator)


@pytest.mark.parametrize("optimizer", [torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD])
def test_reference_rows_stay_exact_while_new_rows_train(optimizer):
    layers = _layers()
    x, codes, cont = _inputs()
    before = {name: tensor.clone() for name, tensor in layers.state_dict().items()}
    layers.eval()
    expected = layers(x, *codes, cont=cont)
    layers.freeze_for_query(frozen_categories=[[0, 1, 2], [], [0, 1]])
    torch.testing.assert_close(layers(x, *codes, cont=cont), expected)  # same function
    layers.train()
    trainable = [p for p in layers.parameters() if p.requires_grad]
    step = optimizer(trainable, lr=0.1, weight_decay=0.5)
    for _ in range(5):
        step.zero_grad()
        layers(x, *codes, cont=cont).pow(2).sum().backward()
        step.step()
    after = layers.state_dict()
    assert set(after) == set(before)
    for name, old in before.items():
        if ".cat_weights." in name:
            n_reference = 3 if name.endswith(".0") else 2
            assert torch.equal(after[name][:n_reference], old[:n_reference]), name
            assert not torch.equal(after[name][n_reference:], old[n_reference:]), name
        elif "transforms" not in name:  # batch norm is the caller's to freeze
            assert torch.equal(after[name], old), name
    fresh = _layers()
    fresh.load_state_dict(after)
    fresh.eval(), layers.eval()
    torch.testing.assert_close(fresh(x, *codes, cont=cont), layers(x, *codes, cont=cont))
    layers.load_state_dict(after)  # a whole table loads back into its two parts
    assert torch.equal(
        layers.state_dict()["linears.0.cat_weights.0"], after["linears.0.cat_weights.0"]
    )


def test_unhooked_first_layer_trains_whole_and_no_counts_mean_all_categories():
    layers = _layers()
    layers.freeze_for_query(hook_first_layer=False)
    assert all(p.requires_grad for p in layers.linears[0].parameters())
    assert not layers.linears[1].weight.requires_grad
    assert all(p.requires_grad for p in layers.linears[1].cat_weights)
    assert len(layers.query_rows) == 0
    with pytest.raises(ValueError, match="one list of codes per covariate"):
        layers.freeze_for_query(frozen_categories=[[3]])
    layers.freeze_for_query(frozen_categories=[[1, 3], [], []])  # any rows, not only leading
    assert set(layers.query_rows) == {"0_0", "1_0"}
    assert layers.query_rows["0_0"].frozen_rows == [1, 3]


def test_the_scvi_tools_view_concatenates_weights_and_gradients():
    layers = _layers()
    layers.freeze_for_query(frozen_categories=[[0, 1, 2], [], [0, 1]])
    view = layers.fc_layers[0][0]
    assert view.weight.shape == (8, 6 + 2 + 5 + 3) and view.weight.requires_grad
    assert view.weight.grad is None  # no backward pass yet
    x, codes, cont = _inputs()
    layers(x, *codes, cont=cont).sum().backward()
    grad = view.weight.grad
    assert not grad[:, :8].any()  # inputs and continuous covariates: frozen
    assert not grad[:, 8:11].any() and not grad[:, 13:15].any()  # reference categories
    assert grad[:, 11:13].any() and grad[:, 15:].any()  # new categories
    # Called on [x, continuous, one-hots], the view is the layer's linear map.
    one_hots = [F.one_hot(codes[0].squeeze(-1), 5), F.one_hot(codes[2].squeeze(-1), 3)]
    concatenated = torch.cat([x, cont, *one_hots], dim=1).float()
    first, second = codes[0].squeeze(-1), codes[2].squeeze(-1)
    direct = layers.linears[0](x, [first, second], cont)
    direct = direct + layers.query_rows["0_0"](first) + layers.query_rows["0_1"](second)
    torch.testing.assert_close(view(concatenated), direct)


def test_embedding_rows_freeze_exactly():
    torch.manual_seed(0)
    embedding = Embedding(5, 3)
    old = embedding.weight.detach().clone()
    embedding.freeze_rows(3)
    step = torch.optim.AdamW([p for p in embedding.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        step.zero_grad()
        embedding(torch.arange(5)).pow(2).sum().backward()
        step.step()
    weight = embedding.state_dict()["weight"]
    assert set(embedding.state_dict()) == {"weight"}
    assert torch.equal(weight[:3], old[:3]) and not torch.equal(weight[3:], old[3:])
    rebuilt = Embedding(5, 3)
    rebuilt.load_state_dict(embedding.state_dict())
    torch.testing.assert_close(rebuilt(torch.arange(5)), embedding(torch.arange(5)))
    embedding.freeze_rows(5)
    assert not any(p.requires_grad for p in embedding.parameters())
    assert torch.equal(embedding.weight, weight)
