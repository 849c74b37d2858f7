"""Reading the tensors of scvi-tools' network blocks into cellvi's.

scvi-tools' ``FCLayers`` feeds each layer one ``nn.Linear`` over the concatenation
``[x, continuous covariates, one-hot of each categorical covariate]``, named
``fc_layers.Layer {i}.0``, with batch norm at ``fc_layers.Layer {i}.1``. cellvi's
:class:`~cellvi.nn.FCLayers` keeps the covariate columns apart (a lookup table per
categorical covariate, see :class:`~cellvi.nn._covariate_linear.CovariateLinear`), so the
same numbers are sliced out of the concatenated weight.
"""

from __future__ import annotations

import torch

from ._fclayers import FCLayers

Tensors = dict[str, torch.Tensor]


class ScviToolsWeightError(ValueError):
    """scvi-tools tensors that do not fit the cellvi module they are read into."""


def take(source: Tensors, name: str) -> torch.Tensor:
    """The tensor ``name`` of an scvi-tools state dict, or a clear error naming it."""
    if name not in source:
        raise ScviToolsWeightError(
            f"The scvi-tools weights lack {name!r}; they were saved by a module built "
            "differently from the one their init parameters describe."
        )
    return source[name]


def fclayers_weights(layers: FCLayers, source: Tensors, source_prefix: str) -> Tensors:
    """The state dict of cellvi's ``layers`` (unprefixed) from scvi-tools' FCLayers tensors.

    Parameters
    ----------
    layers
        The cellvi block the tensors are read into (its structure says how to slice them).
    source
        An scvi-tools state dict.
    source_prefix
        The prefix of the block in ``source``, e.g. ``"z_encoder.encoder."``.
    """
    weights: Tensors = {}
    for i, (linear, transform) in enumerate(zip(layers.linears, layers.transforms, strict=True)):
        layer = f"{source_prefix}fc_layers.Layer {i}."
        combined = take(source, f"{layer}0.weight")
        widths = [linear.n_in, linear.n_cont, *linear.n_cat_list]
        if combined.shape != (linear.n_out, sum(widths)):
            raise ScviToolsWeightError(
                f"{layer}0.weight has shape {tuple(combined.shape)}; the cellvi layer needs "
                f"({linear.n_out}, {sum(widths)}) (input, continuous and one-hot columns)."
            )
        blocks = torch.split(combined, widths, dim=1)
        weights[f"linears.{i}.weight"] = blocks[0]
        if linear.cont_weight is not None:
            weights[f"linears.{i}.cont_weight"] = blocks[1]
        for k, block in enumerate(blocks[2:]):
            weights[f"linears.{i}.cat_weights.{k}"] = block.T.contiguous()
        if linear.bias is not None:
            weights[f"linears.{i}.bias"] = take(source, f"{layer}0.bias")
        for j, module in enumerate(transform):
            if isinstance(module, torch.nn.BatchNorm1d):
                for name in module.state_dict():
                    weights[f"transforms.{i}.{j}.{name}"] = take(source, f"{layer}1.{name}")
    return weights


def prefixed(weights: Tensors, prefix: str) -> Tensors:
    """``weights`` with ``prefix`` before every name."""
    return {f"{prefix}{name}": tensor for name, tensor in weights.items()}


def linear_weights(module: torch.nn.Linear, source: Tensors, source_prefix: str) -> Tensors:
    """A linear layer's tensors, under the same names in both libraries."""
    return {name: take(source, f"{source_prefix}{name}") for name in module.state_dict()}


def body_and_heads_weights(
    module: torch.nn.Module,
    source: Tensors,
    source_prefix: str,
    body: str,
    heads: tuple[str, ...],
) -> Tensors:
    """The state dict of a block made of an ``FCLayers`` ``body`` and linear ``heads``.

    Encoders and decoders of both libraries are built this way, under the same submodule
    names (``heads`` may be dotted paths such as ``"px_scale_decoder.0"``).
    """
    weights = prefixed(
        fclayers_weights(module.get_submodule(body), source, f"{source_prefix}{body}."),
        f"{body}.",
    )
    for head in heads:
        layer = module.get_submodule(head)
        weights.update(
            prefixed(linear_weights(layer, source, f"{source_prefix}{head}."), f"{head}.")
        )
    return weights


def encoder_weights(encoder: torch.nn.Module, source: Tensors, source_prefix: str) -> Tensors:
    """The state dict of a cellvi :class:`~cellvi.nn.Encoder` from scvi-tools' ``Encoder``."""
    return body_and_heads_weights(
        encoder, source, source_prefix, "encoder", ("mean_encoder", "var_encoder")
    )


def decoder_weights(decoder: torch.nn.Module, source: Tensors, source_prefix: str) -> Tensors:
    """The state dict of a cellvi :class:`~cellvi.nn.DecoderSCVI` from scvi-tools' one.

    scvi-tools always builds the dispersion and zero-inflation heads; cellvi only those its
    likelihood reads, so the others are not read.
    """
    heads = ("px_scale_decoder.0",)
    if decoder.px_r_decoder is not None:
        heads += ("px_r_decoder",)
    if decoder.px_dropout_decoder is not None:
        heads += ("px_dropout_decoder",)
    return body_and_heads_weights(decoder, source, source_prefix, "px_decoder", heads)


def classifier_weights(
    classifier: torch.nn.Module, source: Tensors, source_prefix: str
) -> Tensors:
    """The state dict of a cellvi :class:`~cellvi.nn.Classifier` from scvi-tools' one."""
    weights: Tensors = {}
    for index, layer in enumerate(classifier.classifier):
        name = f"classifier.{index}."
        if isinstance(layer, FCLayers):
            weights.update(
                prefixed(fclayers_weights(layer, source, f"{source_prefix}{name}"), name)
            )
        elif isinstance(layer, torch.nn.Linear):
            weights.update(prefixed(linear_weights(layer, source, f"{source_prefix}{name}"), name))
    return weights
