"""Metrics against scikit-learn, the trusted reference, on random predictions."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from skinlib.data import CLASSES
from skinlib.metrics import (
    ConfusionMatrix,
    accuracy,
    balanced_accuracy,
    per_class,
    roc_auc_ovr,
    summarize,
)

SEEDS = [0, 1, 2, 3, 4]
LABELS = list(range(8))


def random_batch(seed: int, n: int = 300, num_classes: int = 8):
    """Imbalanced targets (like ISIC: one class frequent, others rare, each present) and noisy predictions."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(num_classes, 0.7))
    targets = rng.choice(num_classes, size=n, p=weights)
    targets[rng.choice(n, size=num_classes, replace=False)] = np.arange(num_classes)
    logits = rng.normal(size=(n, num_classes))
    logits[np.arange(n), targets] += rng.uniform(0, 2)  # better than chance, by a random margin
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return targets, probs.argmax(axis=1), probs


def matrix_of(targets, preds) -> ConfusionMatrix:
    return ConfusionMatrix(8).update(torch.as_tensor(preds), torch.as_tensor(targets))


@pytest.mark.parametrize("seed", SEEDS)
def test_confusion_matrix_equals_sklearn(seed):
    targets, preds, _ = random_batch(seed)
    cm = matrix_of(targets, preds)
    assert cm.matrix.dtype == torch.int64 and cm.matrix.device.type == "cpu"
    np.testing.assert_array_equal(cm.matrix.numpy(), confusion_matrix(targets, preds, labels=LABELS))


@pytest.mark.parametrize("seed", SEEDS)
def test_batch_by_batch_accumulation_equals_the_whole(seed):
    targets, preds, _ = random_batch(seed)
    cm = ConfusionMatrix(8)
    for start in range(0, len(targets), 37):  # uneven batches, the last one short
        cm.update(torch.as_tensor(preds[start : start + 37]), torch.as_tensor(targets[start : start + 37]))
    np.testing.assert_array_equal(cm.matrix.numpy(), matrix_of(targets, preds).matrix.numpy())


def test_update_takes_logits_and_argmaxes_them():
    targets, preds, probs = random_batch(0)
    from_logits = ConfusionMatrix(8).update(torch.as_tensor(np.log(probs)), torch.as_tensor(targets))
    assert torch.equal(from_logits.matrix, matrix_of(targets, preds).matrix)


def test_matrices_merge_and_add():
    targets, preds, _ = random_batch(0)
    first, second = matrix_of(targets[:100], preds[:100]), matrix_of(targets[100:], preds[100:])
    whole = matrix_of(targets, preds).matrix
    assert torch.equal((first + second).matrix, whole)
    assert torch.equal(first.merge(second).matrix, whole)


def test_reset_empties_the_counts():
    cm = matrix_of([0, 1], [1, 1])
    cm.reset()
    assert cm.total == 0


@pytest.mark.parametrize("bad", [[0, 8], [-1, 0]])
def test_update_rejects_class_indices_out_of_range(bad):
    with pytest.raises(ValueError, match=r"0\.\.7"):
        ConfusionMatrix(8).update(torch.tensor(bad), torch.tensor([0, 0]))


def test_out_of_range_counts_do_not_reach_the_matrix():
    cm = ConfusionMatrix(8).update(torch.tensor([1]), torch.tensor([2]))
    with pytest.raises(ValueError):
        cm.update(torch.tensor([9, 3]), torch.tensor([0, 3]))
    assert cm.total == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_batches_count_like_cpu_and_report_bad_indices_when_read():
    targets, preds, _ = random_batch(0)
    cm = ConfusionMatrix(8).update(torch.as_tensor(preds).cuda(), torch.as_tensor(targets).cuda())
    assert torch.equal(cm.matrix, matrix_of(targets, preds).matrix)
    cm.update(torch.tensor([8], device="cuda"), torch.tensor([0], device="cuda"))  # no error yet: no sync
    with pytest.raises(ValueError, match=r"0\.\.7; 1 of"):
        cm.matrix


def test_update_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="3 predictions for 2 targets"):
        ConfusionMatrix(8).update(torch.tensor([0, 1, 2]), torch.tensor([0, 1]))


@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_equals_sklearn(seed):
    targets, preds, _ = random_batch(seed)
    assert accuracy(matrix_of(targets, preds)) == pytest.approx(accuracy_score(targets, preds))


@pytest.mark.parametrize("seed", SEEDS)
def test_balanced_accuracy_equals_sklearn(seed):
    targets, preds, _ = random_batch(seed)
    assert balanced_accuracy(matrix_of(targets, preds)) == pytest.approx(balanced_accuracy_score(targets, preds))


