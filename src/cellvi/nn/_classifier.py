"""``Classifier``: fully connected class scores of latent codes (scANVI, CondSCVI)."""

from __future__ import annotations

from typing import Any

import torch

from ._fclayers import FCLayers


class Classifier(torch.nn.Module):
    """Map inputs to class scores: optional hidden layers, then a linear layer.

    Parameters
    ----------
    n_input
        Width of the input.
    n_hidden
        Width of the hidden layers; ``0`` (or ``n_layers=0``) makes the classifier a single
        linear layer.
    n_labels
        Number of classes.
    n_layers
        Number of hidden layers.
    dropout_rate
        Dropout probability of the hidden layers.
    logits
        Return logits; else class probabilities (a softmax).
    use_batch_norm, use_layer_norm
        Normalisation of the hidden layers.
    activation_fn
        Activation module class of the hidden layers.
    **kwargs
        Further :class:`FCLayers` arguments.
    """

    def __init__(
        self,
        n_input: int,
        n_hidden: int = 128,
        n_labels: int = 5,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        logits: bool = False,
        use_batch_norm: bool = True,
        use_layer_norm: bool = False,
        activation_fn: type[torch.nn.Module] = torch.nn.ReLU,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.logits = logits
        layers: list[torch.nn.Module] = []
        if n_hidden > 0 and n_layers > 0:
            layers.append(
                FCLayers(
                    n_in=n_input,
                    n_out=n_hidden,
                    n_layers=n_layers,
                    n_hidden=n_hidden,
                    dropout_rate=dropout_rate,
                    use_batch_norm=use_batch_norm,
                    use_layer_norm=use_layer_norm,
                    activation_fn=activation_fn,
                    **kwargs,
                )
            )
            width = n_hidden
        else:
            width = n_input
        layers.append(torch.nn.Linear(width, n_labels))
        if not logits:
            layers.append(torch.nn.Softmax(dim=-1))
        self.classifier = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (``logits=True``) or probabilities of each row of ``x``."""
        return self.classifier(x)
