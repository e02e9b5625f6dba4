"""Classification metrics from a confusion matrix, accumulated batch by batch.

Accuracy alone flatters a model on ISIC 2019: answering NV for every image scores 50.8 %.
The challenge ranks by balanced multiclass accuracy (the mean of per-class recalls), so every
loop reports both. Definitions follow scikit-learn's, and tests/test_metrics.py checks them
against it.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from skinlib.layout import CLASSES


class ConfusionMatrix:
    """Counts of (true class, predicted class) pairs: rows are the true class, columns the prediction.

    `update` takes a batch on whatever device it lives on (predicted class indices, or logits
    whose argmax is taken) and counts it there without waiting for the GPU: a training loop
    that calls it every step keeps the GPU queue full. `.matrix` (an int64 CPU tensor) brings
    the counts back, once, when they are read. Two matrices add with `+` / `merge`.

    Class indices outside 0..num_classes-1 raise ValueError: at once for CPU tensors, and when
    `.matrix` is read for GPU tensors (checking each batch there would stall the GPU).
    """

    def __init__(self, num_classes: int = len(CLASSES)):
        self.num_classes = num_classes
        # Flat counts, index true * num_classes + predicted; the extra last slot counts
        # out-of-range pairs. Lives on the device of the latest update.
        self._counts = torch.zeros(num_classes * num_classes + 1, dtype=torch.int64)

    def update(self, preds, targets) -> "ConfusionMatrix":
        preds, targets = torch.as_tensor(preds), torch.as_tensor(targets)
        if preds.dim() == 2:  # (N, num_classes) logits or probabilities
            preds = preds.argmax(dim=1)
        preds, targets = preds.reshape(-1).long(), targets.reshape(-1).long().to(preds.device)
        if preds.numel() != targets.numel():
            raise ValueError(f"{preds.numel()} predictions for {targets.numel()} targets")
        n = self.num_classes
        valid = (preds >= 0) & (preds < n) & (targets >= 0) & (targets < n)
        # torch.bincount would size its output from the data's maximum, a GPU sync; index_add_ does not.
        flat = torch.where(valid, targets * n + preds, n * n)
        batch = torch.zeros(n * n + 1, dtype=torch.int64, device=flat.device)
        batch.index_add_(0, flat, torch.ones_like(flat))
        if flat.device.type == "cpu" and batch[-1] > 0:
            raise ValueError(self._range_message(int(batch[-1]), flat.numel()))
        self._counts = self._counts.to(flat.device)
        self._counts += batch
        return self

    def _range_message(self, bad: int, total: int) -> str:
        return (
            f"class indices must lie in 0..{self.num_classes - 1}; "
            f"{bad} of {total} (prediction, target) pairs did not"
        )

    @property
    def matrix(self) -> torch.Tensor:
        """(num_classes, num_classes) int64 counts on the CPU; rows true class, columns prediction."""
        counts = self._counts.to("cpu", copy=True)
        if counts[-1] > 0:
            raise ValueError(self._range_message(int(counts[-1]), int(counts.sum())))
        return counts[:-1].reshape(self.num_classes, self.num_classes)

    def reset(self) -> None:
        self._counts.zero_()

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix's counts into this one (e.g. from several workers or epochs)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class counts into {self.num_classes} classes")
        self._counts += other._counts.to(self._counts.device)
        return self

    def __add__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        return ConfusionMatrix(self.num_classes).merge(self).merge(other)

    @property
    def total(self) -> int:
        return int(self.matrix.sum())

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, total={self.total})"


def as_array(cm) -> np.ndarray:
    """The counts of a ConfusionMatrix, tensor or array-like, as a square int64 numpy array."""
    matrix = cm.matrix if isinstance(cm, ConfusionMatrix) else cm
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().cpu().numpy()
    matrix = np.asarray(matrix, dtype=np.int64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {matrix.shape}")
    return matrix


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0 (scikit-learn's zero_division=np.nan)."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.full_like(num, np.nan), where=den > 0)


def accuracy(cm) -> float:
    """Share of correct predictions; NaN when the matrix is empty."""
    m = as_array(cm)
    total = m.sum()
    return float(np.trace(m) / total) if total else math.nan


def balanced_accuracy(cm) -> float:
    """Mean recall over the classes present among the targets (the ISIC challenge metric).

    As scikit-learn's balanced_accuracy_score: a class with no true examples is left out of the
    mean rather than counted as 0. NaN when the matrix is empty.
    """
    m = as_array(cm)
    support = m.sum(axis=1)
    present = support > 0
    if not present.any():
        return math.nan
    return float(np.mean(np.diag(m)[present] / support[present]))


def per_class(cm) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support, as scikit-learn's with zero_division=np.nan.

    A score that is undefined is NaN, not 0 (a 0 would read as a class always missed): the
    recall of a class with no image (support 0), the precision of a class never predicted, the
    F1 of a class neither present nor predicted.
    """
    m = as_array(cm)
    tp = np.diag(m)
    predicted, support = m.sum(axis=0), m.sum(axis=1)
    return {
        "precision": _ratio(tp, predicted),
        "recall": _ratio(tp, support),
        "f1": _ratio(2 * tp, predicted + support),  # = 2PR / (P + R)
        "support": support,
    }


def roc_auc_ovr(targets, probs) -> dict:
    """One-vs-rest ROC AUC per class from class probabilities (N, num_classes), and their macro mean.

    A class with no positive (or no negative) target has no ROC curve: its AUC is NaN and the
    macro mean is taken over the other classes (NaN if none is left).
    """
    targets = np.asarray(torch.as_tensor(targets).detach().cpu()).reshape(-1)
    probs = np.asarray(torch.as_tensor(probs).detach().float().cpu())
    if probs.ndim != 2 or len(probs) != len(targets):
        raise ValueError(f"probs must have shape (N, num_classes) with N={len(targets)}, got {probs.shape}")
    per = []
    for k in range(probs.shape[1]):
        positive = targets == k
        if positive.all() or not positive.any():
            per.append(math.nan)
        else:
            per.append(float(roc_auc_score(positive, probs[:, k])))
    defined = [auc for auc in per if not math.isnan(auc)]
    return {"per_class": per, "macro": float(np.mean(defined)) if defined else math.nan}


def json_safe(value: Any) -> Any:
    """Plain Python types for json.dump; NaN and infinities (JSON has neither) become None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.generic, torch.Tensor)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summarize(cm, classes=CLASSES) -> dict:
    """Everything a run reports, as plain Python types that json.dump accepts."""
    m = as_array(cm)
    if len(classes) != len(m):
        raise ValueError(f"{len(classes)} class names for a {len(m)}-class confusion matrix")
    scores = per_class(m)
    return {
        "n": int(m.sum()),
        "accuracy": json_safe(accuracy(m)),
        "balanced_accuracy": json_safe(balanced_accuracy(m)),
        "per_class": {
            name: {
                "precision": json_safe(float(scores["precision"][k])),  # None where undefined
                "recall": json_safe(float(scores["recall"][k])),
                "f1": json_safe(float(scores["f1"][k])),
                "support": int(scores["support"][k]),
            }
            for k, name in enumerate(classes)
        },
        "confusion_matrix": m.tolist(),
        "classes": list(classes),
    }
