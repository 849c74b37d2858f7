import math

import pytest
import torch

from cellvi.nn import FCLayers, one_hot

N, N_IN, N_OUT = 6, 5, 4


def _codes(n_cat: int, n: int = N, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, n_cat, (n,), generator=torch.Generator().manual_seed(seed))


def _affine_only(**kwargs) -> FCLayers:
    """FCLayers whose layers are bare linear maps."""
    return FCLayers(use_batch_norm=False, use_activation=False, dropout_rate=0.0, **kwargs)


@pytest.mark.parametrize("n_layers", [1, 3])
@pytest.mark.parametrize("leading", [(), (3,)])
def test_output_shape(n_layers, leading):
    torch.manual_seed(0)
    fc = FCLayers(N_IN, N_OUT, n_cat_list=[3], n_cont=2, n_layers=n_layers, n_hidden=8)
    x = torch.randn(*leading, N, N_IN)
    out = fc(x, _codes(3), cont=torch.randn(N, 2))
    assert out.shape == (*leading, N, N_OUT)


def test_layer_widths():
    fc = FCLayers(N_IN, N_OUT, n_layers=3, n_hidden=8)
    assert [(lin.n_in, lin.n_out) for lin in fc.linears] == [(N_IN, 8), (8, 8), (8, N_OUT)]
    assert len(FCLayers(N_IN, N_OUT, n_layers=1).linears) == 1


def test_3d_input_matches_per_sample_2d_in_eval():
    torch.manual_seed(0)
    fc = FCLayers(N_IN, N_OUT, n_cat_list=[3], n_cont=1, n_layers=2, n_hidden=8).eval()
    x = torch.randn(4, N, N_IN)
    c, cont = _codes(3), torch.randn(N, 1)
    out = fc(x, c, cont=cont)
    for s in range(x.shape[0]):
        torch.testing.assert_close(out[s], fc(x[s], c, cont=cont))


def test_embedding_formulation_equals_one_hot_concatenation():
    torch.manual_seed(0)
    # The 1-category covariate is ignored and must not enter the reference either.
    fc = _affine_only(n_in=N_IN, n_out=N_OUT, n_cat_list=[3, 1, 2], n_cont=2)
    layer = fc.linears[0]
    c1, c2, cont = _codes(3, seed=1), _codes(2, seed=2), torch.randn(N, 2)
    x = torch.randn(N, N_IN)

    reference = torch.nn.Linear(N_IN + 3 + 2 + 2, N_OUT)
    with torch.no_grad():
        reference.weight.copy_(
            torch.cat(
                [layer.weight, layer.cat_weights[0].T, layer.cat_weights[1].T, layer.cont_weight],
                dim=1,
            )
        )
        reference.bias.copy_(layer.bias)
    expected = reference(torch.cat([x, one_hot(c1, 3), one_hot(c2, 2), cont], dim=1))

    torch.testing.assert_close(fc(x, c1, None, c2, cont=cont), expected)


def test_stack_equals_classic_concatenation_with_injection():
    torch.manual_seed(0)
    fc = FCLayers(N_IN, N_OUT, n_cat_list=[3], n_cont=1, n_layers=3, n_hidden=8).eval()
    c, cont = _codes(3), torch.randn(N, 1)
    x = torch.randn(2, N, N_IN)
    covariates = torch.cat([one_hot(c, 3), cont], dim=1).expand(2, N, 4)

    h = x
    for layer, transform in zip(fc.linears, fc.transforms, strict=True):
        w = torch.cat([layer.weight, layer.cat_weights[0].T, layer.cont_weight], dim=1)
        h = torch.nn.functional.linear(torch.cat([h, covariates], dim=-1), w, layer.bias)
        h = transform(h.reshape(-1, h.shape[-1])).reshape(h.shape)

    torch.testing.assert_close(fc(x, c, cont=cont), h)


def test_covariate_weights_initialised_like_classic_linear():
    fc = FCLayers(100, 400, n_cat_list=[50], n_cont=6)
    layer = fc.linears[0]
    bound = 1 / math.sqrt(100 + 50 + 6)
    for param in (layer.weight, layer.cat_weights[0], layer.cont_weight, layer.bias):
        assert param.abs().max() <= bound
        assert param.abs().max() > 0.95 * bound


@pytest.mark.parametrize("inject", [True, False])
def test_inject_covariates_controls_later_layers(inject):
    torch.manual_seed(0)
    fc = FCLayers(
        N_IN, N_OUT, n_cat_list=[3], n_layers=3, n_hidden=8, inject_covariates=inject
    ).eval()
    assert fc.injected_layers == ((0, 1, 2) if inject else (0,))
    assert fc.covariate_widths(0) == (3,)
    assert fc.covariate_widths(2) == ((3,) if inject else ())
    with torch.no_grad():
        fc.linears[0].cat_weights[0].zero_()

    x = torch.randn(N, N_IN)
    zeros, twos = torch.zeros(N, dtype=torch.long), torch.full((N,), 2)
    changed = not torch.allclose(fc(x, zeros), fc(x, twos))
    assert changed == inject


