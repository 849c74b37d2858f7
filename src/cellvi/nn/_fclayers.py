"""Stack of fully connected layers conditioned on covariates."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cellvi._checks import check_positive_int

from ._codes import as_code_vector
from ._covariate_linear import CovariateLinear


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

    @property
    def fc_layers(self) -> torch.nn.Sequential:
        """The layers as scvi-tools lays them out: layer ``i`` is ``(linear, *transforms)``.

        A view of this block's own modules (``fc_layers[0][0]`` is the first linear map),
        for code written against scvi-tools' ``FCLayers``; it holds no parameters of its own.
        """
        return torch.nn.Sequential(
            *(
                torch.nn.Sequential(linear, *transform)
                for linear, transform in zip(self.linears, self.transforms, strict=True)
            )
        )

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
            else:
                h = linear(h)
            # BatchNorm1d reads dim 1 of a 3-D input as channels, so fold the sample
            # dimension into the rows.
            h = transform(h.reshape(-1, h.shape[-1])).reshape(h.shape)
        return h
