"""``RNASeqMixin``: what users query a trained count model for, after the latent space.

Normalized (decoded) expression, posterior predictive counts, likelihood parameters, latent
library sizes, gene-gene correlations and differential expression, with scvi-tools 1.4.2's
signatures. Every query draws its posterior samples in batched tensors on the model's
device, one minibatch of cells at a time (:class:`ExpressionDrawsMixin`): nothing larger than
a minibatch times the samples asked for is ever held on the device.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from torch.distributions import Gamma, Normal, Poisson

from cellvi.data._indices import as_cell_indices
from cellvi.model.base._de_core import _de_core, scrna_raw_counts_properties
from cellvi.model.base._expression_draws import (
    ExpressionDrawsMixin,
    Minibatches,
    check_count,
    check_weights,
    normalized,
    progress,
)
from cellvi.model.base._queries import posterior_query
from cellvi.module._constants import MODULE_KEYS
from cellvi.utils import dependencies, unsupported_if_adata_minified

Tensor = torch.Tensor


class RNASeqMixin(ExpressionDrawsMixin):
    """Normalized expression, posterior predictive draws and differential expression.

    For models whose module has ``inference`` / ``generative`` with a count distribution
    ``px`` (``SCVI``, ``CondSCVI``); used together with :class:`VAEMixin`.
    """

    # Normalized expression -----------------------------------------------------------------

    @posterior_query(untrained="warn")
    @torch.inference_mode()
    def get_normalized_expression(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        transform_batch: Sequence[int | float | str] | int | float | str | None = None,
        gene_list: Sequence[str] | None = None,
        library_size: float | Literal["latent"] = 1,
        n_samples: int = 1,
        n_samples_overall: int | None = None,
        weights: Literal["uniform", "importance"] | None = None,
        batch_size: int | None = None,
        return_mean: bool = True,
        return_numpy: bool | None = None,
        silent: bool = True,
        dataloader: Minibatches | None = None,
        data_loader_kwargs: dict[str, Any] | None = None,
        **importance_weighting_kwargs: Any,
    ) -> np.ndarray | pd.DataFrame:
        r"""Normalized (decoded) expression of each cell, :math:`\rho_n` in the scVI paper.

        Parameters
        ----------
        adata
            AnnData with the training genes; None uses the training data.
        indices
            Cells to use (positions or a boolean mask); None uses all.
        transform_batch
            Decode every cell as if it came from this batch (a category of the batch column,
            or its code); a list averages the expression over those batches; None uses each
            cell's own batch.
        gene_list
            Return these genes only (in the order of ``adata.var_names``).
        library_size
            Scale the expression to this total count per cell; ``"latent"`` gives the mean
            counts at each cell's own (observed or latent) library size.
        n_samples
            Posterior draws per cell.
        n_samples_overall
            Instead, draw this many rows in all, each from a cell chosen at random among
            ``indices``: a sample of the group's aggregate posterior (used by differential
            expression).
        weights
            ``"uniform"`` (default) or ``"importance"``: with ``n_samples_overall``, resample
            the draws by importance weights towards the aggregate of the true posteriors.
        batch_size
            Minibatch size; None: ``cellvi.settings.batch_size`` cells, or more while the
            dense counts of a minibatch stay within about 4 MB (a million entries).
        return_mean
            Average the ``n_samples`` draws of each cell.
        return_numpy
            Return a numpy array instead of a DataFrame (cells x genes, with their names).
            Default: a DataFrame unless ``n_samples > 1`` without ``return_mean``, which is
            always a 3-D array ``(n_samples, n_cells, n_genes)``, or ``n_samples_overall``.
        silent
            Hide the progress bar.
        dataloader
            Minibatches of your own instead of ``adata`` (then every gene, own batches).
        data_loader_kwargs
            Further arguments of the data loader made for ``adata``.
        **importance_weighting_kwargs
            With ``weights="importance"``: ``max_cells`` (anchor cells, 1024),
            ``truncation`` (False), ``n_mc_samples`` (500) and ``n_mc_samples_per_pass``
            (250) of the anchors' marginal likelihoods.

        Returns
        -------
        ``(n_cells, n_genes)`` (a DataFrame by default), ``(n_samples, n_cells, n_genes)``
        with ``n_samples > 1`` and ``return_mean=False``, or ``(n_samples_overall, n_genes)``.
        """
        check_count("n_samples", n_samples)
        check_weights(weights, importance_weighting_kwargs)
        key, scaling = ("mu", 1.0) if library_size == "latent" else ("scale", library_size)
        if dataloader is not None:
            if n_samples_overall is not None:
                raise ValueError(
                    "n_samples_overall draws cells of adata; give adata, not a dataloader."
                )
            minibatches = self._query_minibatches(adata, indices, batch_size, dataloader)
            values = self._expression_per_cell(
                minibatches, None, n_samples, return_mean, [None], key, None, None, silent
            )
            return values * scaling if scaling != 1 else values
        adata = self._validate_anndata(adata)
        cells = as_cell_indices(indices, adata.n_obs)
        batches = self._batch_codes(adata, transform_batch)
        gene_positions = gene_positions_of(adata.var_names, gene_list)
        genes = (
            None if gene_positions is None else torch.as_tensor(gene_positions, device=self.device)
        )
        gene_names = adata.var_names if gene_positions is None else adata.var_names[gene_positions]
        loader_kwargs = data_loader_kwargs or {}

        if n_samples_overall is not None:
            if n_samples != 1:
                raise ValueError("Give n_samples or n_samples_overall, not both.")
            rows = self._aggregate_posterior_draws(
                adata,
                cells,
                batches,
                n_samples_overall,
                key=key,
                genes=genes,
                n_genes=len(gene_names),
                batch_size=batch_size,
                weights=weights,
                silent=silent,
                data_loader_kwargs=loader_kwargs,
                **importance_weighting_kwargs,
            )
            if scaling != 1:
                rows *= scaling
            if return_numpy is False:
                return pd.DataFrame(rows, columns=gene_names)
            return rows

        if n_samples > 1 and not return_mean:
            if return_numpy is False:
                warnings.warn(
                    "return_numpy must be True when n_samples > 1 and return_mean is False; "
                    "returning a numpy array.",
                    UserWarning,
                    stacklevel=3,
                )
            return_numpy = True
        loader = self._validated_loader(adata, cells, batch_size, loader_kwargs)
        values = self._expression_per_cell(
            loader,
            len(cells),
            n_samples,
            return_mean,
            batches,
            key,
            genes,
            len(gene_names),
            silent,
        )
        if scaling != 1:
            values *= scaling
        if return_numpy:
            return values
        return pd.DataFrame(values, columns=gene_names, index=adata.obs_names[cells])

    # Posterior predictive --------------------------------------------------------------------

    @dependencies("sparse")
    @posterior_query(untrained="warn")
    @torch.inference_mode()
    def posterior_predictive_sample(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        transform_batch: Sequence[int | float | str] | int | float | str | None = None,
        n_samples: int = 1,
        gene_list: Sequence[str] | None = None,
        batch_size: int | None = None,
        dataloader: Minibatches | None = None,
        silent: bool = True,
        **data_loader_kwargs: Any,
    ) -> Any:
        r"""Draw counts from the posterior predictive :math:`p(\hat{x} \mid x)`.

        Each draw takes a latent sample from :math:`q(z \mid x)` and counts from the
        likelihood given it. With several ``transform_batch`` the draws are averaged over
        those batches (so they are no longer whole numbers).

        Parameters
        ----------
        adata, indices, transform_batch, gene_list, batch_size, dataloader, silent
            As in :meth:`get_normalized_expression`.
        n_samples
            Draws per cell.
        **data_loader_kwargs
            Further arguments of the data loader made for ``adata``.

        Returns
        -------
        A ``sparse.GCXS`` array of shape ``(n_cells, n_genes)``, or
        ``(n_cells, n_genes, n_samples)`` when ``n_samples > 1``.
        """
        import sparse

        check_count("n_samples", n_samples)
        if dataloader is None:
            adata = self._validate_anndata(adata)
            batches = self._batch_codes(adata, transform_batch)
            positions = gene_positions_of(adata.var_names, gene_list)
            genes = None if positions is None else torch.as_tensor(positions, device=self.device)
        else:
            batches, genes = [None], None
        minibatches = self._query_minibatches(
            adata, indices, batch_size, dataloader, data_loader_kwargs
        )
        pieces = []
        for tensors in progress(minibatches, silent, "Sampling"):
            inference_outputs = self.module.inference(
                **self.module._get_inference_input(tensors), n_samples=n_samples
            )
            generative_inputs = self.module._get_generative_input(tensors, inference_outputs)
            total = None
            for batch in batches:
                outputs = self.module.generative(
                    **generative_inputs, **self._get_transform_batch_gen_kwargs(batch)
                )
                draws = _sample_counts(outputs[MODULE_KEYS.PX_KEY])
                if genes is not None:
                    draws = draws.index_select(-1, genes)
                total = draws if total is None else total + draws
            draws = total if len(batches) == 1 else total / len(batches)
            if n_samples > 1:
                draws = draws.permute(1, 2, 0)  # (cells, genes, samples)
            pieces.append(sparse.GCXS.from_numpy(draws.cpu().numpy()))
        return sparse.concatenate(pieces, axis=0)

    @posterior_query(untrained="warn")
    @torch.inference_mode()
    def _get_denoised_samples(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        n_samples: int = 25,
        batch_size: int = 64,
        rna_size_factor: int = 1000,
        transform_batch: int | None = None,
        dataloader: Minibatches | None = None,
        **data_loader_kwargs: Any,
    ) -> np.ndarray:
        """Draws of each cell's expression at library size ``rna_size_factor``, with the
        likelihood's over-dispersion (the Gamma of its Gamma-Poisson mixture) but no Poisson
        noise.

        Returns ``(n_cells, n_genes)``, or ``(n_cells, n_genes, n_samples)`` when
        ``n_samples > 1``. ``transform_batch`` is a batch code (or None).
        """
        check_count("n_samples", n_samples)
        if dataloader is not None:
            batch_size, transform_batch = None, None
        minibatches = self._query_minibatches(
            adata, indices, batch_size, dataloader, data_loader_kwargs
        )
        pieces = []
        for tensors in minibatches:
            inference_outputs = self.module.inference(
                **self.module._get_inference_input(tensors), n_samples=n_samples
            )
            generative_outputs = self.module.generative(
                **self.module._get_generative_input(tensors, inference_outputs),
                **self._get_transform_batch_gen_kwargs(transform_batch),
            )
            scale, theta = _scale_and_dispersion(generative_outputs, tensors, self.module)
            rate = rna_size_factor * scale
            if theta is None:  # no over-dispersion (Poisson): the rate itself
                draws = rate
            else:
                theta = theta.expand_as(rate)
                draws = Gamma(theta, theta / rate.clamp(min=1e-30)).sample()
            draws = draws.cpu().numpy()
            pieces.append(np.transpose(draws, (1, 2, 0)) if n_samples > 1 else draws)
        return np.concatenate(pieces, axis=0)

    @posterior_query(untrained="warn")
    @torch.inference_mode()
    def get_feature_correlation_matrix(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        n_samples: int = 10,
        batch_size: int = 64,
        rna_size_factor: int = 1000,
        transform_batch: Sequence[int | float | str] | int | float | str | None = None,
        correlation_type: Literal["spearman", "pearson"] = "spearman",
        silent: bool = True,
    ) -> pd.DataFrame:
        """Gene-gene correlations of denoised expression draws (scVI's uncertainty included).

        Parameters
        ----------
        adata, indices, batch_size
            As in :meth:`get_normalized_expression`.
        n_samples
            Draws per cell (see :meth:`_get_denoised_samples`).
        rna_size_factor
            Library size of the draws.
        transform_batch
            Batch(es) to decode as; with several, the correlation matrices are averaged.
        correlation_type
            ``"spearman"`` or ``"pearson"``.
        silent
            Hide the progress bar over batches.

        Returns
        -------
        A genes x genes DataFrame.
        """
        from scipy.stats import spearmanr

        if correlation_type not in ("spearman", "pearson"):
            raise ValueError(
                f"Unknown correlation type {correlation_type!r}: use 'spearman' or 'pearson'."
            )
        adata = self._validate_anndata(adata)
        matrices = []
        for batch in progress(self._batch_codes(adata, transform_batch), silent, "Batches"):
            draws = self._get_denoised_samples(
                adata=adata,
                indices=indices,
                n_samples=n_samples,
                batch_size=batch_size,
                rna_size_factor=rna_size_factor,
                transform_batch=batch,
            )
            if n_samples > 1:  # (cells, genes, samples) -> (samples * cells, genes)
                draws = np.transpose(draws, (2, 0, 1)).reshape(-1, draws.shape[1])
            if correlation_type == "pearson":
                matrix = np.corrcoef(draws, rowvar=False)
            else:
                matrix = spearmanr(draws).statistic
            matrices.append(np.atleast_2d(matrix))
        matrix = np.mean(np.stack(matrices), axis=0)
        return pd.DataFrame(matrix, index=adata.var_names, columns=adata.var_names)

    # Likelihood parameters and library sizes -------------------------------------------------

    @posterior_query(untrained="warn")
    @torch.inference_mode()
    def get_likelihood_parameters(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        n_samples: int | None = 1,
        give_mean: bool | None = False,
        batch_size: int | None = None,
        dataloader: Minibatches | None = None,
        **data_loader_kwargs: Any,
    ) -> dict[str, np.ndarray]:
        r"""Parameters of the likelihood :math:`p(x \mid z)` of each cell.

        Returns a dict with ``"mean"`` (mean counts), ``"dispersions"`` (the inverse
        dispersion ``theta``; the standard deviation for a normal likelihood; absent for
        Poisson) and ``"dropout"`` (zero-inflation probabilities, ZINB only), each
        ``(n_cells, n_genes)``, or ``(n_samples, n_cells, n_genes)`` for ``n_samples > 1``
        unless ``give_mean`` averages the draws.
        """
        n_samples = 1 if n_samples is None else n_samples
        check_count("n_samples", n_samples)
        likelihood = getattr(self.module, "gene_likelihood", "nb")
        parts: dict[str, list[np.ndarray]] = {"mean": [], "dispersions": [], "dropout": []}
        minibatches = self._query_minibatches(
            adata, indices, batch_size, dataloader, data_loader_kwargs
        )
        for tensors in minibatches:
            _, generative_outputs = self.module.forward(
                tensors, inference_kwargs={"n_samples": n_samples}, compute_loss=False
            )
            px = generative_outputs[MODULE_KEYS.PX_KEY]
            mean, dispersion, dropout = _likelihood_parameters(px)
            parts["mean"].append(mean.cpu().numpy())
            if dispersion is not None:
                parts["dispersions"].append(dispersion.expand_as(mean).cpu().numpy())
            if dropout is not None:
                parts["dropout"].append(dropout.cpu().numpy())
        result = {}
        for name, values in parts.items():
            if not values:
                continue
            array = np.concatenate(values, axis=-2)
            result[name] = array.mean(0) if give_mean and n_samples > 1 else array
        if likelihood == "poisson":
            result.pop("dispersions", None)
        return result

    @unsupported_if_adata_minified
    @posterior_query
    @torch.inference_mode()
    def get_latent_library_size(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        give_mean: bool = True,
        batch_size: int | None = None,
        dataloader: Minibatches | None = None,
        **data_loader_kwargs: Any,
    ) -> np.ndarray:
        r"""Library size of each cell, :math:`\ell_n` in the scVI paper, shape ``(n_cells, 1)``.

        ``give_mean`` returns the mean of the log-normal posterior of a modelled library
        (an error for a model that uses the observed library size); otherwise one posterior
        draw, or the observed total count.
        """
        libraries = []
        minibatches = self._query_minibatches(
            adata, indices, batch_size, dataloader, data_loader_kwargs
        )
        for tensors in minibatches:
            outputs = self.module.inference(**self.module._get_inference_input(tensors))
            if not give_mean:
                library = torch.exp(outputs[MODULE_KEYS.LIBRARY_KEY])
            else:
                ql = outputs.get(MODULE_KEYS.QL_KEY)
                if ql is None:
                    raise RuntimeError(
                        "This model uses the observed library size and has no posterior of "
                        "it; pass give_mean=False to get the observed library sizes."
                    )
                library = torch.exp(ql.loc + ql.scale.square() / 2)  # the log-normal mean
            libraries.append(library.cpu())
        return torch.cat(libraries).numpy()

    # Differential expression -----------------------------------------------------------------

    @posterior_query(untrained="warn")
    def differential_expression(
        self,
        adata: AnnData | None = None,
        groupby: str | None = None,
        group1: Sequence[Any] | Any | None = None,
        group2: Any | None = None,
        idx1: Sequence[int] | Sequence[bool] | str | None = None,
        idx2: Sequence[int] | Sequence[bool] | str | None = None,
        mode: Literal["vanilla", "change"] = "vanilla",
        delta: float = 0.25,
        batch_size: int | None = None,
        all_stats: bool = True,
        batch_correction: bool = False,
        batchid1: Sequence[Any] | None = None,
        batchid2: Sequence[Any] | None = None,
        fdr_target: float = 0.05,
        silent: bool = False,
        weights: Literal["uniform", "importance"] | None = "uniform",
        filter_outlier_cells: bool = False,
        importance_weighting_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> pd.DataFrame:
        r"""Differential expression between groups of cells, from posterior samples.

        ``mode="vanilla"`` (Lopez et al. 2018) estimates :math:`p(\rho_1 > \rho_2)` per gene
        and reports its log Bayes factor; ``mode="change"`` (Boyeau et al. 2019) estimates
        the posterior of the log2 fold change and the probability that it exceeds ``delta``
        in size (``proba_de``), and flags genes at a posterior expected false discovery
        rate of ``fdr_target``.

        Parameters
        ----------
        adata
            AnnData with the training genes; None uses the training data.
        groupby
            obs column of the groups. With ``group1`` None, each group is compared with the
            rest of the cells in turn.
        group1
            Group(s) of ``groupby`` to test, each against ``group2`` (default: the rest).
        group2
            Reference group; None means all other cells.
        idx1, idx2
            Instead of groups: the cells of each population, as positions, a boolean mask or
            a query string on ``adata.obs`` (e.g. ``"labels == 'B' & batch == 'b1'"``);
            without ``idx2`` the rest of the cells.
        mode
            ``"vanilla"`` or ``"change"``.
        delta
            Smallest absolute log2 fold change that counts as differential (change mode);
            None estimates it from the fold changes of all genes.
        batch_size
            Minibatch size of the posterior sampling (None: as in
            :meth:`get_normalized_expression`).
        all_stats
            Add the raw count columns (``raw_mean1``, ``non_zeros_proportion1``,
            ``raw_normalized_mean1``, ...).
        batch_correction
            Compare expression decoded in the same batches (``batchid1`` / ``batchid2``,
            default every batch) instead of each cell's own batch.
        batchid1, batchid2
            Batches to decode each population in, with ``batch_correction``.
        fdr_target
            Target of the posterior expected false discovery rate (change mode).
        silent
            Hide the progress bar.
        weights
            ``"uniform"`` or ``"importance"`` (resample the posterior draws by importance).
        filter_outlier_cells
            Drop cells that are outliers in the latent space (a robust covariance fit) first.
        importance_weighting_kwargs
            Options of the importance weights (see :meth:`get_normalized_expression`).
        **kwargs
            Options of :meth:`DifferentialComputation.get_bayes_factors` (``pseudocounts``,
            ``n_samples_overall``, ``test_mode``, ``cred_interval_lvls``, ...).

        Returns
        -------
        One row per gene (per comparison, when several), sorted by ``proba_de`` (change) or
        ``bayes_factor`` (vanilla), with scvi-tools' columns.
        """
        adata = self._validate_anndata(adata)
        importance_weighting_kwargs = importance_weighting_kwargs or {}
        check_weights(weights, importance_weighting_kwargs)
        model_fn = partial(
            self._population_draws,
            batch_size=batch_size,
            weights=weights,
            **importance_weighting_kwargs,
        )
        representation_fn = self.get_latent_representation if filter_outlier_cells else None
        return _de_core(
            self.get_anndata_manager(adata, required=True),
            model_fn,
            representation_fn,
            groupby,
            group1,
            group2,
            idx1,
            idx2,
            all_stats,
            scrna_raw_counts_properties,
            adata.var_names,
            mode,
            batchid1,
            batchid2,
            delta,
            batch_correction,
            fdr_target,
            silent,
            **kwargs,
        )


# Helpers ---------------------------------------------------------------------------------------


def gene_positions_of(var_names: pd.Index, gene_list: Sequence[str] | None) -> np.ndarray | None:
    """Positions of ``gene_list`` in ``var_names`` order (None: every gene); unknown genes fail."""
    if gene_list is None:
        return None
    if isinstance(gene_list, str):
        gene_list = [gene_list]
    wanted = pd.Index(gene_list)
    missing = wanted.difference(var_names)
    if len(missing):
        raise ValueError(
            f"{len(missing)} gene(s) of gene_list are not in adata.var_names: "
            f"{list(missing[:10])}."
        )
    return np.flatnonzero(var_names.isin(wanted))


def _likelihood_parameters(px: Any) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(mean, dispersion, dropout probability) of a likelihood; None where it has none."""
    if isinstance(px, Poisson):
        return px.rate, None, None
    if isinstance(px, Normal):
        return px.loc, px.scale, None
    dropout = px.zi_probs if hasattr(px, "zi_probs") else None
    return px.mu, px.theta, dropout


def _scale_and_dispersion(
    generative_outputs: dict[str, Any], tensors: dict[str, Tensor], module: Any
) -> tuple[Tensor, Tensor | None]:
    """Normalized expression and inverse dispersion (None for Poisson) of decoded cells.

    Modules written for scvi-tools before 1.0 return ``px_scale`` and ``px_r`` instead of a
    distribution; those are read too.
    """
    if MODULE_KEYS.PX_KEY not in generative_outputs:
        return generative_outputs["px_scale"], generative_outputs["px_r"]
    px = generative_outputs[MODULE_KEYS.PX_KEY]
    if isinstance(px, Normal):
        raise ValueError(
            "Denoised samples need a count likelihood; this model's is normal (gene_likelihood"
            "='normal'), which has no over-dispersion to sample."
        )
    theta = None if isinstance(px, Poisson) else px.theta
    return normalized(px, "scale", tensors, module), theta


def _sample_counts(px: Any) -> Tensor:
    """One draw of counts from the likelihood (Poisson rates capped as the module's sample)."""
    if isinstance(px, Poisson):
        return Poisson(px.rate.clamp(max=1e8)).sample()
    return px.sample()
