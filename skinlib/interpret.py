"""Evaluating a trained model beyond one accuracy: what notebooks 04 and 05 compute.

Probabilities on a split (optionally averaged over flips: test-time augmentation), the images
a model is most sure about, the melanoma-against-rest decision at a threshold, and a balanced
sampler for the imbalance (the course's saved models are found by `course.load_for_evaluation`).
Metrics come from scikit-learn; this module only gathers what they need.
"""
from __future__ import annotations


import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from torch.utils.data import DataLoader, WeightedRandomSampler

from skinlib.data import CLASSES
from skinlib.engine import to_device_batch
from skinlib.sampling import SeededItems

MEL = CLASSES.index("MEL")


def flips(images: torch.Tensor) -> list[torch.Tensor]:
    """The batch as it is, flipped left-right, upside down, and both: dermoscopy has no 'up'."""
    return [images, images.flip(-1), images.flip(-2), images.flip(-1, -2)]


def predict_probs(model: torch.nn.Module, loader, device, *, tta: bool = False,
                  max_batches: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (N, classes) and true labels (N,) over `loader`, in its order; with
    `tta`, each image's probabilities are the mean over its four flips."""
    model.eval()
    probs, targets = [], []
    with torch.inference_mode():
        for index, (images, labels) in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            images, labels = to_device_batch(images, labels, device)
            views = flips(images) if tta else [images]
            probs.append(torch.stack([model(v).float().softmax(1) for v in views]).mean(0).cpu())
            targets.append(labels.cpu())
    return torch.cat(probs).numpy(), torch.cat(targets).numpy()


def normalised_images(dataset, indices) -> torch.Tensor:
    """Items `indices` of a val/test dataset as one normalised float batch (the cache gives uint8)."""
    images = torch.stack([dataset[int(i)][0] for i in indices])
    return to_device_batch(images, torch.zeros(len(images)), torch.device("cpu"))[0]


def per_class_report(targets, probs, classes=CLASSES) -> pd.DataFrame:
    """Precision, recall, F1 and support of every class (scikit-learn), one row per class; NaN
    where a score is undefined (a class with no test image has no recall), as `metrics.per_class`."""
    p, r, f, s = precision_recall_fscore_support(targets, np.asarray(probs).argmax(1),
                                                 labels=range(len(classes)), zero_division=np.nan)
    return pd.DataFrame({"precision": p, "recall": r, "F1": f, "support": s}, index=list(classes))


def most_confident(probs, targets, n: int, *, wrong: bool) -> np.ndarray:
    """Indices of the n wrong predictions made with the highest probability (`wrong=True`), or of
    the n right ones with the highest probability of the true class."""
    probs, targets = np.asarray(probs), np.asarray(targets)
    predicted = probs.argmax(1)
    chosen = np.flatnonzero((predicted != targets) if wrong else (predicted == targets))
    order = np.argsort(-probs[chosen, predicted[chosen]], kind="stable")
    return chosen[order[:n]]


def melanoma_decision(targets, mel_probs, threshold: float) -> dict[str, float]:
    """Refer a lesion when P(MEL) >= threshold: the MEL-against-rest counts on these images
    (scikit-learn's confusion matrix), sensitivity (melanomas referred) and specificity (others
    not referred); NaN when there is no melanoma, or no other lesion, to measure them on."""
    truth = np.asarray(targets) == MEL
    referred = np.asarray(mel_probs) >= threshold
    tn, fp, fn, tp = confusion_matrix(truth, referred, labels=[False, True]).ravel()
    return {"threshold": threshold, "tp": int(tp), "fn": int(fn), "fp": int(fp), "tn": int(tn),
            "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "specificity": tn / (tn + fp) if tn + fp else float("nan")}


def balanced_loader(loader: DataLoader, seed: int = 0) -> DataLoader:
    """The training loader's dataset drawn with replacement so that every class is equally likely
    in every batch (WeightedRandomSampler, weight 1 / class size)."""
    dataset = loader.dataset
    if isinstance(dataset, SeededItems):  # read with plain indices here, not (index, seed) pairs
        dataset = dataset.dataset
    labels = np.asarray(dataset.labels)
    weights = 1.0 / np.bincount(labels)[labels]
    sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), num_samples=len(labels),
                                    generator=torch.Generator().manual_seed(seed))
    return DataLoader(dataset, batch_size=loader.batch_size, sampler=sampler,
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory)
