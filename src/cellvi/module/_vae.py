"""``VAE``: the scVI variational auto-encoder for raw counts."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributions import Distribution, Normal, Poisson, kl_divergence

from cellvi._constants import REGISTRY_KEYS
from cellvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial
from cellvi.module._constants import MODULE_KEYS
from cellvi.module._options import check_choice, norm_flags
from cellvi.module._tensors import dense_counts, latent_and_codes
from cellvi.module.base import BaseModuleClass, EmbeddingModuleMixin, LossOutput, auto_move_data
from cellvi.nn import DecoderSCVI, Encoder
from cellvi.nn._scvi_tools_weights import decoder_weights, encoder_weights, prefixed, take
from cellvi.utils import unsupported_if_adata_minified

Tensor = torch.Tensor
_DISPERSIONS = ("gene", "gene-batch", "gene-label", "gene-cell")
_LIKELIHOODS = ("zinb", "nb", "poisson", "normal")
_LATENTS = ("normal", "ln")
_BATCH_REPRESENTATIONS = ("one-hot", "embedding")


class VAE(EmbeddingModuleMixin, BaseModuleClass):
    """Variational auto-encoder of single-cell counts (scVI, Lopez et al. 2018).

    Where each covariate goes (the data flow)
    -----------------------------------------
    A minibatch is a dict of tensors keyed by ``REGISTRY_KEYS``:

    - ``X`` (counts, n x genes) feeds the encoders (``log1p`` first if ``log_variational``)
      and is what the likelihood scores. Its row sums are the observed library sizes.
    - ``batch`` (``batch_index``, an integer code per cell: which experimental batch the cell
      comes from, *not* the minibatch) always enters the **decoder**, as a one-hot added at
      every hidden layer (``deeply_inject_covariates``) or as a learnt embedding
      (``batch_representation="embedding"``). It enters the **encoders** only when
      ``encode_covariates=True``. It also selects the dispersion (``dispersion="gene-batch"``)
      and the library-size prior (``use_observed_lib_size=False``).
    - ``labels`` (``y``) enter neither network; they only select the dispersion when
      ``dispersion="gene-label"``.
    - ``extra_categorical_covs`` (``cat_covs``, one column per key, ``n_cats_per_cov``) go
      where the batch goes: the decoder always, the encoders if ``encode_covariates``.
    - ``extra_continuous_covs`` (``cont_covs``, ``n_continuous_cov`` columns) are
      concatenated to the decoder input ``z`` always and to the encoder input if
      ``encode_covariates``.
    - ``size_factor`` replaces the library size when ``use_size_factor_key``.

    Parameters
    ----------
    n_input
        Number of genes.
    n_batch
        Number of batches; 0 or 1 means no batch correction.
    n_labels
        Number of labels.
    n_hidden
        Nodes per hidden layer of the encoders and the decoder.
    n_latent
        Dimension of the latent space.
    n_layers
        Hidden layers of the encoders and the decoder.
    n_continuous_cov
        Number of continuous covariates.
    n_cats_per_cov
        Number of categories of each extra categorical covariate.
    dropout_rate
        Dropout rate of the encoders (the decoder uses none).
    dispersion
        ``"gene"`` (one per gene), ``"gene-batch"``, ``"gene-label"`` or ``"gene-cell"`` (the
        decoder predicts it per cell).
    log_variational
        Encode ``log1p(x)`` instead of ``x`` (numerical stability, not normalisation).
    gene_likelihood
        ``"zinb"``, ``"nb"``, ``"poisson"``, or ``"normal"`` for non-count data.
    latent_distribution
        ``"normal"`` or ``"ln"`` (logistic normal: ``z = softmax(u)``, ``u`` normal).
    encode_covariates
        Give the batch and the extra covariates to the encoders too.
    deeply_inject_covariates
        Add categorical covariates to every hidden layer, not only the first.
    batch_representation
        ``"one-hot"`` or ``"embedding"`` (a learnt vector per batch).
    use_batch_norm, use_layer_norm
        Where to normalise hidden layers: ``"encoder"``, ``"decoder"``, ``"both"``, ``"none"``.
    use_size_factor_key
        Scale the expression by the registered size factor instead of a library size.
    use_observed_lib_size
        Use each cell's total count as its library size; else infer a latent log-library with a
        log-normal prior per batch (``library_log_means`` / ``library_log_vars``).
    library_log_means, library_log_vars
        Arrays of shape (1, n_batch) (or (n_batch,)): mean and variance of the log library
        size of each batch.
    var_activation
        Positive map for the encoders' variances (default ``torch.exp``).
    extra_encoder_kwargs, extra_decoder_kwargs
        Further keyword arguments of ``Encoder`` and ``DecoderSCVI``.
    batch_embedding_kwargs
        Keyword arguments of the batch ``Embedding`` (default ``embedding_dim=5``).
    """

    def __init__(
        self,
        n_input: int,
        n_batch: int = 0,
        n_labels: int = 0,
        n_hidden: int = 128,
        n_latent: int = 10,
        n_layers: int = 1,
        n_continuous_cov: int = 0,
        n_cats_per_cov: Sequence[int] | None = None,
        dropout_rate: float = 0.1,
        dispersion: Literal["gene", "gene-batch", "gene-label", "gene-cell"] = "gene",
        log_variational: bool = True,
        gene_likelihood: Literal["zinb", "nb", "poisson", "normal"] = "zinb",
        latent_distribution: Literal["normal", "ln"] = "normal",
        encode_covariates: bool = False,
        deeply_inject_covariates: bool = True,
        batch_representation: Literal["one-hot", "embedding"] = "one-hot",
        use_batch_norm: Literal["encoder", "decoder", "none", "both"] = "both",
        use_layer_norm: Literal["encoder", "decoder", "none", "both"] = "none",
        use_size_factor_key: bool = False,
        use_observed_lib_size: bool = True,
        library_log_means: np.ndarray | None = None,
        library_log_vars: np.ndarray | None = None,
        var_activation: Callable[[Tensor], Tensor] | None = None,
        extra_encoder_kwargs: dict[str, Any] | None = None,
        extra_decoder_kwargs: dict[str, Any] | None = None,
        batch_embedding_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_choice("dispersion", dispersion, _DISPERSIONS)
        check_choice("gene_likelihood", gene_likelihood, _LIKELIHOODS)
        check_choice("latent_distribution", latent_distribution, _LATENTS)
        check_choice("batch_representation", batch_representation, _BATCH_REPRESENTATIONS)
        batch_norm_encoder, batch_norm_decoder = norm_flags("use_batch_norm", use_batch_norm)
        layer_norm_encoder, layer_norm_decoder = norm_flags("use_layer_norm", use_layer_norm)
        # A Poisson likelihood has no dispersion at all, so it accepts any dispersion option.
        uses_dispersion = gene_likelihood != "poisson"
        if uses_dispersion and dispersion == "gene-batch" and n_batch < 1:
            raise ValueError("dispersion='gene-batch' needs n_batch >= 1 (batches to index).")
        if uses_dispersion and dispersion == "gene-label" and n_labels < 1:
            raise ValueError("dispersion='gene-label' needs n_labels >= 1 (labels to index).")

        self.n_input = n_input
        self.n_batch = n_batch
        self.n_labels = n_labels
        self.n_latent = n_latent
        self.n_continuous_cov = n_continuous_cov
        self.n_cats_per_cov = list(n_cats_per_cov or [])
        self.dispersion = dispersion
        self.log_variational = log_variational
        self.gene_likelihood = gene_likelihood
        self.latent_distribution = latent_distribution
        self.encode_covariates = encode_covariates
        self.batch_representation = batch_representation
        self.use_size_factor_key = use_size_factor_key
        # How the model's data were minified (None: full data); minified data hold the latent
        # posterior instead of counts, and inference reads it (``_cached_inference``).
        self.minified_data_type: str | None = None
        # A size factor replaces the library entirely, so no library is modelled then.
        self.use_observed_lib_size = use_size_factor_key or use_observed_lib_size
        self._register_library_prior(library_log_means, library_log_vars)

        # What the decoder is asked for: only a likelihood with a dispersion reads one.
        self._decoder_dispersion = dispersion if uses_dispersion else "gene"
        # Per-gene dispersion tables, one row per batch / label (looked up by code).
        n_rows = {"gene": 1, "gene-batch": n_batch, "gene-label": n_labels}.get(dispersion, 0)
        self.px_r = (
            torch.nn.Parameter(torch.randn(n_rows, n_input))
            if n_rows and uses_dispersion
            else None
        )

        batch_width = 0
        if batch_representation == "embedding":
            embedding_kwargs = {"embedding_dim": 5, **(batch_embedding_kwargs or {})}
            self.init_embedding(REGISTRY_KEYS.BATCH_KEY, max(n_batch, 1), **embedding_kwargs)
            batch_width = self.batch_embedding.embedding_dim
            batch_as_category: list[int] = []
        else:
            batch_as_category = [n_batch]
        covariate_categories = batch_as_category + self.n_cats_per_cov

        encoder_input = n_input
        if encode_covariates:
            encoder_input += n_continuous_cov + batch_width
        encoder_kwargs = {
            "n_cat_list": covariate_categories if encode_covariates else None,
            "n_layers": n_layers,
            "n_hidden": n_hidden,
            "dropout_rate": dropout_rate,
            "inject_covariates": deeply_inject_covariates,
            "use_batch_norm": batch_norm_encoder,
            "use_layer_norm": layer_norm_encoder,
            "var_activation": var_activation,
            "return_dist": True,
            **(extra_encoder_kwargs or {}),
        }
        # The encoder draws the normal variable; the logistic-normal transform happens in
        # ``inference`` so that the untransformed draw stays available (``marginal_ll``).
        self.z_encoder = Encoder(encoder_input, n_latent, **encoder_kwargs)
        # Only a modelled library needs its own encoder.
        self.l_encoder = (
            None
            if self.use_observed_lib_size
            else Encoder(encoder_input, 1, **{**encoder_kwargs, "n_layers": 1})
        )
        self.decoder = DecoderSCVI(
            n_latent + n_continuous_cov + batch_width,
            n_input,
            n_cat_list=covariate_categories,
            n_layers=n_layers,
            n_hidden=n_hidden,
            inject_covariates=deeply_inject_covariates,
            use_batch_norm=batch_norm_decoder,
            use_layer_norm=layer_norm_decoder,
            scale_activation="softplus" if use_size_factor_key else "softmax",
            zero_inflation=gene_likelihood == "zinb",
            cell_dispersion=dispersion == "gene-cell" and uses_dispersion,
            **(extra_decoder_kwargs or {}),
        )

    def _register_library_prior(
        self, library_log_means: np.ndarray | None, library_log_vars: np.ndarray | None
    ) -> None:
        if self.use_observed_lib_size:
            self.library_log_means = self.library_log_vars = None
            return
        if library_log_means is None or library_log_vars is None:
            raise ValueError(
                "use_observed_lib_size=False models the library size and needs its prior: pass "
                "library_log_means and library_log_vars, arrays of shape (1, n_batch) holding "
                "the mean and variance of log library sizes per batch."
            )
        n_rows = max(self.n_batch, 1)
        tables = []
        for name, values in (
            ("library_log_means", library_log_means),
            ("library_log_vars", library_log_vars),
        ):
            # Checked in numpy: the module may be built on a device without data ("meta").
            table = np.asarray(values, dtype=np.float32)
            if table.size != n_rows or table.ndim > 2 or (table.ndim == 2 and table.shape[0] != 1):
                raise ValueError(
                    f"{name} must have shape (1, n_batch) = (1, {n_rows}), got {table.shape}."
                )
            tables.append(table.reshape(1, n_rows))
        if not np.isfinite(tables[0]).all() or not (tables[1] > 0).all():
            raise ValueError("library_log_means must be finite and library_log_vars positive.")
        # Kept as (1, n_batch), scvi-tools' layout (code written for it reads the shape).
        self.register_buffer("library_log_means", torch.as_tensor(tables[0]))
        self.register_buffer("library_log_vars", torch.as_tensor(tables[1]))
        self.register_load_state_dict_pre_hook(_library_prior_as_row)

    def state_dict_from_scvi_tools(self, source: dict[str, Tensor]) -> dict[str, Tensor]:
        """This VAE's state dict from an scvi-tools 1.x ``VAE``'s (same architecture)."""
        weights = prefixed(encoder_weights(self.z_encoder, source, "z_encoder."), "z_encoder.")
        if self.l_encoder is not None:
            weights.update(
                prefixed(encoder_weights(self.l_encoder, source, "l_encoder."), "l_encoder.")
            )
        weights.update(prefixed(decoder_weights(self.decoder, source, "decoder."), "decoder."))
        if self.px_r is not None:
            # scvi-tools keeps one column per batch or label; cellvi one row.
            px_r = take(source, "px_r")
            weights["px_r"] = px_r[None] if px_r.dim() == 1 else px_r.T.contiguous()
        if self.batch_embedding is not None:
            key = "_embeddings_dict.batch.weight"
            weights[key] = take(source, key)
        if self.library_log_means is not None:
            for name in ("library_log_means", "library_log_vars"):
                weights[name] = take(source, name).reshape(1, -1)
        return weights

    # The inference and generative inputs -------------------------------------------------

    def _get_inference_input(self, tensors: dict[str, Tensor], **kwargs: Any) -> dict[str, Any]:
        if self.minified_data_type is not None:
            return {
                MODULE_KEYS.QZM_KEY: tensors[REGISTRY_KEYS.LATENT_QZM_KEY],
                MODULE_KEYS.QZV_KEY: tensors[REGISTRY_KEYS.LATENT_QZV_KEY],
                REGISTRY_KEYS.OBSERVED_LIB_SIZE: tensors[REGISTRY_KEYS.OBSERVED_LIB_SIZE],
            }
        return {
            MODULE_KEYS.X_KEY: dense_counts(tensors[REGISTRY_KEYS.X_KEY]),
            MODULE_KEYS.BATCH_INDEX_KEY: tensors.get(REGISTRY_KEYS.BATCH_KEY),
            **self._covariates(tensors),
        }

    def _covariates(self, tensors: dict[str, Tensor]) -> dict[str, Tensor | None]:
        """The extra covariates this module was built for (others in ``tensors`` are ignored)."""
        return {
            MODULE_KEYS.CONT_COVS_KEY: tensors[REGISTRY_KEYS.CONT_COVS_KEY]
            if self.n_continuous_cov
            else None,
            MODULE_KEYS.CAT_COVS_KEY: tensors[REGISTRY_KEYS.CAT_COVS_KEY]
            if self.n_cats_per_cov
            else None,
        }

    def _get_generative_input(
        self, tensors: dict[str, Tensor], inference_outputs: dict[str, Any], **kwargs: Any
    ) -> dict[str, Any]:
        return {
            **latent_and_codes(tensors, inference_outputs),
            MODULE_KEYS.SIZE_FACTOR_KEY: tensors.get(REGISTRY_KEYS.SIZE_FACTOR_KEY),
            **self._covariates(tensors),
        }

    def _covariate_codes(
        self,
        batch_index: Tensor | None,
        cat_covs: Tensor | None,
        n_cells: int,
        device: torch.device,
    ) -> tuple[Tensor, list[Tensor]]:
        """Batch codes (zeros when absent) and the columns of the extra categorical covariates."""
        if batch_index is None:
            batch_index = torch.zeros(n_cells, 1, dtype=torch.long, device=device)
        columns = list(cat_covs.long().unbind(dim=-1)) if cat_covs is not None else []
        if len(columns) != len(self.n_cats_per_cov):
            raise ValueError(
                f"This VAE was built for {len(self.n_cats_per_cov)} categorical covariates "
                f"(n_cats_per_cov={self.n_cats_per_cov}) but got {len(columns)}."
            )
        return batch_index, columns

    def _network_inputs(
        self, values: Tensor, batch_index: Tensor, columns: list[Tensor], cont_covs: Tensor | None
    ) -> tuple[Tensor, list[Tensor]]:
        """Append continuous covariates (and a batch embedding) to ``values``; list the codes."""
        extra = []
        if cont_covs is not None:
            extra.append(cont_covs.to(values.dtype))
        if self.batch_embedding is not None:
            extra.append(self.compute_embedding(REGISTRY_KEYS.BATCH_KEY, batch_index))
            return _concat(values, extra), columns
        return _concat(values, extra), [batch_index, *columns]

    # Inference ---------------------------------------------------------------------------

    def inference(
        self,
        x: Tensor | None = None,
        batch_index: Tensor | None = None,
        cont_covs: Tensor | None = None,
        cat_covs: Tensor | None = None,
        n_samples: int = 1,
        qzm: Tensor | None = None,
        qzv: Tensor | None = None,
        observed_lib_size: Tensor | None = None,
    ) -> dict[str, Any]:
        """Encode counts into the posterior ``qz`` (and ``ql``) and draw ``z`` and the library.

        Returns a dict with ``qz``, ``z`` (and ``untran_z``, the normal draw before the
        logistic-normal transform), ``ql`` (None for an observed library) and ``library``
        (the log library size). With ``n_samples > 1`` draws have a leading sample dimension.
        Given the stored posterior of minified data (``qzm``, ``qzv`` and
        ``observed_lib_size``) instead of counts, it draws from that posterior.
        """
        if qzm is not None:
            return self._cached_inference(qzm, qzv, observed_lib_size, n_samples)
        if x is None:
            raise ValueError("inference needs the counts x (or, for minified data, qzm and qzv).")
        batch_index, columns = self._covariate_codes(batch_index, cat_covs, x.shape[0], x.device)
        encoder_values = torch.log1p(x) if self.log_variational else x
        if self.encode_covariates:
            encoder_values, codes = self._network_inputs(
                encoder_values, batch_index, columns, cont_covs
            )
        else:
            codes = []
        qz, untran_z = self.z_encoder(encoder_values, *codes)
        if n_samples > 1:
            untran_z = qz.rsample((n_samples,))
        z = F.softmax(untran_z, dim=-1) if self.latent_distribution == "ln" else untran_z

        ql = None
        if self.use_observed_lib_size:
            library = torch.log(x.sum(dim=-1, keepdim=True))
            if n_samples > 1:
                library = library.expand(n_samples, *library.shape)
        else:
            ql, library = self.l_encoder(encoder_values, *codes)
            if n_samples > 1:
                library = ql.rsample((n_samples,))
        return {
            MODULE_KEYS.QZ_KEY: qz,
            MODULE_KEYS.Z_KEY: z,
            "untran_z": untran_z,
            MODULE_KEYS.QL_KEY: ql,
            MODULE_KEYS.LIBRARY_KEY: library,
        }

    def _cached_inference(
        self, qzm: Tensor, qzv: Tensor, observed_lib_size: Tensor, n_samples: int = 1
    ) -> dict[str, Any]:
        """Inference from a stored posterior ``N(qzm, qzv)`` and observed library sizes.

        The draws are not reparameterised: nothing upstream of a stored posterior trains.
        """
        qz = Normal(qzm, qzv.sqrt())
        untran_z = qz.sample() if n_samples == 1 else qz.sample((n_samples,))
        z = F.softmax(untran_z, dim=-1) if self.latent_distribution == "ln" else untran_z
        library = torch.log(observed_lib_size.reshape(-1, 1))
        if n_samples > 1:
            library = library.expand(n_samples, *library.shape)
        return {
            MODULE_KEYS.QZ_KEY: qz,
            MODULE_KEYS.Z_KEY: z,
            "untran_z": untran_z,
            MODULE_KEYS.QL_KEY: None,
            MODULE_KEYS.LIBRARY_KEY: library,
        }

    # Generative model --------------------------------------------------------------------

    def generative(
        self,
        z: Tensor,
        library: Tensor,
        batch_index: Tensor | None = None,
        cont_covs: Tensor | None = None,
        cat_covs: Tensor | None = None,
        size_factor: Tensor | None = None,
        y: Tensor | None = None,
        transform_batch: int | None = None,
    ) -> dict[str, Distribution | None]:
        """Decode ``z`` into the count distribution ``px`` and the priors ``pz`` and ``pl``.

        Parameters
        ----------
        z, library
            Latent sample and log library size from ``inference``.
        batch_index, cont_covs, cat_covs, y
            Covariates of the cells (see the class docstring for where each goes).
        size_factor
            Size factors (natural scale), used instead of the library if
            ``use_size_factor_key``.
        transform_batch
            Decode every cell as if it came from this batch (counterfactual expression).
        """
        batch_index, decoder_values, codes, library = self._decoder_inputs(
            z, library, batch_index, cont_covs, cat_covs, size_factor, transform_batch
        )
        px_scale, px_r, px_rate, px_dropout = self.decoder(
            self._decoder_dispersion, decoder_values, library, *codes
        )
        if self.gene_likelihood == "poisson":
            px = Poisson(px_rate)
        else:
            if self.dispersion != "gene-cell":
                px_r = self._dispersion_table(batch_index, y)
            px = self._likelihood(px_scale, torch.exp(px_r), px_rate, px_dropout)

        pz = Normal(torch.zeros_like(z), torch.ones_like(z))
        pl = None
        if not self.use_observed_lib_size:
            prior_rows = batch_index.long().reshape(-1)
            pl = Normal(
                self.library_log_means.T[prior_rows], self.library_log_vars.T[prior_rows].sqrt()
            )
        return {MODULE_KEYS.PX_KEY: px, MODULE_KEYS.PZ_KEY: pz, MODULE_KEYS.PL_KEY: pl}

    @auto_move_data
    def decode_expression(
        self,
        generative_inputs: dict[str, Tensor | None],
        transform_batch: int | None = None,
        key: Literal["scale", "mu"] = "scale",
    ) -> Tensor:
        """Normalized expression (``"scale"``) or mean counts (``"mu"``) of ``px``.

        Takes what ``_get_generative_input`` gives ``generative`` and returns what its ``px``
        holds. Expression queries read nothing else of the likelihood, so only the scale head
        is decoded: no dispersion or zero-inflation head (for ZINB, half of the decoding) and
        no priors.
        """
        _, decoder_values, codes, library = self._decoder_inputs(
            generative_inputs[MODULE_KEYS.Z_KEY],
            generative_inputs[MODULE_KEYS.LIBRARY_KEY],
            generative_inputs.get(MODULE_KEYS.BATCH_INDEX_KEY),
            generative_inputs.get(MODULE_KEYS.CONT_COVS_KEY),
            generative_inputs.get(MODULE_KEYS.CAT_COVS_KEY),
            generative_inputs.get(MODULE_KEYS.SIZE_FACTOR_KEY),
            transform_batch,
        )
        px_scale = self.decoder.scale(decoder_values, *codes)
        return px_scale if key == "scale" else torch.exp(library) * px_scale

    def _decoder_inputs(
        self,
        z: Tensor,
        library: Tensor,
        batch_index: Tensor | None,
        cont_covs: Tensor | None,
        cat_covs: Tensor | None,
        size_factor: Tensor | None,
        transform_batch: int | None,
    ) -> tuple[Tensor, Tensor, list[Tensor], Tensor]:
        """Batch codes, decoder input, covariate codes and log library of a decoding."""
        batch_index, columns = self._covariate_codes(batch_index, cat_covs, z.shape[-2], z.device)
        if transform_batch is not None:
            batch_index = torch.full_like(batch_index, int(transform_batch))
        if cont_covs is not None and z.dim() == 3:
            cont_covs = cont_covs.expand(z.shape[0], *cont_covs.shape)
        if self.use_size_factor_key:
            if size_factor is None:
                raise ValueError("use_size_factor_key=True but no size_factor was given.")
            library = torch.log(size_factor)
        decoder_values, codes = self._network_inputs(z, batch_index, columns, cont_covs)
        return batch_index, decoder_values, codes, library

    def _dispersion_table(self, batch_index: Tensor, y: Tensor | None) -> Tensor:
        if self.dispersion == "gene":
            return self.px_r[0]
        if self.dispersion == "gene-batch":
            return self.px_r[batch_index.long().reshape(-1)]
        if y is None:
            raise ValueError("dispersion='gene-label' needs the labels (y) of the cells.")
        return self.px_r[y.long().reshape(-1)]

    def _likelihood(
        self, px_scale: Tensor, px_r: Tensor, px_rate: Tensor, px_dropout: Tensor | None
    ) -> Distribution:
        if self.gene_likelihood == "zinb":
            return ZeroInflatedNegativeBinomial(
                mu=px_rate, theta=px_r, zi_logits=px_dropout, scale=px_scale
            )
        if self.gene_likelihood == "nb":
            return NegativeBinomial(mu=px_rate, theta=px_r, scale=px_scale)
        return Normal(px_rate, px_r)

    # Loss and evaluation -----------------------------------------------------------------

    @unsupported_if_adata_minified
    def loss(
        self,
        tensors: dict[str, Tensor],
        inference_outputs: dict[str, Any],
        generative_outputs: dict[str, Any],
        kl_weight: float | Tensor = 1.0,
    ) -> LossOutput:
        """Negative ELBO: reconstruction + ``kl_weight`` * KL(z) + KL(library), cell mean."""
        x = dense_counts(tensors[REGISTRY_KEYS.X_KEY])
        reconstruction_loss = -_log_likelihood_sum(generative_outputs[MODULE_KEYS.PX_KEY], x)
        kl_z = kl_divergence(
            inference_outputs[MODULE_KEYS.QZ_KEY], generative_outputs[MODULE_KEYS.PZ_KEY]
        ).sum(-1)
        if self.use_observed_lib_size:
            kl_library = torch.zeros_like(kl_z)
        else:
            kl_library = kl_divergence(
                inference_outputs[MODULE_KEYS.QL_KEY], generative_outputs[MODULE_KEYS.PL_KEY]
            ).sum(-1)
        loss = torch.mean(reconstruction_loss + kl_weight * kl_z + kl_library)
        return LossOutput(
            loss=loss,
            reconstruction_loss=reconstruction_loss,
            kl_local={MODULE_KEYS.KL_Z_KEY: kl_z, MODULE_KEYS.KL_L_KEY: kl_library},
        )

    @torch.inference_mode()
    def sample(
        self, tensors: dict[str, Tensor], n_samples: int = 1, max_poisson_rate: float = 1e8
    ) -> Tensor:
        """Draw counts from the posterior predictive ``p(x_new | x)``.

        Returns a CPU tensor of shape (n_cells, n_genes), or (n_cells, n_genes, n_samples)
        when ``n_samples > 1``.
        """
        _, generative_outputs = self.forward(
            tensors, inference_kwargs={"n_samples": n_samples}, compute_loss=False
        )
        px = generative_outputs[MODULE_KEYS.PX_KEY]
        if isinstance(px, Poisson):
            px = Poisson(px.rate.clamp(max=max_poisson_rate))
        draws = px.sample()
        if n_samples > 1:
            draws = draws.permute(1, 2, 0)
        return draws.cpu()

    @torch.inference_mode()
    def marginal_ll(
        self,
        tensors: dict[str, Tensor],
        n_mc_samples: int,
        return_mean: bool = False,
        n_mc_samples_per_pass: int = 1,
    ) -> Tensor | float:
        """Importance-sampling estimate of ``log p(x)`` per cell, with ``q(z, l | x)`` as proposal.

        ``log p(x) ~= logsumexp_k [log p(x|z_k,l_k) + log p(z_k) + log p(l_k) - log q(z_k,l_k|x)]
        - log K``. It is a stochastic lower bound that tightens to ``log p(x)`` as
        ``n_mc_samples`` grows, and is never below the ELBO in expectation.
        """
        if n_mc_samples < 1 or n_mc_samples_per_pass < 1:
            raise ValueError("n_mc_samples and n_mc_samples_per_pass must be >= 1.")
        x = dense_counts(tensors[REGISTRY_KEYS.X_KEY])
        log_weights = []
        remaining = n_mc_samples
        while remaining > 0:
            n_pass = min(n_mc_samples_per_pass, remaining)
            remaining -= n_pass
            inference_outputs, generative_outputs = self.forward(
                tensors, inference_kwargs={"n_samples": n_pass}, compute_loss=False
            )
            untran_z = _with_sample_dim(inference_outputs["untran_z"], n_pass)
            qz = inference_outputs[MODULE_KEYS.QZ_KEY]
            log_weight = (
                _log_likelihood_sum(generative_outputs[MODULE_KEYS.PX_KEY], x).reshape(
                    n_pass, x.shape[0]
                )
                + Normal(torch.zeros_like(untran_z), 1.0).log_prob(untran_z).sum(-1)
                - qz.log_prob(untran_z).sum(-1)
            )
            if not self.use_observed_lib_size:
                library = _with_sample_dim(inference_outputs[MODULE_KEYS.LIBRARY_KEY], n_pass)
                log_weight = (
                    log_weight
                    + generative_outputs[MODULE_KEYS.PL_KEY].log_prob(library).sum(-1)
                    - inference_outputs[MODULE_KEYS.QL_KEY].log_prob(library).sum(-1)
                )
            log_weights.append(log_weight)
        log_lik = torch.logsumexp(torch.cat(log_weights, dim=0), dim=0) - math.log(n_mc_samples)
        return log_lik.mean().item() if return_mean else log_lik


def _library_prior_as_row(
    module: torch.nn.Module, state_dict: dict[str, Tensor], prefix: str, *args: Any
) -> None:
    """Read library priors saved by cellvi 0.1 as columns, ``(n_batch, 1)``, as rows."""
    for name in ("library_log_means", "library_log_vars"):
        key = f"{prefix}{name}"
        if key in state_dict and state_dict[key].dim() == 2 and state_dict[key].shape[1] == 1:
            state_dict[key] = state_dict[key].reshape(1, -1)


def _log_likelihood_sum(px: Distribution, x: Tensor) -> Tensor:
    """Per-cell log-likelihood of ``x``; NB and ZINB (a subclass) use their fused sum."""
    if isinstance(px, NegativeBinomial):
        return px.log_prob_sum(x)
    return px.log_prob(x).sum(-1)


def _concat(values: Tensor, extra: list[Tensor]) -> Tensor:
    if not extra:
        return values
    leading = values.shape[:-1]
    return torch.cat(
        [values, *(tensor.expand(*leading, tensor.shape[-1]) for tensor in extra)], dim=-1
    )


def _with_sample_dim(draws: Tensor, n_samples: int) -> Tensor:
    return draws if n_samples > 1 else draws.unsqueeze(0)