def test_continuous_covariate_widths():
    fc = FCLayers(N_IN, N_OUT, n_cat_list=[3], n_cont=2, n_layers=2, inject_covariates=False)
    assert fc.covariate_widths(0) == (3, 2)
    assert fc.covariate_widths(1) == ()


def test_single_category_covariates_are_ignored():
    fc = FCLayers(N_IN, N_OUT, n_cat_list=[1, 3], n_layers=2)
    assert [tuple(t.shape) for t in fc.linears[0].cat_weights] == [(3, 128)]
    plain = FCLayers(N_IN, N_OUT, n_cat_list=[1])
    assert plain.injected_layers == ()
    assert len(plain.linears[0].cat_weights) == 0
    n_params = sum(p.numel() for p in plain.parameters())
    assert n_params == sum(p.numel() for p in FCLayers(N_IN, N_OUT).parameters())
    assert plain(torch.randn(N, N_IN), None).shape == (N, N_OUT)


def test_code_column_and_float_codes_match_long_vector():
    torch.manual_seed(0)
    fc = FCLayers(N_IN, N_OUT, n_cat_list=[3]).eval()
    x, c = torch.randn(N, N_IN), _codes(3)
    torch.testing.assert_close(fc(x, c), fc(x, c[:, None].float()))


@pytest.mark.parametrize(
    ("use_batch_norm", "use_layer_norm"), [(True, False), (False, True), (False, False)]
)
def test_normalisation_modules_follow_flags(use_batch_norm, use_layer_norm):
    fc = FCLayers(
        N_IN, N_OUT, n_layers=2, use_batch_norm=use_batch_norm, use_layer_norm=use_layer_norm
    )
    modules = list(fc.modules())
    batch_norms = [m for m in modules if isinstance(m, torch.nn.BatchNorm1d)]
    layer_norms = [m for m in modules if isinstance(m, torch.nn.LayerNorm)]
    assert len(batch_norms) == (2 if use_batch_norm else 0)
    assert len(layer_norms) == (2 if use_layer_norm else 0)
    for bn in batch_norms:
        assert bn.momentum == 0.01 and bn.eps == 1e-3
    for ln in layer_norms:
        assert not ln.elementwise_affine


def test_activation_and_dropout_flags():
    fc = FCLayers(N_IN, N_OUT, use_activation=False, dropout_rate=0.0)
    kinds = {type(m) for m in fc.modules()}
    assert torch.nn.ReLU not in kinds and torch.nn.Dropout not in kinds
    fc = FCLayers(N_IN, N_OUT, activation_fn=torch.nn.ELU)
    assert any(isinstance(m, torch.nn.ELU) for m in fc.modules())


def test_dropout_is_off_in_eval_mode():
    torch.manual_seed(0)
    fc = FCLayers(N_IN, N_OUT, n_hidden=64, dropout_rate=0.5, use_batch_norm=False)
    x = torch.randn(N, N_IN)
    assert not torch.equal(fc(x), fc(x))
    fc.eval()
    assert torch.equal(fc(x), fc(x))


def test_no_bias():
    fc = FCLayers(N_IN, N_OUT, n_cat_list=[3], bias=False)
    assert fc.linears[0].bias is None


def test_wrong_number_of_covariates_raises():
    fc = FCLayers(N_IN, N_OUT, n_cat_list=[3, 2])
    x = torch.randn(N, N_IN)
    with pytest.raises(ValueError, match="expects 2 categorical covariate tensor"):
        fc(x, _codes(3))
    with pytest.raises(ValueError, match="got 0"):
        FCLayers(N_IN, N_OUT, n_cat_list=[3])(x)
    with pytest.raises(ValueError, match="expects 0"):
        FCLayers(N_IN, N_OUT)(x, _codes(3))


def test_missing_or_unexpected_cont_raises():
    x = torch.randn(N, N_IN)
    with pytest.raises(ValueError, match="n_cont=2"):
        FCLayers(N_IN, N_OUT, n_cont=2)(x)
    with pytest.raises(ValueError, match="n_cont=0"):
        FCLayers(N_IN, N_OUT)(x, cont=torch.randn(N, 2))


def test_none_codes_for_active_covariate_raise():
    with pytest.raises(ValueError, match="must be given"):
        FCLayers(N_IN, N_OUT, n_cat_list=[3])(torch.randn(N, N_IN), None)
