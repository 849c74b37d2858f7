import pytest
import torch
from torch.distributions import Normal

from cellvi.nn import DecoderSCVI, Encoder

N, N_GENES, N_LATENT = 8, 20, 3


def _batch(n: int = N) -> torch.Tensor:
    return torch.randint(0, 2, (n, 1), generator=torch.Generator().manual_seed(0))


def test_encoder_outputs():
    torch.manual_seed(0)
    enc = Encoder(N_GENES, N_LATENT, n_cat_list=[2], n_hidden=16, var_eps=1e-3)
    q_m, q_v, latent = enc(torch.randn(N, N_GENES), _batch())
    assert q_m.shape == q_v.shape == latent.shape == (N, N_LATENT)
    assert (q_v >= 1e-3).all()


def test_encoder_custom_var_activation():
    torch.manual_seed(0)
    enc = Encoder(
        N_GENES, N_LATENT, var_activation=torch.nn.functional.softplus, var_eps=0.0
    ).eval()
    x = torch.randn(N, N_GENES)
    _, q_v, _ = enc(x)
    q = enc.encoder(x)
    assert (q_v > 0).all()
    torch.testing.assert_close(q_v, torch.nn.functional.softplus(enc.var_encoder(q)))


def test_encoder_logistic_normal_latent_is_on_simplex():
    torch.manual_seed(0)
    enc = Encoder(N_GENES, N_LATENT, distribution="ln")
    _, _, latent = enc(torch.randn(N, N_GENES))
    assert (latent > 0).all()
    torch.testing.assert_close(latent.sum(-1), torch.ones(N))


def test_encoder_return_dist():
    torch.manual_seed(0)
    enc = Encoder(N_GENES, N_LATENT, return_dist=True).eval()
    dist, latent = enc(torch.randn(N, N_GENES))
    assert isinstance(dist, Normal)
    assert dist.loc.shape == latent.shape == (N, N_LATENT)


def test_encoder_gradients_reach_every_parameter():
    torch.manual_seed(0)
    enc = Encoder(N_GENES, N_LATENT, n_cat_list=[2], n_cont=1, n_layers=2, n_hidden=16)
    q_m, q_v, latent = enc(torch.randn(N, N_GENES), _batch(), cont=torch.randn(N, 1))
    (latent.pow(2).sum() + q_v.sum()).backward()
    for name, param in enc.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_encoder_unknown_distribution():
    with pytest.raises(ValueError, match="'normal', 'ln'"):
        Encoder(N_GENES, N_LATENT, distribution="gamma")


def test_decoder_outputs():
    torch.manual_seed(0)
    dec = DecoderSCVI(N_LATENT, N_GENES, n_cat_list=[2], n_hidden=16)
    library = torch.randn(N, 1)
    px_scale, px_r, px_rate, px_dropout = dec("gene", torch.randn(N, N_LATENT), library, _batch())
    assert px_scale.shape == px_rate.shape == px_dropout.shape == (N, N_GENES)
    assert px_r is None
    torch.testing.assert_close(px_scale.sum(-1), torch.ones(N))
    torch.testing.assert_close(px_rate, torch.exp(library) * px_scale)


@pytest.mark.parametrize("dispersion", ["gene", "gene-batch", "gene-label", "gene-cell"])
def test_decoder_px_r_only_for_gene_cell(dispersion):
    dec = DecoderSCVI(N_LATENT, N_GENES)
    _, px_r, _, _ = dec(dispersion, torch.randn(N, N_LATENT), torch.zeros(N, 1))
    assert (px_r is not None) == (dispersion == "gene-cell")
    if px_r is not None:
        assert px_r.shape == (N, N_GENES)


def test_decoder_with_sample_dimension():
    torch.manual_seed(0)
    dec = DecoderSCVI(N_LATENT, N_GENES, n_cat_list=[2], n_layers=2, n_hidden=16)
    z = torch.randn(5, N, N_LATENT)
    library = torch.randn(N, 1)
    px_scale, px_r, px_rate, _ = dec("gene-cell", z, library, _batch()[:, 0])
    assert px_scale.shape == px_r.shape == px_rate.shape == (5, N, N_GENES)
    torch.testing.assert_close(px_rate, torch.exp(library) * px_scale)


def test_decoder_softplus_scale():
    torch.manual_seed(0)
    dec = DecoderSCVI(N_LATENT, N_GENES, scale_activation="softplus")
    px_scale, _, _, _ = dec("gene", torch.randn(N, N_LATENT), torch.zeros(N, 1))
    assert (px_scale > 0).all()
    assert not torch.allclose(px_scale.sum(-1), torch.ones(N))


def test_decoder_has_no_dropout_or_batch_norm_by_default():
    dec = DecoderSCVI(N_LATENT, N_GENES, n_layers=2)
    kinds = {type(m) for m in dec.modules()}
    assert torch.nn.Dropout not in kinds and torch.nn.BatchNorm1d not in kinds


def test_decoder_invalid_arguments():
    with pytest.raises(ValueError, match="scale_activation"):
        DecoderSCVI(N_LATENT, N_GENES, scale_activation="relu")
    dec = DecoderSCVI(N_LATENT, N_GENES, n_cat_list=[2])
    z, library = torch.randn(N, N_LATENT), torch.zeros(N, 1)
    with pytest.raises(ValueError, match="dispersion"):
        dec("protein", z, library, _batch())
    with pytest.raises(ValueError, match="expects 1 categorical covariate tensor"):
        dec("gene", z, library)
