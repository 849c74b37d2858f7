"""``NonFiniteLossError``: a training loss that is NaN or infinite."""

from __future__ import annotations


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; raised before the optimizer step.

    Parameters
    ----------
    step
        Global step (number of optimizer steps already taken) of the failing minibatch.
    epoch
        Epoch of the failing minibatch.
    terms
        Non-finite loss terms, as ``"reconstruction_loss['key']"`` style names; empty when
        only the total loss is non-finite.
    """

    def __init__(self, step: int, epoch: int, terms: list[str]) -> None:
        self.step = step
        self.epoch = epoch
        self.terms = terms
        culprits = ", ".join(terms) if terms else "none of the ELBO terms (only the total loss)"
        super().__init__(
            f"Training loss is not finite at global step {step} (epoch {epoch}); "
            f"non-finite terms: {culprits}. Training stopped before the optimizer step, and a "
            "model's train() puts the model back as it was before the call. Lower the learning "
            "rate, check the data for NaN/Inf, or pass check_finite=False to skip this check."
        )
