"""``METRIC_KEYS``: the names under which training plans log their metrics."""

from __future__ import annotations

from typing import NamedTuple


class _MetricKeys(NamedTuple):
    """Metric names; a logged metric is ``f"{split}_{key}"`` or ``f"{key}_{split}"``."""

    TRAINING_KEY: str = "training"
    VALIDATION_KEY: str = "validation"
    ACCURACY_KEY: str = "accuracy"
    F1_SCORE_KEY: str = "f1_score"
    CALIBRATION_ERROR_KEY: str = "calibration_error"
    AUROC_KEY: str = "auroc"
    CLASSIFICATION_LOSS_KEY: str = "classification_loss"
    TRUE_LABELS_KEY: str = "true_labels"
    LOGITS_KEY: str = "logits"


#: The metric names of scvi-tools' training plans (classification metrics included, for plans
#: that classify cells).
METRIC_KEYS = _MetricKeys()
