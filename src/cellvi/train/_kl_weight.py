"""KL warm-up: the weight of the KL terms as training progresses."""

from __future__ import annotations


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
        Epochs over which the weight rises; used only when ``n_steps_kl_warmup`` is None.
    n_steps_kl_warmup
        Steps over which the weight rises; takes precedence over ``n_epochs_kl_warmup``.
    max_kl_weight
        Weight at the end of the warm-up (and without any warm-up).
    min_kl_weight
        Weight at the start of the warm-up.

    Returns
    -------
    float
        ``min + (max - min) * progress`` with progress ``step / n_steps`` or
        ``epoch / n_epochs``, capped at ``max_kl_weight``.
    """
    if n_steps_kl_warmup:
        progress = step / n_steps_kl_warmup
    elif n_epochs_kl_warmup:
        progress = epoch / n_epochs_kl_warmup
    else:
        return max_kl_weight
    return min_kl_weight + (max_kl_weight - min_kl_weight) * min(progress, 1.0)