def test_balanced_accuracy_leaves_out_classes_absent_from_targets_as_sklearn_does():
    targets, preds, _ = random_batch(0)
    keep = ~np.isin(targets, [5, 6])  # no DF or VASC among the targets, though they are still predicted
    targets, preds = targets[keep], preds[keep]
    assert np.isin(preds, [5, 6]).any()
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        expected = balanced_accuracy_score(targets, preds)
    assert balanced_accuracy(matrix_of(targets, preds)) == pytest.approx(expected)


def assert_per_class_equals_classification_report(targets, preds):
    report = classification_report(targets, preds, labels=LABELS, zero_division=np.nan, output_dict=True)
    ours = per_class(matrix_of(targets, preds))
    for key, theirs in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"), ("support", "support")):
        np.testing.assert_allclose(ours[key], [report[str(k)][theirs] for k in LABELS], err_msg=key)  # NaN == NaN
    return ours


@pytest.mark.parametrize("seed", SEEDS)
def test_per_class_scores_equal_sklearn(seed):
    targets, preds, _ = random_batch(seed, n=60)  # small: some classes never predicted -> zero division
    assert_per_class_equals_classification_report(targets, preds)


def test_undefined_per_class_scores_are_nan_as_in_sklearn_not_zero():
    # a tiny test split: AK (3) and DF (5) have no image, DF is never predicted, AK is predicted once
    targets = np.array([0, 0, 1, 1, 1, 2, 4, 6, 7])
    preds = np.array([0, 1, 1, 1, 3, 2, 4, 1, 7])
    ours = assert_per_class_equals_classification_report(targets, preds)
    assert math.isnan(ours["recall"][3]) and math.isnan(ours["recall"][5])  # support 0: no recall
    assert math.isnan(ours["f1"][5]) and ours["f1"][3] == 0  # AK's one prediction is wrong: F1 0
    assert math.isnan(ours["precision"][6]) and ours["recall"][6] == 0  # VASC present, never predicted


def test_empty_matrix_has_undefined_accuracy():
    assert math.isnan(accuracy(ConfusionMatrix(8)))
    assert math.isnan(balanced_accuracy(ConfusionMatrix(8)))


@pytest.mark.parametrize("seed", SEEDS)
def test_roc_auc_ovr_equals_sklearn(seed):
    targets, _, probs = random_batch(seed, n=400)
    result = roc_auc_ovr(torch.as_tensor(targets), torch.as_tensor(probs))
    for k in LABELS:
        assert result["per_class"][k] == pytest.approx(roc_auc_score(targets == k, probs[:, k]))
    assert result["macro"] == pytest.approx(roc_auc_score(targets, probs, multi_class="ovr", average="macro"))


def test_roc_auc_is_nan_for_a_class_absent_from_targets():
    targets, _, probs = random_batch(1, n=400)
    keep = targets != 3
    result = roc_auc_ovr(targets[keep], probs[keep])
    assert math.isnan(result["per_class"][3])
    others = [roc_auc_score(targets[keep] == k, probs[keep, k]) for k in LABELS if k != 3]
    assert result["macro"] == pytest.approx(np.mean(others))


def test_summarize_is_json_serialisable_and_matches_sklearn():
    targets, preds, _ = random_batch(2)
    summary = json.loads(json.dumps(summarize(matrix_of(targets, preds), CLASSES)))
    assert summary["classes"] == list(CLASSES)
    assert summary["n"] == len(targets)
    assert summary["accuracy"] == pytest.approx(accuracy_score(targets, preds))
    assert summary["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(targets, preds))
    assert summary["confusion_matrix"] == confusion_matrix(targets, preds, labels=LABELS).tolist()
    _, recall, _, support = precision_recall_fscore_support(targets, preds, labels=LABELS, zero_division=0)
    assert summary["per_class"]["MEL"]["recall"] == pytest.approx(recall[0])
    assert summary["per_class"]["SCC"]["support"] == support[7]


def test_summarize_writes_null_for_a_recall_without_images():
    targets, preds = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 3])
    summary = summarize(matrix_of(targets, preds), CLASSES)
    json.dumps(summary, allow_nan=False)
    assert summary["per_class"]["AK"]["recall"] is None and summary["per_class"]["AK"]["precision"] == 0
    assert summary["per_class"]["MEL"]["recall"] == 0.5


def test_summarize_of_an_empty_matrix_writes_null_not_nan():
    summary = summarize(ConfusionMatrix(8))
    assert summary["accuracy"] is None
    json.dumps(summary, allow_nan=False)


def test_summarize_rejects_the_wrong_number_of_class_names():
    with pytest.raises(ValueError, match="3 class names for a 8-class"):
        summarize(ConfusionMatrix(8), classes=("a", "b", "c"))
