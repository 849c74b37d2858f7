"""SemiSupervisedTrainingPlan: labeled cells reach the loss; epoch-wide classifier metrics."""

from __future__ import annotations

import pytest
import torch
import torchmetrics.functional as tmf

from cellvi.module import SCANVAE
from cellvi.module.base import LossOutput
from cellvi.train import SemiSupervisedTrainingPlan
from cellvi.train._semisupervised_plan import ClassificationSums, _split_batch

N_CLASSES = 4


def classified(logits: torch.Tensor, labels: torch.Tensor, loss: float = 1.0) -> LossOutput:
    return LossOutput(
        loss=torch.tensor(0.0),
        reconstruction_loss=torch.zeros(8),
        classification_loss=torch.tensor(loss),
        logits=logits,
        true_labels=labels[:, None],
    )


def test_epoch_metrics_are_those_of_all_its_labeled_cells() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50, N_CLASSES, generator=generator) * 3
    labels = torch.randint(0, N_CLASSES, (50,), generator=generator)
    sums = ClassificationSums()
    sums.update_from(classified(logits[:30], labels[:30], loss=2.0))
    sums.update_from(classified(logits[30:], labels[30:], loss=1.0))
    metrics = sums.compute()
    predicted = logits.argmax(-1)
    accuracy = (predicted == labels).float().mean()
    torch.testing.assert_close(metrics["accuracy"], accuracy)
    torch.testing.assert_close(
        metrics["f1_score"],
        tmf.classification.multiclass_f1_score(predicted, labels, N_CLASSES, average="micro"),
    )
    torch.testing.assert_close(
        metrics["calibration_error"],
        tmf.classification.multiclass_calibration_error(logits, labels, N_CLASSES),
        atol=1e-5,
        rtol=1e-4,
    )
    # The cross-entropy is weighted by labeled cells: (30 * 2 + 20 * 1) / 50.
    torch.testing.assert_close(metrics["classification_loss"], torch.tensor(1.6))
    last = sums.compute_last()
    torch.testing.assert_close(last["accuracy"], (predicted[30:] == labels[30:]).float().mean())


def test_minibatches_without_labeled_cells_add_no_classifier_metric() -> None:
    sums = ClassificationSums()
    sums.update_from(LossOutput(loss=torch.tensor(0.0), reconstruction_loss=torch.zeros(3)))
    assert sums.compute() == {}


def test_a_minibatch_is_a_pair_or_one_dict_of_cells() -> None:
    cells, labeled = {"X": torch.zeros(2)}, {"X": torch.ones(1)}
    assert _split_batch([cells, labeled]) == (cells, labeled)
    assert _split_batch((cells, labeled)) == (cells, labeled)
    assert _split_batch(cells) == (cells, None)
    with pytest.raises(ValueError, match="sequence of 3"):
        _split_batch([cells, labeled, labeled])


def test_the_plan_passes_its_classification_ratio_and_refuses_to_be_given_it_twice() -> None:
    module = SCANVAE(n_input=10, n_labels=N_CLASSES)
    plan = SemiSupervisedTrainingPlan(module, N_CLASSES, classification_ratio=3, lr=1e-2)
    assert plan.loss_kwargs == {"classification_ratio": 3}
    assert plan.n_classes == N_CLASSES and plan.lr == 1e-2
    with pytest.raises(ValueError, match="labelled_tensors"):
        SemiSupervisedTrainingPlan(module, N_CLASSES, labelled_tensors={})
    with pytest.raises(TypeError, match="unknown argument"):
        SemiSupervisedTrainingPlan(module, N_CLASSES, classification_ratoi=3)
    with pytest.raises(ValueError, match="n_classes"):
        SemiSupervisedTrainingPlan(module, 0)
