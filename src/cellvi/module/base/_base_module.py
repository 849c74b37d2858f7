"""``BaseModuleClass``: the contract of a cellvi module written in plain PyTorch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from cellvi.module.base._loss_output import LossOutput
from cellvi.module.base._module_base import ModuleBase

Tensors = dict[str, torch.Tensor]


class BaseModuleClass(ModuleBase, ABC):
    """A probabilistic model as an inference step, a generative step and a loss.

    A subclass implements the five abstract methods below; ``forward`` then runs, for a
    minibatch ``tensors`` (a dict keyed by ``REGISTRY_KEYS``)::

        inference_inputs = _get_inference_input(tensors)
        inference_outputs = inference(**inference_inputs)
        generative_inputs = _get_generative_input(tensors, inference_outputs)
        generative_outputs = generative(**generative_inputs)
        loss(tensors, inference_outputs, generative_outputs, **loss_kwargs) -> LossOutput

    Modules see tensors only; reading AnnData is the model class's job. Each entry point
    below moves its tensor arguments to the module's device first, in subclasses too (see
    :mod:`cellvi.module.base._device`).
    """

    _entry_points: ClassVar[tuple[str, ...]] = (
        "forward",
        "inference",
        "generative",
        "loss",
        "sample",
        "marginal_ll",
    )

    @abstractmethod
    def _get_inference_input(self, tensors: Tensors, **kwargs: Any) -> dict[str, Any]:
        """Select the arguments of ``inference`` from a minibatch."""

    @abstractmethod
    def inference(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Map data to the variational posterior of the latent variables, and sample it."""

    @abstractmethod
    def _get_generative_input(
        self, tensors: Tensors, inference_outputs: dict[str, Any], **kwargs: Any
    ) -> dict[str, Any]:
        """Select the arguments of ``generative`` from a minibatch and the inference outputs."""

    @abstractmethod
    def generative(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Map latent variables to the distributions of the generative model."""

    @abstractmethod
    def loss(
        self,
        tensors: Tensors,
        inference_outputs: dict[str, Any],
        generative_outputs: dict[str, Any],
        **kwargs: Any,
    ) -> LossOutput:
        """Compute the objective (usually the negative ELBO) of a minibatch."""

    def sample(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Draw from the model's predictive distribution (optional for a module)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement sample().")

    def forward(
        self,
        tensors: Tensors,
        get_inference_input_kwargs: dict[str, Any] | None = None,
        get_generative_input_kwargs: dict[str, Any] | None = None,
        inference_kwargs: dict[str, Any] | None = None,
        generative_kwargs: dict[str, Any] | None = None,
        loss_kwargs: dict[str, Any] | None = None,
        compute_loss: bool = True,
    ) -> tuple[dict[str, Any], dict[str, Any]] | tuple[dict[str, Any], dict[str, Any], LossOutput]:
        """Run inference, then generative, then (if ``compute_loss``) the loss."""
        inference_inputs = self._get_inference_input(tensors, **(get_inference_input_kwargs or {}))
        inference_outputs = self.inference(**inference_inputs, **(inference_kwargs or {}))
        generative_inputs = self._get_generative_input(
            tensors, inference_outputs, **(get_generative_input_kwargs or {})
        )
        generative_outputs = self.generative(**generative_inputs, **(generative_kwargs or {}))
        if not compute_loss:
            return inference_outputs, generative_outputs
        losses = self.loss(tensors, inference_outputs, generative_outputs, **(loss_kwargs or {}))
        return inference_outputs, generative_outputs, losses
