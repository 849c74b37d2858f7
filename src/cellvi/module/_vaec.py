"""``VAEC``: the conditional variational auto-encoder behind CondSCVI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.distributions import Distribution, Normal, kl_divergence

from cellvi._constants import REGISTRY_KEYS
from cellvi.distributions import NegativeBinomial
from cellvi.module.base import BaseModuleClass, LossOutput
from cellvi.nn import Embedding, Encoder, FCLayers
from cellvi.nn._codes import as_code_vector

Tensor = torch.Tensor


class VAEC(BaseModuleClass):
    """Conditional variational auto-encoder of counts given each cell's label (CondSCVI).

    The label ``y`` (a cell type) enters both networks: the encoder infers
    ``q(z | x, y)`` and the decoder maps ``(z, y)`` to a negative binomial over genes. The
    label is added to every hidden layer (a one-hot, as a weight-row lookup) and the
    decoder's output also gets a learnt per-label, per-gene bias, so ``z`` only has to
    describe variation *within* a label. The library size is observed (the cell's total
    count) and the dispersion is one per gene.

    Parameters
    ----------
    n_input
        Number of genes.
    n_labels
        Number of labels; at least 1.
    n_hidden, n_layers
        Width and number of the hidden layers of the encoder and the decoder.
    n_latent
        Dimension of the latent space.
    log_variational
        Encode ``log1p(x)`` instead of ``x`` (numerical stability, not normalisation).
    ct_weight
        Weight of each label's cells in the loss, length ``n_labels`` (default all ones); e.g.
        inverse label frequencies so that rare cell types count as much as common ones.
    dropout_rate
        Dropout rate of the encoder and the decoder hidden layers.
    n_batch
        Number of batches; with two or more a learnt batch embedding is appended to the
        decoder input (and to the encoder input with ``encode_covariates``).
    encode_covariates
        Give the batch embedding to the encoder too.
    batch_embedding_kwargs
        Keyword arguments of the batch ``Embedding`` (default ``embedding_dim=5``).
    extra_encoder_kwargs, extra_decoder_kwargs
        Further keyword arguments of the encoder (``Encoder``) and decoder (``FCLayers``).

    Notes
    -----
    ``inference`` returns the *log* library size, as cellvi's ``VAE`` does;
    ``generative`` takes it back to counts.
    """

    def __init__(
        self,
        n_input: int,
        n_labels: int = 0,
        n_hidden: int = 128,
        n_latent: int = 5,
        n_layers: int = 2,
        log_variational: bool = True,
        ct_weight: Sequence[float] | np.ndarray | Tensor | None = None,
        dropout_rate: float = 0.05,
        *,
        n_batch: int = 0,
        encode_covariates: bool = False,
        batch_embedding_kwargs: dict[str, Any] | None = None,
        extra_encoder_kwargs: dict[str, Any] | None = None,
        extra_decoder_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if n_labels < 1:
            raise ValueError(
                f"VAEC conditions on the cell label and needs n_labels >= 1, got {n_labels}."
            )
        self.n_input = n_input
        self.n_labels = n_labels
        self.n_latent = n_latent
        self.n_batch = n_batch
        self.log_variational = log_variational
        self.encode_covariates = encode_covariates
        # Fixed choices, read by model-level queries shared with the VAE.
        self.dispersion = "gene"
        self.gene_likelihood = "nb"
        self.latent_distribution = "normal"
        self.register_buffer("ct_weight", _label_weights(ct_weight, n_labels))

        # A single batch carries no information (a constant embedding would only be a bias).
        self.batch_embedding = None
        batch_width = 0
        if n_batch > 1:
            embedding_kwargs = {"embedding_dim": 5, **(batch_embedding_kwargs or {})}
            self.batch_embedding = Embedding(n_batch, **embedding_kwargs)
            batch_width = self.batch_embedding.embedding_dim
        if encode_covariates and self.batch_embedding is None:
            raise ValueError("encode_covariates=True needs n_batch >= 2 (batches to encode).")

        layer_kwargs = {
            "n_cat_list": [n_labels],
            "n_layers": n_layers,
            "n_hidden": n_hidden,
            "dropout_rate": dropout_rate,
            "inject_covariates": True,
            "use_batch_norm": False,
            "use_layer_norm": True,
        }
        self.z_encoder = Encoder(
            n_input + (batch_width if encode_covariates else 0),
            n_latent,
            return_dist=True,
            **{**layer_kwargs, **(extra_encoder_kwargs or {})},
        )
        self.decoder = FCLayers(
            n_latent + batch_width, n_hidden, **{**layer_kwargs, **(extra_decoder_kwargs or {})}
        )
        self.px_decoder = torch.nn.Linear(n_hidden, n_input)
        self.per_ct_bias = torch.nn.Parameter(torch.zeros(n_labels, n_input))
        self.px_r = torch.nn.Parameter(torch.randn(n_input))

    # The inference and generative inputs -------------------------------------------------

    def _get_inference_input(self, tensors: dict[str, Tensor], **kwargs: Any) -> dict[str, Any]:
        return {
            "x": _dense(tensors[REGISTRY_KEYS.X_KEY]),
            "y": tensors[REGISTRY_KEYS.LABELS_KEY],
            "batch_index": tensors.get(REGISTRY_KEYS.BATCH_KEY),
        }

    def _get_generative_input(
        self, tensors: dict[str, Tensor], inference_outputs: dict[str, Any], **kwargs: Any
    ) -> dict[str, Any]:
        return {
            "z": inference_outputs["z"],
            "library": inference_outputs["library"],
            "y": tensors[REGISTRY_KEYS.LABELS_KEY],
            "batch_index": tensors.get(REGISTRY_KEYS.BATCH_KEY),
        }

    def _with_batch(self, values: Tensor, batch_index: Tensor | None) -> Tensor:
        """Append the batch embedding to ``values`` (unchanged without one)."""
        if self.batch_embedding is None:
            return values
        if batch_index is None:
            raise ValueError(f"This VAEC was built for {self.n_batch} batches; give batch_index.")
        embedded = self.batch_embedding(batch_index)
        return torch.cat([values, embedded.expand(*values.shape[:-1], -1)], dim=-1)

    # Inference and generative model ------------------------------------------------------

    def inference(
        self, x: Tensor, y: Tensor, batch_index: Tensor | None = None, n_samples: int = 1
    ) -> dict[str, Any]:
        """Encode counts and labels into ``qz`` and draw ``z``.

        Returns a dict with ``qz``, ``z`` and ``library`` (log total count of each cell).
        With ``n_samples > 1``, ``z`` and ``library`` have a leading sample dimension.
        """
        library = torch.log(x.sum(dim=-1, keepdim=True))
        encoder_values = torch.log1p(x) if self.log_variational else x
        if self.encode_covariates:
            encoder_values = self._with_batch(encoder_values, batch_index)
        qz, z = self.z_encoder(encoder_values, y)
        if n_samples > 1:
            z = qz.rsample((n_samples,))
            library = library.expand(n_samples, *library.shape)
        return {"qz": qz, "z": z, "library": library}

    def generative(
        self, z: Tensor, library: Tensor, y: Tensor, batch_index: Tensor | None = None
    ) -> dict[str, Distribution]:
        """Decode ``(z, y)`` into the count distribution ``px``; also return the prior ``pz``.

        Parameters
        ----------
        z
            Latent draws, (n_cells, n_latent) or (n_samples, n_cells, n_latent).
        library
            Log library sizes, shaped like ``z`` but with one column.
        y
            Label codes, (n_cells,) or (n_cells, 1).
        batch_index
            Batch codes; needed only when built with ``n_batch >= 2``.
        """
        hidden = self.decoder(self._with_batch(z, batch_index), y)
        logits = self.px_decoder(hidden) + self.per_ct_bias[as_code_vector(y)]
        px_scale = torch.softmax(logits, dim=-1)
        px = NegativeBinomial(
            mu=torch.exp(library) * px_scale, theta=torch.exp(self.px_r), scale=px_scale
        )
        return {"px": px, "pz": Normal(torch.zeros_like(z), torch.ones_like(z))}

    # Loss and sampling -------------------------------------------------------------------

    def loss(
        self,
        tensors: dict[str, Tensor],
        inference_outputs: dict[str, Any],
        generative_outputs: dict[str, Any],
        kl_weight: float | Tensor = 1.0,
    ) -> LossOutput:
        """Label-weighted negative ELBO: the mean of ``ct_weight[y] * (rec + kl_weight * KL)``.

        The weight scales each cell's whole term, as if the cell were seen ``ct_weight[y]``
        times: weighting only the reconstruction would in effect weaken the prior of
        up-weighted labels. The reported per-cell terms are unweighted, so ``get_elbo`` is the
        plain ELBO.
        """
        x = _dense(tensors[REGISTRY_KEYS.X_KEY])
        y = as_code_vector(tensors[REGISTRY_KEYS.LABELS_KEY])
        reconstruction_loss = -generative_outputs["px"].log_prob(x).sum(-1)
        kl_z = kl_divergence(inference_outputs["qz"], generative_outputs["pz"]).sum(-1)
        loss = torch.mean(self.ct_weight[y] * (reconstruction_loss + kl_weight * kl_z))
        return LossOutput(
            loss=loss, reconstruction_loss=reconstruction_loss, kl_local={"kl_divergence_z": kl_z}
        )

    @torch.inference_mode()
    def sample(self, tensors: dict[str, Tensor], n_samples: int = 1) -> Tensor:
        """Draw counts from the posterior predictive ``p(x_new | x, y)``.

        Returns a CPU tensor of shape (n_cells, n_genes, n_samples), also for
        ``n_samples == 1``.
        """
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
        inference_inputs = self._get_inference_input(tensors)
        inference_outputs = self.inference(**inference_inputs, n_samples=n_samples)
        generative_outputs = self.generative(
            **self._get_generative_input(tensors, inference_outputs)
        )
        draws = generative_outputs["px"].sample()
        draws = draws.unsqueeze(0) if n_samples == 1 else draws
        return draws.permute(1, 2, 0).cpu()


def _label_weights(
    ct_weight: Sequence[float] | np.ndarray | Tensor | None, n_labels: int
) -> Tensor:
    """Per-label loss weights as a float tensor of length ``n_labels``, checked."""
    if ct_weight is None:
        return torch.ones(n_labels)
    if isinstance(ct_weight, Tensor):
        ct_weight = ct_weight.detach().cpu().numpy()
    # Checked in numpy: the module may be built on a device without data ("meta").
    weights = np.asarray(ct_weight, dtype=np.float32).reshape(-1)
    if weights.size != n_labels:
        raise ValueError(
            f"ct_weight has {weights.size} entries but there are n_labels={n_labels} labels; "
            "give one weight per label, in the order of the label codes."
        )
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("ct_weight must hold finite, non-negative weights.")
    return torch.as_tensor(weights)


def _dense(counts: Tensor) -> Tensor:
    """Counts as a strided tensor (loaders may hand over sparse minibatches)."""
    return counts if counts.layout == torch.strided else counts.to_dense()
