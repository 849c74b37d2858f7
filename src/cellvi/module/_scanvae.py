"""``SCANVAE``: the scANVI generative model, a VAE with cell labels in its latent prior."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch.distributions import Categorical, Distribution, Normal, kl_divergence

from cellvi._constants import REGISTRY_KEYS
from cellvi.module._constants import MODULE_KEYS
from cellvi.module._options import norm_flags
from cellvi.module._tensors import dense_counts
from cellvi.module._vae import VAE, _log_likelihood_sum
from cellvi.module.base import LossOutput
from cellvi.nn import Classifier, Decoder, Encoder
from cellvi.nn._scvi_tools_weights import classifier_weights, encoder_weights, prefixed, take
from cellvi.utils import unsupported_if_adata_minified

Tensor = torch.Tensor
# What SCANVAE's networks are shaped by when ``vae_kwargs`` leave it to the VAE's defaults.
_VAE_DEFAULTS = {
    name: parameter.default for name, parameter in inspect.signature(VAE).parameters.items()
}
# The first scvi-tools release whose classifier returns logits (before it, probabilities).
_FIRST_LOGITS_VERSION = (1, 1)


class SCANVAE(VAE):
    """Single-cell annotation by variational inference (scANVI, Xu et al. 2021).

    The generative model of scVI with a labelled hierarchical prior on the latent code
    ``z1`` (the M1 + M2 model of Kingma et al. 2014)::

        y ~ Categorical(y_prior),  z2 ~ N(0, I),  z1 | z2, y ~ N(mu(z2, y), sigma(z2, y)),
        x | z1, library, batch ~ the VAE's count likelihood.

    The posterior is ``q(z1 | x) q(y | z1) q(z2 | z1, y)``: the VAE's encoder, the
    ``classifier`` and ``encoder_z2_z1``. An unobserved label is summed out of the ELBO under
    ``q(y | z1)``; observed labels (``labelled_tensors`` of :meth:`loss`) also train the
    classifier by cross-entropy, weighted by ``classification_ratio``. Inference and
    generative outputs are the VAE's (same keys), so everything that reads a VAE reads this.

    Parameters
    ----------
    n_input, n_batch
        As in :class:`VAE`.
    n_labels
        Number of labels (cell types), without the unlabeled category; at least 1. Label
        codes ``0 .. n_labels - 1`` are classes; unlabeled cells carry the code ``n_labels``.
    y_prior
        Prior probabilities of the labels, shape ``(1, n_labels)``; None: uniform.
    labels_groups, use_labels_groups
        scvi-tools' hierarchical label groups, not implemented: ``use_labels_groups`` must
        stay False (``labels_groups`` is then unused, as in scvi-tools).
    linear_classifier
        Make the classifier one linear layer of ``z1`` instead of a multi-layer perceptron.
    classifier_parameters
        Keyword arguments of :class:`~cellvi.nn.Classifier` overriding the defaults
        (``n_layers``, ``n_hidden``, ``dropout_rate``, ``logits=True``).
    **vae_kwargs
        Every other :class:`VAE` argument, by keyword, with the VAE's defaults. ``n_layers``,
        ``n_hidden`` and ``dropout_rate`` also shape the classifier and the ``z2`` networks;
        ``use_batch_norm`` / ``use_layer_norm`` say where hidden layers are normalised
        (``"encoder"``: encoders and classifier; ``"decoder"``: the decoders).
        ``dispersion="gene-label"`` is refused: unlabeled cells have no label to choose a
        dispersion by.
    """

    _entry_points: ClassVar[tuple[str, ...]] = (
        *VAE._entry_points,
        "classify",
        "classification_loss",
    )

    def __init__(
        self,
        n_input: int,
        n_batch: int = 0,
        n_labels: int = 0,
        y_prior: Tensor | None = None,
        labels_groups: Sequence[int] | None = None,
        use_labels_groups: bool = False,
        linear_classifier: bool = False,
        classifier_parameters: dict[str, Any] | None = None,
        **vae_kwargs: Any,
    ) -> None:
        if n_labels < 1:
            raise ValueError(
                f"SCANVAE needs at least one label to classify into, got n_labels={n_labels}."
            )
        if use_labels_groups:
            raise ValueError(
                "use_labels_groups=True (scvi-tools' label groups) is not supported; leave it "
                "False."
            )
        if vae_kwargs.get("dispersion") == "gene-label":
            raise ValueError(
                "dispersion='gene-label' is not supported by SCANVAE: unlabeled cells have no "
                "label to select a dispersion by. Use 'gene', 'gene-batch' or 'gene-cell'."
            )
        super().__init__(n_input, n_batch=n_batch, n_labels=n_labels, **vae_kwargs)
        options = {**_VAE_DEFAULTS, **vae_kwargs}
        shape = {"n_layers": options["n_layers"], "n_hidden": options["n_hidden"]}
        batch_norm_encoder, batch_norm_decoder = norm_flags(
            "use_batch_norm", options["use_batch_norm"]
        )
        layer_norm_encoder, layer_norm_decoder = norm_flags(
            "use_layer_norm", options["use_layer_norm"]
        )
        encoder_norms = {
            "use_batch_norm": batch_norm_encoder,
            "use_layer_norm": layer_norm_encoder,
        }
        self.use_labels_groups = use_labels_groups
        self.labels_groups = labels_groups

        classifier_kwargs = {
            **({"n_layers": 0, "n_hidden": 0} if linear_classifier else shape),
            "dropout_rate": options["dropout_rate"],
            "logits": True,
            **encoder_norms,
            **(classifier_parameters or {}),
        }
        self.classifier = Classifier(self.n_latent, n_labels=n_labels, **classifier_kwargs)
        # q(z2 | z1, y) and p(z1 | z2, y): the label enters as a covariate of every layer.
        self.encoder_z2_z1 = Encoder(
            self.n_latent,
            self.n_latent,
            n_cat_list=[n_labels],
            dropout_rate=options["dropout_rate"],
            return_dist=True,
            **shape,
            **encoder_norms,
        )
        self.decoder_z1_z2 = Decoder(
            self.n_latent,
            self.n_latent,
            n_cat_list=[n_labels],
            use_batch_norm=batch_norm_decoder,
            use_layer_norm=layer_norm_decoder,
            **shape,
        )
        if y_prior is None:
            y_prior = torch.full((1, n_labels), 1.0 / n_labels)
        y_prior = torch.as_tensor(y_prior, dtype=torch.float32).reshape(1, -1)
        if y_prior.shape[1] != n_labels:
            raise ValueError(
                f"y_prior must hold one probability per label, shape (1, {n_labels}); got "
                f"{tuple(y_prior.shape)}."
            )
        # A fixed prior, not learnt: a buffer, saved with the weights.
        self.register_buffer("y_prior", y_prior)

    # Classification ----------------------------------------------------------------------

    def classify(
        self,
        x: Tensor | None = None,
        batch_index: Tensor | None = None,
        cont_covs: Tensor | None = None,
        cat_covs: Tensor | None = None,
        use_posterior_mean: bool = True,
        qzm: Tensor | None = None,
        qzv: Tensor | None = None,
        observed_lib_size: Tensor | None = None,
    ) -> Tensor:
        """The classifier's logits ``(n_cells, n_labels)`` for counts ``x``.

        The classifier reads ``z1`` as the encoder gives it (the same covariates as
        :meth:`inference`): the posterior mean with ``use_posterior_mean`` (transformed
        like a draw for ``latent_distribution="ln"``), else a draw. A classifier built with
        ``logits=False`` returns probabilities instead. Minified data give the stored
        posterior (``qzm``, ``qzv``, ``observed_lib_size``) instead of ``x``.
        """
        outputs = self.inference(
            x,
            batch_index=batch_index,
            cont_covs=cont_covs,
            cat_covs=cat_covs,
            qzm=qzm,
            qzv=qzv,
            observed_lib_size=observed_lib_size,
        )
        if use_posterior_mean:
            z = outputs[MODULE_KEYS.QZ_KEY].loc
            if self.latent_distribution == "ln":
                z = F.softmax(z, dim=-1)
        else:
            z = outputs[MODULE_KEYS.Z_KEY]
        return self.classifier(z)

    def _log_probabilities(self, scores: Tensor) -> Tensor:
        """Log class probabilities from the classifier's output (logits or probabilities)."""
        if self.classifier.logits:
            return F.log_softmax(scores, dim=-1)
        return torch.log(scores.clamp_min(torch.finfo(scores.dtype).tiny))

    def classification_loss(self, labelled_tensors: dict[str, Tensor]) -> tuple[Tensor, ...]:
        """Cross-entropy of the classifier on labelled cells.

        Returns ``(loss, true_labels, logits)``: the mean cross-entropy, the labels
        ``(n, 1)`` and the logits ``(n, n_labels)`` (log-probabilities for a classifier that
        returns probabilities).
        """
        inputs = self._get_inference_input(labelled_tensors)
        logits = self._log_probabilities(self.classify(**inputs))
        y = labelled_tensors[REGISTRY_KEYS.LABELS_KEY]
        return F.nll_loss(logits, y.reshape(-1).long()), y, logits

    # Loss --------------------------------------------------------------------------------

    @unsupported_if_adata_minified
    def loss(
        self,
        tensors: dict[str, Tensor],
        inference_outputs: dict[str, Any],
        generative_outputs: dict[str, Any],
        kl_weight: float | Tensor = 1.0,
        labelled_tensors: dict[str, Tensor] | None = None,
        classification_ratio: float | None = None,
    ) -> LossOutput:
        """Negative ELBO with the label summed out, plus the weighted classification loss.

        Per cell, with ``p = q(y | z1)``: the reconstruction term is
        ``-log p(x | z1) + log q(z1 | x) + sum_y p_y (-log p(z1 | z2_y, y))`` and the KL term
        ``sum_y p_y KL(q(z2 | z1, y) || N(0, I)) + KL(p || y_prior)`` (+ the library KL).
        ``loss`` is the cell mean of ``reconstruction + kl_weight * KL``, plus
        ``classification_ratio`` times the cross-entropy of ``labelled_tensors`` when given.
        """
        px: Distribution = generative_outputs[MODULE_KEYS.PX_KEY]
        qz1: Normal = inference_outputs[MODULE_KEYS.QZ_KEY]
        z1: Tensor = inference_outputs[MODULE_KEYS.Z_KEY]
        x = dense_counts(tensors[REGISTRY_KEYS.X_KEY])
        n_cells, n_labels = z1.shape[-2], self.n_labels

        # Every cell under every label: label-major blocks of the n cells.
        codes = torch.arange(n_labels, device=z1.device).repeat_interleave(n_cells)
        z1s = z1.repeat(n_labels, 1) if z1.dim() == 2 else z1.repeat(1, n_labels, 1)
        qz2, z2 = self.encoder_z2_z1(z1s, codes)
        pz1_m, pz1_v = self.decoder_z1_z2(z2, codes)
        kl_z2 = _per_label(kl_divergence(qz2, Normal(0.0, 1.0)).sum(-1), n_labels)
        nll_z1 = _per_label(-Normal(pz1_m, pz1_v.sqrt()).log_prob(z1s).sum(-1), n_labels)

        log_probs = self._log_probabilities(self.classifier(z1))
        probs = log_probs.exp()
        reconstruction_loss = -_log_likelihood_sum(px, x).reshape(z1.shape[:-1])
        reconstruction_loss = (
            reconstruction_loss + qz1.log_prob(z1).sum(-1) + (nll_z1 * probs).sum(-1)
        )
        kl_y = kl_divergence(
            Categorical(probs=probs), Categorical(probs=self.y_prior.expand_as(probs))
        )
        kl_z = (kl_z2 * probs).sum(-1) + kl_y
        if self.use_observed_lib_size:
            kl_library = torch.zeros_like(kl_z)
        else:
            kl_library = kl_divergence(
                inference_outputs[MODULE_KEYS.QL_KEY], generative_outputs[MODULE_KEYS.PL_KEY]
            ).sum(-1)
        loss = torch.mean(reconstruction_loss + kl_weight * (kl_z + kl_library))
        kl_local = {MODULE_KEYS.KL_Z_KEY: kl_z, MODULE_KEYS.KL_L_KEY: kl_library}
        if labelled_tensors is None:
            return LossOutput(
                loss=loss,
                reconstruction_loss=reconstruction_loss,
                kl_local=kl_local,
                n_obs_minibatch=n_cells,
            )
        if classification_ratio is None:
            raise ValueError("labelled_tensors were given without a classification_ratio.")
        ce_loss, true_labels, logits = self.classification_loss(labelled_tensors)
        return LossOutput(
            loss=loss + classification_ratio * ce_loss,
            reconstruction_loss=reconstruction_loss,
            kl_local=kl_local,
            classification_loss=ce_loss,
            true_labels=true_labels,
            logits=logits,
            n_obs_minibatch=n_cells,
        )

    # Loading -----------------------------------------------------------------------------

    def on_load(
        self, state_dict: dict[str, Tensor], registry: dict[str, Any], example_batch: Any
    ) -> None:
        """Give models saved by scvi-tools before 1.1 their probability-valued classifier.

        Those classifiers ended in a softmax, and their weights were trained that way.
        """
        version = registry.get("scvi_version")
        if version is None or _release(version) >= _FIRST_LOGITS_VERSION:
            return
        if self.classifier.logits:
            self.classifier.logits = False
            self.classifier.classifier.append(torch.nn.Softmax(dim=-1))

    def state_dict_from_scvi_tools(self, source: dict[str, Tensor]) -> dict[str, Tensor]:
        """This module's state dict from an scvi-tools ``SCANVAE``'s (same architecture)."""
        weights = super().state_dict_from_scvi_tools(source)
        weights.update(
            prefixed(classifier_weights(self.classifier, source, "classifier."), "classifier.")
        )
        weights.update(
            prefixed(
                encoder_weights(self.encoder_z2_z1, source, "encoder_z2_z1."), "encoder_z2_z1."
            )
        )
        weights.update(
            prefixed(
                self.decoder_z1_z2.weights_from_scvi_tools(source, "decoder_z1_z2."),
                "decoder_z1_z2.",
            )
        )
        weights["y_prior"] = take(source, "y_prior").reshape(self.y_prior.shape)
        return weights


def _per_label(values: Tensor, n_labels: int) -> Tensor:
    """``(..., n_labels * n)`` values in label-major blocks as ``(..., n, n_labels)``."""
    return values.reshape(*values.shape[:-1], n_labels, -1).transpose(-1, -2)


def _release(version: str) -> tuple[int, int]:
    """``(major, minor)`` of a version string such as ``"1.0.3"``."""
    major, minor = (version.split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)
