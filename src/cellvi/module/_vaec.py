"""``VAEC``: the conditional variational auto-encoder behind CondSCVI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    Normal,
    kl_divergence,
)

from cellvi._constants import REGISTRY_KEYS
from cellvi.distributions import NegativeBinomial
from cellvi.module._constants import MODULE_KEYS
from cellvi.module._options import check_choice
from cellvi.module._tensors import dense_counts, latent_and_codes
from cellvi.module.base import BaseModuleClass, EmbeddingModuleMixin, LossOutput
from cellvi.nn import Classifier, Encoder, FCLayers
from cellvi.nn._codes import as_code_vector
from cellvi.nn._scvi_tools_weights import (
    classifier_weights,
    encoder_weights,
    fclayers_weights,
    linear_weights,
    prefixed,
    take,
)

Tensor = torch.Tensor
#: Registry key of the fine labels CondSCVI registers with ``fine_labels_key``.
FINE_LABELS_KEY = "fine_labels"


class VAEC(EmbeddingModuleMixin, BaseModuleClass):
    """Conditional variational auto-encoder of counts given each cell's label (CondSCVI).

    The label ``y`` (a cell type) enters both networks: the encoder infers
    ``q(z | x, y)`` and the decoder maps ``(z, y)`` to a negative binomial over genes. The
    label is added to every hidden layer (a one-hot, as a weight-row lookup) and the
    decoder's output also gets a learnt per-label, per-gene bias, so ``z`` only has to
    describe variation *within* a label. The library size is observed (the cell's total
    count) and the dispersion is one per gene. A learnt embedding of the batch (one row per
    batch, even for a single batch, as in scvi-tools 1.4) is appended to the decoder input,
    and to the encoder input with ``encode_covariates``.

    With ``n_fine_labels``, a classifier also learns finer labels (sub-types) from ``z`` and
    the coarse label (``classify``); with ``prior="mog"`` the prior of ``z`` is a learnt
    mixture of ``num_classes_mog`` Gaussians per label instead of a standard normal.

    Parameters
    ----------
    n_input
        Number of genes.
    n_batch
        Number of batches; 0 builds no batch embedding.
    n_labels
        Number of labels; at least 1.
    n_fine_labels
        Number of fine labels the classifier predicts (None: no classifier).
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
    encode_covariates
        Give the batch embedding to the encoder too (needs ``n_batch >= 1``).
    extra_encoder_kwargs, extra_decoder_kwargs
        Further keyword arguments of the encoder (``Encoder``) and decoder (``FCLayers``).
    prior
        ``"normal"`` or ``"mog"`` (a mixture of Gaussians per label).
    num_classes_mog
        Components of each label's mixture with ``prior="mog"``.
    batch_embedding_kwargs
        Keyword arguments of the batch ``Embedding`` (default ``embedding_dim=5``).

    Notes
    -----
    ``inference`` returns the *log* library size, as cellvi's ``VAE`` does;
    ``generative`` takes it back to counts.
    """

    def __init__(
        self,
        n_input: int,
        n_batch: int = 0,
        n_labels: int = 0,
        n_fine_labels: int | None = None,
        n_hidden: int = 128,
        n_latent: int = 5,
        n_layers: int = 2,
        log_variational: bool = True,
        ct_weight: Sequence[float] | np.ndarray | Tensor | None = None,
        dropout_rate: float = 0.05,
        encode_covariates: bool = False,
        extra_encoder_kwargs: dict[str, Any] | None = None,
        extra_decoder_kwargs: dict[str, Any] | None = None,
        prior: Literal["normal", "mog"] = "normal",
        num_classes_mog: int | None = 10,
        *,
        batch_embedding_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if n_labels < 1:
            raise ValueError(
                f"VAEC conditions on the cell label and needs n_labels >= 1, got {n_labels}."
            )
        if encode_covariates and n_batch < 1:
            raise ValueError("encode_covariates=True needs n_batch >= 1 (batches to encode).")
        check_choice("prior", prior, ("normal", "mog"))
        self.n_input = n_input
        self.n_labels = n_labels
        self.n_fine_labels = n_fine_labels
        self.n_latent = n_latent
        self.n_batch = n_batch
        self.log_variational = log_variational
        self.encode_covariates = encode_covariates
        self.prior = prior
        self.num_classes_mog = num_classes_mog
        # Fixed choices, read by model-level queries shared with the VAE.
        self.dispersion = "gene"
        self.gene_likelihood = "nb"
        self.latent_distribution = "normal"
        self.register_buffer("ct_weight", _label_weights(ct_weight, n_labels))

        batch_width = 0
        if n_batch >= 1:
            embedding_kwargs = {"embedding_dim": 5, **(batch_embedding_kwargs or {})}
            self.init_embedding(REGISTRY_KEYS.BATCH_KEY, n_batch, **embedding_kwargs)
            batch_width = self.batch_embedding.embedding_dim

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

        self.linear_mapping = self.classifier = None
        if n_fine_labels is not None:
            # The coarse label shapes the space the fine labels are read from.
            self.linear_mapping = FCLayers(
                n_latent, n_hidden, n_cat_list=[n_labels], use_layer_norm=True, dropout_rate=0.0
            )
            self.classifier = Classifier(
                n_hidden,
                n_labels=n_fine_labels,
                n_layers=0,
                n_hidden=0,
                dropout_rate=dropout_rate,
                logits=True,
                use_batch_norm=False,
                use_layer_norm=True,
            )
        if prior == "mog":
            self.prior_means = torch.nn.Parameter(torch.randn(n_labels, num_classes_mog, n_latent))
            self.prior_log_std = torch.nn.Parameter(
                torch.full((n_labels, num_classes_mog, n_latent), -2.0)
            )
            self.prior_logits = torch.nn.Parameter(torch.zeros(n_labels, num_classes_mog))

    def state_dict_from_scvi_tools(self, source: dict[str, Tensor]) -> dict[str, Tensor]:
        """This VAEC's state dict from an scvi-tools 1.x ``VAEC``'s (same architecture)."""
        weights = prefixed(encoder_weights(self.z_encoder, source, "z_encoder."), "z_encoder.")
        weights.update(prefixed(fclayers_weights(self.decoder, source, "decoder."), "decoder."))
        # scvi-tools before 1.3 wrapped the output layer in a Sequential.
        output = "px_decoder." if "px_decoder.weight" in source else "px_decoder.0."
        weights.update(prefixed(linear_weights(self.px_decoder, source, output), "px_decoder."))
        weights["px_r"] = take(source, "px_r")
        weights["ct_weight"] = take(source, "ct_weight")
        # scvi-tools before 1.3 had no per-label bias: zeros compute the same.
        weights["per_ct_bias"] = source.get("per_ct_bias", torch.zeros_like(self.per_ct_bias))
        if self.batch_embedding is not None:
            key = "_embeddings_dict.batch.weight"
            weights[key] = take(source, key)
        if self.classifier is not None:
            mapping = fclayers_weights(self.linear_mapping, source, "linear_mapping.")
            weights.update(prefixed(mapping, "linear_mapping."))
            classifier = classifier_weights(self.classifier, source, "classifier.")
            weights.update(prefixed(classifier, "classifier."))
        if self.prior == "mog":
            for name in ("prior_means", "prior_log_std", "prior_logits"):
                weights[name] = take(source, name)
        return weights

    # The inference and generative inputs -------------------------------------------------

    def _get_inference_input(self, tensors: dict[str, Tensor], **kwargs: Any) -> dict[str, Any]:
        return {
            MODULE_KEYS.X_KEY: dense_counts(tensors[REGISTRY_KEYS.X_KEY]),
            MODULE_KEYS.Y_KEY: tensors[REGISTRY_KEYS.LABELS_KEY],
            MODULE_KEYS.BATCH_INDEX_KEY: tensors.get(REGISTRY_KEYS.BATCH_KEY),
        }

    def _get_generative_input(
        self, tensors: dict[str, Tensor], inference_outputs: dict[str, Any], **kwargs: Any
    ) -> dict[str, Any]:
        return latent_and_codes(tensors, inference_outputs)

    def _with_batch(self, values: Tensor, batch_index: Tensor | None) -> Tensor:
        """Append the batch embedding to ``values`` (unchanged without one)."""
        if self.batch_embedding is None:
            return values
        if batch_index is None:
            if self.n_batch > 1:
                raise ValueError(
                    f"This VAEC was built for {self.n_batch} batches; give batch_index."
                )
            batch_index = torch.zeros(values.shape[-2], dtype=torch.long, device=values.device)
        embedded = self.compute_embedding(REGISTRY_KEYS.BATCH_KEY, batch_index)
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
        return {MODULE_KEYS.QZ_KEY: qz, MODULE_KEYS.Z_KEY: z, MODULE_KEYS.LIBRARY_KEY: library}

    def classify(self, z: Tensor, label_index: Tensor) -> Tensor:
        """Logits of the fine labels of cells at ``z`` with coarse labels ``label_index``.

        Parameters
        ----------
        z
            Latent codes, ``(n_cells, n_latent)``.
        label_index
            Coarse label codes, ``(n_cells,)`` or ``(n_cells, 1)``.
        """
        if self.classifier is None:
            raise ValueError("This VAEC has no fine labels to classify (n_fine_labels=None).")
        return self.classifier(self.linear_mapping(z, label_index))

    def generative(
        self,
        z: Tensor,
        library: Tensor,
        y: Tensor,
        batch_index: Tensor | None = None,
        transform_batch: int | None = None,
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
            Batch codes (all zeros when omitted with a single batch).
        transform_batch
            Decode every cell as if it came from this batch.
        """
        if transform_batch is not None:
            batch_index = torch.full(
                (z.shape[-2],), int(transform_batch), dtype=torch.long, device=z.device
            )
        hidden = self.decoder(self._with_batch(z, batch_index), y)
        logits = self.px_decoder(hidden) + self.per_ct_bias[as_code_vector(y)]
        px_scale = torch.softmax(logits, dim=-1)
        px = NegativeBinomial(
            mu=torch.exp(library) * px_scale, theta=torch.exp(self.px_r), scale=px_scale
        )
        return {
            MODULE_KEYS.PX_KEY: px,
            MODULE_KEYS.PZ_KEY: Normal(torch.zeros_like(z), torch.ones_like(z)),
        }

    # Loss and sampling -------------------------------------------------------------------

    def loss(
        self,
        tensors: dict[str, Tensor],
        inference_outputs: dict[str, Any],
        generative_outputs: dict[str, Any],
        kl_weight: float | Tensor = 1.0,
        classification_ratio: float = 5.0,
    ) -> LossOutput:
        """Label-weighted negative ELBO: the mean of ``ct_weight[y] * (rec + kl_weight * KL)``.

        The weight scales each cell's whole term, as if the cell were seen ``ct_weight[y]``
        times: weighting only the reconstruction would in effect weaken the prior of
        up-weighted labels. The reported per-cell terms are unweighted, so ``get_elbo`` is the
        plain ELBO. With a fine-label classifier, ``classification_ratio`` times its
        cross-entropy on the cells whose fine label is known joins each cell's term.
        """
        x = dense_counts(tensors[REGISTRY_KEYS.X_KEY])
        y = as_code_vector(tensors[REGISTRY_KEYS.LABELS_KEY])
        qz = inference_outputs[MODULE_KEYS.QZ_KEY]
        reconstruction_loss = -generative_outputs[MODULE_KEYS.PX_KEY].log_prob(x).sum(-1)
        kl_z = self._kl_z(qz, y, generative_outputs[MODULE_KEYS.PZ_KEY])
        per_cell = reconstruction_loss + kl_weight * kl_z
        classified = {}
        if self.classifier is not None:
            fine = as_code_vector(tensors[FINE_LABELS_KEY])
            logits = self.classify(qz.loc, y)
            known = fine != self.n_fine_labels  # the unlabeled category's code comes last
            # Unknown fine labels get any valid class here; ``known`` drops their term.
            targets = fine.clamp(max=self.n_fine_labels - 1)
            entropy = F.cross_entropy(logits, targets, reduction="none")
            classification_loss = classification_ratio * (
                (entropy * known).sum() / known.sum().clamp(min=1)
            )
            per_cell = per_cell + classification_loss
            classified = {
                "classification_loss": classification_loss,
                "logits": logits,
                "true_labels": fine,
            }
        return LossOutput(
            loss=torch.mean(self.ct_weight[y] * per_cell),
            reconstruction_loss=reconstruction_loss,
            kl_local={MODULE_KEYS.KL_Z_KEY: kl_z},
            **classified,
        )

    def _kl_z(self, qz: Normal, y: Tensor, pz: Normal) -> Tensor:
        """KL(q(z|x, y) || p(z|y)) per cell: closed form, or 30 draws under a mixture prior."""
        if self.prior == "normal":
            return kl_divergence(qz, pz).sum(-1)
        components = Independent(
            Normal(self.prior_means[y], torch.exp(self.prior_log_std[y]) + 1e-4), 1
        )
        prior = MixtureSameFamily(Categorical(logits=self.prior_logits[y]), components)
        draws = qz.rsample((30,))
        return (qz.log_prob(draws).sum(-1) - prior.log_prob(draws)).mean(0)

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
        draws = generative_outputs[MODULE_KEYS.PX_KEY].sample()
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
