"""``ExpressionDrawsMixin``: posterior draws of decoded expression, one minibatch at a time.

The engine under :class:`RNASeqMixin`'s queries. Each distinct cell is encoded once, with as
many latent draws as it has rows, and only those rows are decoded, in pieces of at most
``_DECODE_BUDGET`` entries written into their final array as they come: nothing larger than
a piece is ever held on the device, and there is no concatenation of per-piece results.
Modules that can decode the expression alone (``decode_expression``) skip the likelihood's
other heads.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from anndata import AnnData
from torch.distributions import Normal, Poisson

from cellvi._constants import REGISTRY_KEYS
from cellvi._settings import settings
from cellvi.dataloaders import AnnDataLoader
from cellvi.model.base._differential_importance import importance_log_weights
from cellvi.module._constants import MODULE_KEYS
from cellvi.utils import track

Tensor = torch.Tensor
Minibatches = Iterable[dict[str, Tensor]]
# Decoded entries (rows x genes x transform batches) one decoding step may hold at once: 4 MB
# of float32, so that pieces stay in cache and the allocator reuses their memory instead of
# mapping (and faulting in) fresh pages for each; a small group asked for thousands of draws
# decodes in several pieces.
_DECODE_BUDGET = 1 << 20
IMPORTANCE_KEYS = ("max_cells", "truncation", "n_mc_samples", "n_mc_samples_per_pass")


class ExpressionDrawsMixin:
    """Batched posterior draws of normalized expression (or mean counts) for model queries.

    For models whose module has ``inference`` / ``generative`` with a count distribution
    ``px``; :class:`RNASeqMixin` builds its queries on it.
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

    def _validated_loader(
        self,
        adata: AnnData,
        cells: np.ndarray,
        batch_size: int | None,
        data_loader_kwargs: dict[str, Any],
    ) -> AnnDataLoader:
        """A loader over ``cells`` of an AnnData the query has already validated.

        ``_make_data_loader`` would validate the registration again, which costs as much as
        sampling a small group. Without a ``batch_size``, a minibatch holds
        ``cellvi.settings.batch_size`` cells, or more while its dense counts stay within
        ``_DECODE_BUDGET`` entries: each minibatch costs a fixed overhead of loading and of
        the module's Python, which dominates for small minibatches of few genes.
        """
        manager = self.get_anndata_manager(adata, required=True)
        if batch_size is None:
            batch_size = max(settings.batch_size, _DECODE_BUDGET // max(1, adata.n_vars))
        return AnnDataLoader(
            manager, indices=cells, batch_size=batch_size, shuffle=False, **data_loader_kwargs
        )

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
        # A module that can decode the expression alone skips the likelihood's other heads.
        decode_expression = getattr(self.module, "decode_expression", None)
        total = None
        for batch in batches:
            batch_kwargs = self._get_transform_batch_gen_kwargs(batch)
            if decode_expression is not None:
                values = decode_expression(generative_inputs, **batch_kwargs, key=key)
            else:
                outputs = self.module.generative(**generative_inputs, **batch_kwargs)
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
        loader = self._validated_loader(adata, unique, batch_size, data_loader_kwargs)
        written, first_cell = 0, 0
        for tensors in progress(loader, silent, "Sampling"):
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

    # Aggregate posterior draws -----------------------------------------------------------

    @torch.inference_mode()
    def _aggregate_posterior_draws(
        self,
        adata: AnnData,
        cells: np.ndarray,
        batches: Sequence[int | None],
        n_samples_overall: int,
        key: Literal["scale", "mu"] = "scale",
        genes: Tensor | None = None,
        n_genes: int | None = None,
        batch_size: int | None = None,
        weights: Literal["uniform", "importance"] | None = None,
        silent: bool = True,
        data_loader_kwargs: dict[str, Any] | None = None,
        **importance_weighting_kwargs: Any,
    ) -> np.ndarray:
        """``n_samples_overall`` draws of expression, each from a cell of ``cells`` taken at
        random: a sample of the cells' aggregate posterior, ``(n_samples_overall, n_genes)``.

        ``adata`` must already be validated (differential expression calls this once per
        population, after validating once). With ``weights="importance"`` the draws are
        resampled by their importance weights.
        """
        check_count("n_samples_overall", n_samples_overall)
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
            adata.n_vars if n_genes is None else n_genes,
            batch_size,
            importance,
            silent,
            data_loader_kwargs or {},
        )
        if log_weights is not None:
            probabilities = np.exp(log_weights - log_weights.max())
            probabilities /= probabilities.sum()
            rows = rows[np.random.choice(len(rows), size=len(rows), p=probabilities)]
        return rows

    def _population_draws(
        self,
        adata: AnnData,
        indices: np.ndarray,
        transform_batch: Any,
        n_samples_overall: int,
        **kwargs: Any,
    ) -> np.ndarray:
        """The ``model_fn`` of differential expression: aggregate posterior draws of a
        population's normalized expression, decoded in ``transform_batch`` (None: own)."""
        batches = self._batch_codes(adata, transform_batch)
        return self._aggregate_posterior_draws(
            adata, np.asarray(indices), batches, n_samples_overall, **kwargs
        )

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
        for tensors in progress(minibatches, silent, "Sampling"):
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


def progress(items: Iterable[Any], silent: bool, description: str) -> Iterator[Any]:
    """Iterate with a progress bar (shown once the query runs long) unless ``silent``."""
    yield from track(items, description, silent)


def check_weights(weights: str | None, importance_weighting_kwargs: dict[str, Any]) -> None:
    """Reject an unknown ``weights`` or importance weighting option before any sampling."""
    if weights not in (None, "uniform", "importance"):
        raise ValueError(f"weights must be 'uniform' or 'importance', got {weights!r}.")
    unknown = set(importance_weighting_kwargs) - set(IMPORTANCE_KEYS)
    if unknown:
        raise TypeError(
            f"Unknown arguments {sorted(unknown)}; importance weighting takes "
            f"{list(IMPORTANCE_KEYS)}."
        )


def check_count(name: str, value: int) -> None:
    """Reject a count argument (``n_samples``, ...) that is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
