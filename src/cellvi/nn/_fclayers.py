"""Stack of fully connected layers conditioned on covariates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from cellvi._checks import check_positive_int

from ._codes import as_code_vector
from ._covariate_linear import CovariateLinear
from ._query_rows import RowSplit, TrainableRows, merge_rows_into_tables, split_rows_of_tables


class FCLayers(torch.nn.Module):
    """Fully connected layers ``n_in -> n_hidden -> ... -> n_out`` with covariate injection.

    Each layer is a linear map followed, when enabled, by ``BatchNorm1d``, ``LayerNorm``,
    the activation and ``Dropout``. Covariates extend the input of the first layer, and of
    every later layer when ``inject_covariates``. Categorical covariates enter as a weight
    row lookup, equivalent to (but cheaper than) concatenating their one-hot encodings; see
    :class:`~cellvi.nn._covariate_linear.CovariateLinear`.

    Parameters
    ----------
    n_in
        Width of the input.
    n_out
        Width of the output.
    n_cat_list
        Number of categories of each categorical covariate. Covariates with at most one
        category carry no information and are ignored (their tensors may be ``None``).
    n_cont
        Number of continuous covariates.
    n_layers
        Number of layers.
    n_hidden
        Width of the hidden layers.
    dropout_rate
        Dropout probability after each layer; no dropout module when 0.
    use_batch_norm
        Whether to apply ``BatchNorm1d`` after each linear map.
    use_layer_norm
        Whether to apply a ``LayerNorm`` without affine parameters after each linear map.
    use_activation
        Whether to apply ``activation_fn`` after each linear map.
    bias
        Whether the linear maps have a bias.
    inject_covariates
        Whether the covariates also enter every layer after the first.
    activation_fn
        Activation module class, instantiated once per layer.

    Notes
    -----
    Codes are not range-checked per call, which would need a device-to-host sync in the
    training loop; they are validated when data are registered. Inputs with leading sample
    dimensions ``(S, n, n_in)`` are normalised by batch norm over all ``S * n`` rows.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        n_cat_list: Sequence[int] | None = None,
        n_cont: int = 0,
        n_layers: int = 1,
        n_hidden: int = 128,
        dropout_rate: float = 0.1,
        use_batch_norm: bool = True,
        use_layer_norm: bool = False,
        use_activation: bool = True,
        bias: bool = True,
        inject_covariates: bool = True,
        activation_fn: type[torch.nn.Module] = torch.nn.ReLU,
    ) -> None:
        super().__init__()
        check_positive_int("n_layers", n_layers)
        self.n_cat_list = tuple(int(n) for n in n_cat_list or ())
        self.n_cont = n_cont
        self._active = tuple(i for i, n in enumerate(self.n_cat_list) if n > 1)
        active_n_cat = [self.n_cat_list[i] for i in self._active]
        has_covariates = bool(active_n_cat) or n_cont > 0
        if not has_covariates:
            self.injected_layers: tuple[int, ...] = ()
        elif inject_covariates:
            self.injected_layers = tuple(range(n_layers))
        else:
            self.injected_layers = (0,)

        dims = [n_in] + [n_hidden] * (n_layers - 1) + [n_out]
        self.linears = torch.nn.ModuleList()
        self.transforms = torch.nn.ModuleList()
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            injected = i in self.injected_layers
            self.linears.append(
                CovariateLinear(
                    d_in,
                    d_out,
                    n_cat_list=active_n_cat if injected else (),
                    n_cont=n_cont if injected else 0,
                    bias=bias,
                )
            )
            post: list[torch.nn.Module] = []
            if use_batch_norm:
                post.append(torch.nn.BatchNorm1d(d_out, momentum=0.01, eps=1e-3))
            if use_layer_norm:
                post.append(torch.nn.LayerNorm(d_out, elementwise_affine=False))
            if use_activation:
                post.append(activation_fn())
            if dropout_rate > 0:
                post.append(torch.nn.Dropout(p=dropout_rate))
            self.transforms.append(torch.nn.Sequential(*post))
        # The trainable rows of covariate tables grown for a query (``freeze_for_query``),
        # keyed ``"{layer}_{covariate}"``; empty otherwise, so it adds no tensors.
        self.query_rows = torch.nn.ModuleDict()
        self._query_rows_by_layer: dict[int, list[tuple[int, TrainableRows]]] = {}
        self.register_state_dict_post_hook(_merge_rows)
        self.register_load_state_dict_pre_hook(_split_rows)

    @property
    def fc_layers(self) -> torch.nn.Sequential:
        """The layers as scvi-tools lays them out: layer ``i`` is ``(linear, *transforms)``.

        A view of this block's own modules, for code written against scvi-tools'
        ``FCLayers``; it holds no parameters of its own. ``fc_layers[i][0]`` shows layer
        ``i``'s linear map as one ``nn.Linear`` over ``[x, continuous, one-hots]`` (see
        :class:`ConcatenatedLinearView`); the transforms are this block's own modules.
        """
        return torch.nn.Sequential(
            *(
                torch.nn.Sequential(
                    ConcatenatedLinearView(linear, dict(self._query_rows_by_layer.get(i, []))),
                    *transform,
                )
                for i, (linear, transform) in enumerate(
                    zip(self.linears, self.transforms, strict=True)
                )
            )
        )

    def freeze_for_query(
        self,
        hook_first_layer: bool = True,
        frozen_categories: Sequence[Sequence[int]] | None = None,
    ) -> None:
        """Freeze the linear maps for reference mapping (scArches), as scvi-tools does.

        Every linear map's input weights, continuous-covariate weights and bias stop
        training, except those of the first layer when ``hook_first_layer`` is False (it then
        trains whole). What stays trainable are the categorical-covariate weights, of every
        category but those in ``frozen_categories``, which keep their exact values
        (:mod:`cellvi.nn._query_rows`). Batch norm and dropout are the caller's.

        Parameters
        ----------
        hook_first_layer
            Freeze the first layer too (False: it trains whole, e.g. to adapt to new genes).
        frozen_categories
            For each entry of ``n_cat_list``, the codes whose weights stay as they are (e.g.
            reference categories no query cell holds); None: none.
        """
        self._merge_query_rows()
        n_cat_list = self.n_cat_list
        frozen = [list(codes) for codes in frozen_categories or [[]] * len(n_cat_list)]
        if len(frozen) != len(n_cat_list):
            raise ValueError(
                f"frozen_categories needs one list of codes per covariate ({len(n_cat_list)}), "
                f"got {len(frozen)}."
            )
        for i, linear in enumerate(self.linears):
            if i == 0 and not hook_first_layer:
                continue
            for param in (linear.weight, linear.cont_weight, linear.bias):
                if param is not None:
                    param.requires_grad_(False)
            for position, table in enumerate(linear.cat_weights):
                rows = sorted({int(code) for code in frozen[self._active[position]]})
                if len(rows) >= table.shape[0]:
                    table.requires_grad_(False)
                elif rows:
                    self.query_rows[f"{i}_{position}"] = TrainableRows(table, rows)
        self._index_query_rows()

    def _merge_query_rows(self) -> None:
        """Undo ``freeze_for_query``: every table whole and trainable again."""
        with torch.no_grad():
            for name, rows in self.query_rows.items():
                layer, position = (int(part) for part in name.split("_"))
                self.linears[layer].cat_weights[position] += rows.delta
        self.query_rows = torch.nn.ModuleDict()
        self.linears.requires_grad_(True)
        self._index_query_rows()

    def _index_query_rows(self) -> None:
        by_layer: dict[int, list[tuple[int, TrainableRows]]] = {}
        for name, rows in self.query_rows.items():
            layer, position = (int(part) for part in name.split("_"))
            by_layer.setdefault(layer, []).append((position, rows))
        self._query_rows_by_layer = by_layer

    def _row_splits(self) -> list[RowSplit]:
        return [
            (f"linears.{name.replace('_', '.cat_weights.')}", f"query_rows.{name}", rows)
            for name, rows in self.query_rows.items()
        ]

    def covariate_widths(self, layer_index: int) -> tuple[int, ...]:
        """Widths of the covariate blocks appended to a layer's input.

        Parameters
        ----------
        layer_index
            Index of the layer, ``0 <= layer_index < n_layers``.

        Returns
        -------
        tuple of int
            The number of categories of each active categorical covariate followed by
            ``n_cont`` when there are continuous covariates; empty for a layer that takes
            no covariates.
        """
        linear = self.linears[layer_index]
        widths = linear.n_cat_list
        return widths + (linear.n_cont,) if linear.n_cont else widths

    def forward(
        self, x: torch.Tensor, *cat_list: torch.Tensor | None, cont: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Apply the layers.

        Parameters
        ----------
        x
            Input of shape ``(n, n_in)`` or ``(S, n, n_in)``.
        *cat_list
            One code tensor of shape ``(n,)`` or ``(n, 1)`` per entry of ``n_cat_list``.
        cont
            Continuous covariates of shape ``(n, n_cont)``; required exactly when
            ``n_cont > 0``.

        Returns
        -------
        torch.Tensor
            Output of shape ``(n, n_out)`` or ``(S, n, n_out)``.
        """
        if len(cat_list) != len(self.n_cat_list):
            raise ValueError(
                f"FCLayers expects {len(self.n_cat_list)} categorical covariate tensor(s) "
                f"(n_cat_list={list(self.n_cat_list)}), got {len(cat_list)}."
            )
        if (cont is None) != (self.n_cont == 0):
            raise ValueError(
                f"FCLayers was built with n_cont={self.n_cont}; pass `cont` exactly when "
                "n_cont > 0."
            )
        codes = []
        for i in self._active:
            if cat_list[i] is None:
                raise ValueError(
                    f"Categorical covariate {i} has {self.n_cat_list[i]} categories; "
                    "its codes must be given, not None."
                )
            codes.append(as_code_vector(cat_list[i]))

        h = x
        for i, (linear, transform) in enumerate(zip(self.linears, self.transforms, strict=True)):
            if i in self.injected_layers:
                h = linear(h, codes, cont)
                for position, rows in self._query_rows_by_layer.get(i, ()):
                    h = h + rows(codes[position])
            else:
                h = linear(h)
            # BatchNorm1d reads dim 1 of a 3-D input as channels, so fold the sample
            # dimension into the rows.
            h = transform(h.reshape(-1, h.shape[-1])).reshape(h.shape)
        return h


class ConcatenatedLinearView(torch.nn.Module):
    """One of cellvi's covariate linear maps seen as scvi-tools' ``nn.Linear``.

    scvi-tools feeds each layer one ``nn.Linear`` over ``[x, continuous covariates, one-hot
    of each categorical covariate]``; cellvi keeps those column blocks apart
    (:class:`~cellvi.nn._covariate_linear.CovariateLinear`). This view puts them side by side
    again. ``weight`` is a snapshot: the current values, whether any block trains
    (``requires_grad``), and the gradient of the last backward pass (``grad``, frozen blocks
    reading zero; None until a backward pass has reached every trainable block). Writing to
    it changes nothing; calling the view computes the layer on concatenated inputs.

    Parameters
    ----------
    linear
        The layer shown.
    query_rows
        The trainable rows of its grown tables (covariate position -> rows), if any.
    """

    def __init__(
        self, linear: CovariateLinear, query_rows: dict[int, TrainableRows] | None = None
    ) -> None:
        super().__init__()
        self.linear = linear
        self._query_rows = query_rows or {}
        self.in_features = linear.fan_in
        self.out_features = linear.n_out

    def _blocks(self) -> list[tuple[tuple[torch.Tensor, ...], bool]]:
        """Each column block: its parameters (a grown table's two parts) and whether stored
        transposed (the covariate tables are ``(n_categories, out_features)``)."""
        linear = self.linear
        blocks = [((linear.weight,), False)]
        if linear.cont_weight is not None:
            blocks.append(((linear.cont_weight,), False))
        for position, table in enumerate(linear.cat_weights):
            rows = self._query_rows.get(position)
            blocks.append(((table,) if rows is None else (table, rows.delta), True))
        return blocks

    def _combined(self) -> torch.Tensor:
        columns = []
        for parts, transposed in self._blocks():
            block = parts[0] if len(parts) == 1 else parts[0] + parts[1]
            columns.append(block.T if transposed else block)
        return torch.cat(columns, dim=1)

    @property
    def weight(self) -> torch.Tensor:
        """The concatenated weight, ``(out_features, in_features)`` (a snapshot, see above)."""
        blocks = self._blocks()
        snapshot = self._combined().detach().clone()
        trainable = [part for parts, _ in blocks for part in parts if part.requires_grad]
        snapshot.requires_grad_(bool(trainable))
        if all(part.grad is not None for part in trainable):
            grads = []
            for parts, transposed in blocks:
                grad = sum(
                    torch.zeros_like(part) if part.grad is None else part.grad for part in parts
                )
                grads.append(grad.T if transposed else grad)
            snapshot.grad = torch.cat(grads, dim=1)
        return snapshot

    @property
    def bias(self) -> torch.nn.Parameter | None:
        """The layer's bias (the same tensor in both layouts)."""
        return self.linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ weight.T + bias`` for ``x`` laid out as ``[x, continuous, one-hots]``."""
        return F.linear(x, self._combined(), self.linear.bias)

    def extra_repr(self) -> str:
        """Describe the widths, as ``nn.Linear`` does."""
        return f"in_features={self.in_features}, out_features={self.out_features}"


def _merge_rows(module: FCLayers, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    merge_rows_into_tables(module._row_splits(), state_dict, prefix)


def _split_rows(module: FCLayers, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    split_rows_of_tables(module._row_splits(), state_dict, prefix)
