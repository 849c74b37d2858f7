"""``RNASeqMixin``: what users query a trained count model for, after the latent space.

Normalized (decoded) expression, posterior predictive counts, likelihood parameters, latent
library sizes, gene-gene correlations and differential expression, with scvi-tools 1.4.2's
signatures. Every query draws its posterior samples in batched tensors on the model's
device, one minibatch of cells at a time: nothing larger than a minibatch times the samples
asked for is ever held on the device, and results are written into their final array as they
come (no concatenation of per-minibatch pieces).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from torch.distributions import Gamma, Normal, Poisson

from cellvi._constants import REGISTRY_KEYS
from cellvi.data._indices import as_cell_indices
from cellvi.model.base._de_core import _de_core, scrna_raw_counts_properties
from cellvi.model.base._differential_importance import importance_log_weights
from cellvi.model.base._queries import posterior_query
from cellvi.module._constants import MODULE_KEYS
from cellvi.utils import dependencies, track

Tensor = torch.Tensor
Minibatches = Iterable[dict[str, Tensor]]
# Decoded entries (rows x genes x transform batches) one decoding step may hold at once: about
# 64 MB of float32, so a tiny group asked for thousands of draws still decodes in pieces.
_DECODE_BUDGET = 1 << 24
_IMPORTANCE_KEYS = ("max_cells", "truncation", "n_mc_samples", "n_mc_samples_per_pass")


class RNASeqMixin:
    """Normalized expression, posterior predictive draws and differential expression.

    For models whose module has ``inference`` / ``generative`` with a count distribution
    ``px`` (``SCVI``, ``CondSCVI``); used together with :class:`VAEMixin`.
    """

    # Batches and genes ---------------------------------------------------------------------

    def _get_transform_batch_gen_kwargs(self, batch: int | None) -> dict[str, Any]:
        """Generative keyword arguments that decode as if every cell came from ``batch``."""
        if batch is None:
            return {}
        if "transform_batch" in inspect.signature(self.module.generative).parameters:
            return {"transform_batch": batch}
        raise NotImplementedError(
            f"{type(self.module).__name__}.generative takes no transform_batch: this model "
            "cannot decode cells as if they came from another batch."
        )

    def _batch_codes(self, adata: AnnData, transform_batch: Any) -> list[int | None]:
        """Codes of the batches in ``transform_batch`` (None: each cell's own batch)."""
        manager = self.get_anndata_manager(adata, required=True)
        return batch_codes(manager, transform_batch)

    # Decoding ------------------------------------------------------------------------------

    def _decode(
        self,
        tensors: dict[str, Tensor],
        inference_outputs: dict[str, Any],
        batches: Sequence[int | None],
        key: Literal["scale", "mu"],
        genes: Tensor | None,
    ) -> Tensor:
        """Normalized expression (``key="scale"``) or mean counts, averaged over ``batches``."""
        generative_inputs = self.module._get_generative_input(tensors, inference_outputs)
        total = None
        for batch in batches:
            outputs = self.module.generative(
                **generative_inputs, **self._get_transform_batch_gen_kwargs(batch)
            )
            values = normalized(outputs[MODULE_KEYS.PX_KEY], key, tensors, self.module)
            if genes is not None:
                values = values.index_select(-1, genes)
            total = values if total is None else total + values
        return total if len(batches) == 1 else total / len(batches)

    def _expression_rows(
        self,
        adata: AnnData,
        cells: np.ndarray,
        batches: Sequence[int | None],
        key: Literal["scale", "mu"],
        genes: Tensor | None,
        n_genes: int,
        batch_size: int | None,
        importance: dict[str, Any] | None,
        silent: bool,
        data_loader_kwargs: dict[str, Any],
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """One posterior draw of the expression of each cell in ``cells`` (repeats allowed).

        Each distinct cell is encoded once, with as many latent draws as it has rows, and only
        those rows are decoded, in pieces of at most ``_DECODE_BUDGET`` entries. Returns the
        rows in the order of ``cells`` and, with ``importance``, each row's log importance
        weight.
        """
        unique, counts = np.unique(cells, return_counts=True)
        order = np.argsort(cells, kind="stable")  # rows grouped by cell, in ``unique`` order
        out = np.empty((len(cells), n_genes), dtype=np.float32)
        log_weights = np.empty(len(cells), dtype=np.float64) if importance is not None else None
        anchors = (
            self._importance_anchors(adata, unique, **importance)
            if importance is not None
            else None
        )
        rows_per_piece = max(1, _DECODE_BUDGET // max(1, n_genes * len(batches)))
        loader = self._make_data_loader(
            adata=adata, indices=unique, batch_size=batch_size, **data_loader_kwargs
        )
        written, first_cell = 0, 0
        for tensors in _progress(loader, silent, "Sampling"):
            n_cells = _n_cells(tensors)
            k = torch.as_tensor(counts[first_cell : first_cell + n_cells])
            first_cell += n_cells
            inference_outputs = self.module.inference(
                **self.module._get_inference_input(tensors), n_samples=int(k.max())
            )
            cell_of_row = torch.repeat_interleave(torch.arange(n_cells), k)
            draw_of_row = torch.arange(len(cell_of_row)) - torch.repeat_interleave(
                torch.cumsum(k, 0) - k, k
            )
            for start in range(0, len(cell_of_row), rows_per_piece):
                cell, draw = (
                    cell_of_row[start : start + rows_per_piece],
                    draw_of_row[start : start + rows_per_piece],
                )
                piece_tensors = _take_cells(tensors, cell, n_cells)
                piece_outputs = _take_draws(inference_outputs, cell, draw, int(k.max()))
                values = self._decode(piece_tensors, piece_outputs, batches, key, genes)
                rows = order[written : written + len(cell)]
                out[rows] = values.cpu().numpy()
                if anchors is not None:
                    px = self._piece_px(piece_tensors, piece_outputs, batches[0])
                    scale = normalized(px, "scale", piece_tensors, self.module)
                    log_weights[rows] = importance_log_weights(
                        _untransformed(piece_outputs), scale, px, anchors
                    ).numpy()
                written += len(cell)
        return out, log_weights

    def _piece_px(
        self, tensors: dict[str, Tensor], inference_outputs: dict[str, Any], batch: int | None
    ) -> Any:
        generative_inputs = self.module._get_generative_input(tensors, inference_outputs)
        outputs = self.module.generative(
            **generative_inputs, **self._get_transform_batch_gen_kwargs(batch)
        )
        return outputs[MODULE_KEYS.PX_KEY]

    def _importance_anchors(
        self,
        adata: AnnData,
        cells: np.ndarray,
        max_cells: int = 1024,
        truncation: bool = False,
        n_mc_samples: int = 500,
        n_mc_samples_per_pass: int = 250,
    ) -> dict[str, Any]:
        """Anchor cells of the importance weights (at most ``max_cells`` of ``cells``, at
        random): their posteriors, counts and marginal log-likelihoods."""
        anchors = (
            cells
            if len(cells) <= max_cells
            else np.sort(np.random.choice(cells, size=max_cells, replace=False))
        )
        log_px = self.get_marginal_ll(
            adata,
            indices=anchors,
            return_mean=False,
            n_mc_samples=n_mc_samples,
            n_mc_samples_per_pass=n_mc_samples_per_pass,
        )
        means, variances = self.get_latent_representation(adata, indices=anchors, return_dist=True)
        manager = self.get_anndata_manager(adata, required=True)
        x = manager.get_from_registry(REGISTRY_KEYS.X_KEY)[anchors]
        x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)
        device = self.device
        return {
            "log_px": log_px.to(device),
            "qz": Normal(
                torch.as_tensor(means, device=device),
                torch.as_tensor(variances, device=device).sqrt(),
            ),
            "x": torch.as_tensor(x, device=device),
            "truncation": truncation,
        }

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
            Minibatch size (default ``cellvi.settings.batch_size``).
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
        _check_count("n_samples", n_samples)
        if weights not in (None, "uniform", "importance"):
            raise ValueError(f"weights must be 'uniform' or 'importance', got {weights!r}.")
        unknown = set(importance_weighting_kwargs) - set(_IMPORTANCE_KEYS)
        if unknown:
            raise TypeError(
                f"Unknown arguments {sorted(unknown)}; importance weighting takes "
                f"{list(_IMPORTANCE_KEYS)}."
            )
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
            _check_count("n_samples_overall", n_samples_overall)
            if n_samples != 1:
                raise ValueError("Give n_samples or n_samples_overall, not both.")
            if len(cells) == 0:
                raise ValueError("No cells to draw from: indices selects none.")
            importance = None
            if weights == "importance":
                if len(batches) > 1:
                    raise NotImplementedError(
                        "Importance weights cannot be computed when expression is averaged "
                        "over several batches."
                    )
                importance = dict(importance_weighting_kwargs)
            chosen = cells[np.random.randint(len(cells), size=n_samples_overall)]
            rows, log_weights = self._expression_rows(
                adata,
                chosen,
                batches,
                key,
                genes,
                len(gene_names),
                batch_size,
                importance,
                silent,
                loader_kwargs,
            )
            if log_weights is not None:
                probabilities = np.exp(log_weights - log_weights.max())
                probabilities /= probabilities.sum()
                rows = rows[np.random.choice(len(rows), size=len(rows), p=probabilities)]
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
        loader = self._make_data_loader(
            adata=adata, indices=cells, batch_size=batch_size, **loader_kwargs
        )
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

    def _expression_per_cell(
        self,
        minibatches: Minibatches,
        n_cells: int | None,
        n_samples: int,
        return_mean: bool,
        batches: Sequence[int | None],
        key: Literal["scale", "mu"],
        genes: Tensor | None,
        n_genes: int | None,
        silent: bool,
    ) -> np.ndarray:
        """``n_samples`` draws per cell, averaged on the device with ``return_mean``."""
        keep_draws = n_samples > 1 and not return_mean
        pieces, out, start = [], None, 0
        for tensors in _progress(minibatches, silent, "Sampling"):
            inference_outputs = self.module.inference(
                **self.module._get_inference_input(tensors), n_samples=n_samples
            )
            values = self._decode(tensors, inference_outputs, batches, key, genes)
            if n_samples > 1 and return_mean:
                values = values.mean(0)
            values = values.cpu().numpy()
            if n_cells is None:  # a user's dataloader: sizes unknown in advance
                pieces.append(values)
                continue
            cell_axis = 1 if keep_draws else 0
            if out is None:
                shape = list(values.shape)
                shape[cell_axis] = n_cells
                out = np.empty(shape, dtype=np.float32)
            stop = start + values.shape[cell_axis]
            if keep_draws:
                out[:, start:stop] = values
            else:
                out[start:stop] = values
            start = stop
        if n_cells is None:
            return np.concatenate(pieces, axis=1 if keep_draws else 0)
        if out is None:
            return np.empty((n_cells, n_genes), dtype=np.float32)
        return out

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

        _check_count("n_samples", n_samples)
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
        for tensors in _progress(minibatches, silent, "Sampling"):
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
        _check_count("n_samples", n_samples)
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
        for batch in _progress(self._batch_codes(adata, transform_batch), silent, "Batches"):
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
        _check_count("n_samples", n_samples)
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
            Minibatch size of the posterior sampling.
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
        model_fn = partial(
            self.get_normalized_expression,
            return_numpy=True,
            n_samples=1,
            batch_size=batch_size,
            weights=weights,
            **(importance_weighting_kwargs or {}),
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


def batch_codes(manager: Any, transform_batch: Any) -> list[int | None]:
    """Codes of the batch categories in ``transform_batch``; None stays None (own batch)."""
    if (
        transform_batch is None
        or isinstance(transform_batch, str)
        or not isinstance(transform_batch, Iterable)
    ):
        transform_batch = [transform_batch]
    transform_batch = list(transform_batch)
    if not transform_batch:
        raise ValueError("transform_batch is an empty list: give batches, or None.")
    mapping = np.asarray(manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping)
    codes: list[int | None] = []
    for category in transform_batch:
        if category is None:
            codes.append(None)
            continue
        matches = np.flatnonzero(mapping == category)
        is_code = isinstance(category, int | np.integer) and not isinstance(category, bool)
        if len(matches) == 0 and is_code and 0 <= category < len(mapping):
            matches = [category]  # not a category itself: the code of one
        if len(matches) == 0:
            raise ValueError(
                f"{category!r} is not a batch of this model; its batches are {mapping.tolist()}."
            )
        codes.append(int(matches[0]))
    return codes


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


def normalized(
    px: Any, key: Literal["scale", "mu"], tensors: dict[str, Tensor], module: Any
) -> Tensor:
    """Normalized expression (``"scale"``) or mean counts (``"mu"``) of a likelihood ``px``.

    The NB and ZINB distributions carry both; a Poisson or normal likelihood carries its mean
    only, whose normalized form is the mean over the cell's library (or size factor).
    """
    if isinstance(px, Tensor):
        return px
    if hasattr(px, "get_normalized"):
        return px.get_normalized(key)
    if isinstance(px, Poisson):
        mean = px.rate
    elif isinstance(px, Normal):
        mean = px.loc
    else:
        raise NotImplementedError(f"No normalized expression for a {type(px).__name__}.")
    if key == "mu":
        return mean
    size_factor = tensors.get(REGISTRY_KEYS.SIZE_FACTOR_KEY)
    if getattr(module, "use_size_factor_key", False) and size_factor is not None:
        return mean / size_factor.to(mean.device, mean.dtype)
    return mean / mean.sum(-1, keepdim=True)


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


def _n_cells(tensors: dict[str, Tensor]) -> int:
    return int(tensors[REGISTRY_KEYS.X_KEY].shape[0])


def _take_cells(tensors: dict[str, Tensor], cells: Tensor, n_cells: int) -> dict[str, Tensor]:
    """The per-cell entries of a minibatch, one row per draw (other entries unchanged).

    The counts are left out: decoding reads the covariates only, and a copy of the counts
    per draw would be the largest tensor of the piece.
    """
    taken = {}
    for name, value in tensors.items():
        if name == REGISTRY_KEYS.X_KEY:
            continue
        if isinstance(value, Tensor) and value.dim() >= 1 and value.shape[0] == n_cells:
            if value.layout != torch.strided:
                value = value.to_dense()
            taken[name] = value[cells.to(value.device)]
        else:
            taken[name] = value
    return taken


def _take_draws(
    outputs: dict[str, Any], cells: Tensor, draws: Tensor, n_samples: int
) -> dict[str, Any]:
    """Inference outputs for the rows ``(draw, cell)``: each latent sample and library once."""
    taken = dict(outputs)
    for name in (MODULE_KEYS.Z_KEY, MODULE_KEYS.LIBRARY_KEY, "untran_z"):
        value = outputs.get(name)
        if not isinstance(value, Tensor):
            continue
        cell, draw = cells.to(value.device), draws.to(value.device)
        taken[name] = value[draw, cell] if n_samples > 1 else value[cell]
    return taken


def _untransformed(outputs: dict[str, Any]) -> Tensor:
    """The normal latent draw (before a logistic-normal transform), which ``qz`` scores."""
    value = outputs.get("untran_z")
    return value if isinstance(value, Tensor) else outputs[MODULE_KEYS.Z_KEY]


def _progress(items: Iterable[Any], silent: bool, description: str) -> Iterator[Any]:
    """Iterate with a progress bar (shown once the query runs long) unless ``silent``."""
    yield from track(items, description, silent)


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
