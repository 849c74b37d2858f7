"""KL warm-up: the weight of the KL terms as training progresses."""

from __future__ import annotations

import warnings


def compute_kl_weight(
    epoch: int,
    step: int,
    n_epochs_kl_warmup: int | None,
    n_steps_kl_warmup: int | None,
    max_kl_weight: float = 1.0,
    min_kl_weight: float = 0.0,
) -> float:
    """Return the KL weight of a linear warm-up from ``min_kl_weight`` to ``max_kl_weight``.

    Parameters
    ----------
    epoch
        Current epoch (0-based).
    step
        Current global step (number of optimizer steps taken).
    n_epochs_kl_warmup
        Epochs over which the weight rises; takes precedence over ``n_steps_kl_warmup``.
    n_steps_kl_warmup
        Steps over which the weight rises; used only when ``n_epochs_kl_warmup`` is None.
    max_kl_weight
        Weight at the end of the warm-up (and without any warm-up).
    min_kl_weight
        Weight at the start of the warm-up.

    Returns
    -------
    float
        ``min + (max - min) * progress`` with progress ``epoch / n_epochs`` or
        ``step / n_steps``, and ``max_kl_weight`` once the warm-up is over.

    Raises
    ------
    ValueError
        When ``min_kl_weight`` exceeds ``max_kl_weight``.
    """
    check_kl_bounds(min_kl_weight, max_kl_weight)
    if n_epochs_kl_warmup:
        progress = epoch / n_epochs_kl_warmup
    elif n_steps_kl_warmup:
        progress = step / n_steps_kl_warmup
    else:
        return max_kl_weight
    if progress >= 1.0:
        return max_kl_weight
    return min_kl_weight + (max_kl_weight - min_kl_weight) * progress


def check_kl_bounds(min_kl_weight: float, max_kl_weight: float) -> None:
    """Raise a ``ValueError`` when the warm-up would start above where it ends."""
    if min_kl_weight > max_kl_weight:
        raise ValueError(
            f"min_kl_weight ({min_kl_weight}) must not exceed max_kl_weight ({max_kl_weight})."
        )


def warn_if_steps_ignored(n_epochs_kl_warmup: int | None, n_steps_kl_warmup: int | None) -> None:
    """Warn when a step warm-up is given but the epoch warm-up (which wins) is also set."""
    if n_epochs_kl_warmup and n_steps_kl_warmup:
        warnings.warn(
            f"n_steps_kl_warmup={n_steps_kl_warmup} is ignored: n_epochs_kl_warmup="
            f"{n_epochs_kl_warmup} takes precedence (as in scvi-tools). Pass "
            "n_epochs_kl_warmup=None to warm up by steps.",
            UserWarning,
            stacklevel=4,
        )
