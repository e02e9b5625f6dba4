"""Self-checks for notebook 04's exercises: per-class scores from the confusion matrix by hand
(against scikit-learn), and Grad-CAM's two hooks (against captum's LayerGradCam)."""
from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, precision_recall_fscore_support
from torch import nn

from skinlib.checks.core import _call, _report, _Wrong
from skinlib.layout import CLASSES

KEYS = ("precision", "recall", "f1", "balanced_accuracy")


def _probe_labels() -> tuple[np.ndarray, np.ndarray]:
    """Labels of 8 classes where class 5 has images but is never predicted, and class 6 has no
    image but is predicted twice: the cases where a score is undefined."""
    rng = np.random.default_rng(4)
    truth = rng.choice([0, 1, 2, 3, 4, 5, 7], size=120, p=[.2, .3, .15, .1, .1, .05, .1])
    guess = np.where(rng.random(120) < 0.6, truth, rng.integers(0, 8, size=120))
    guess[guess == 5] = 1
    guess[:2] = 6
    return truth, guess


def _reference(truth, guess) -> dict[str, Any]:
    p, r, f, _ = precision_recall_fscore_support(truth, guess, labels=range(len(CLASSES)), zero_division=np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true": what the probe is for
        balanced = balanced_accuracy_score(truth, guess)
    return {"precision": p, "recall": r, "f1": f, "balanced_accuracy": balanced}


def _as_array(value: Any, key: str) -> np.ndarray:
    try:
        array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=float)
    except (TypeError, ValueError):
        raise _Wrong(f"'{key}' is {type(value).__name__}, not 8 numbers (one per class).") from None
    if array.shape != (len(CLASSES),):
        raise _Wrong(f"'{key}' has shape {array.shape}, not ({len(CLASSES)},): one number per class.")
    return array


def _same(mine: np.ndarray, ref: np.ndarray, defined: np.ndarray) -> bool:
    """Equal where the score is defined; where it is not (0/0), NaN and 0 are both accepted."""
    loose = ~defined & (np.isnan(mine) | (mine == 0))
    return bool(np.all(loose | (defined & np.isclose(mine, ref, atol=1e-6))))


def check_scores_from_confusion(scores_from_confusion: Callable[[np.ndarray], dict]) -> bool:
    """`scores_from_confusion(cm)` (cm[i, j]: images of true class i predicted as j) gives per-class
    precision, recall and F1 and the balanced accuracy, equal to scikit-learn's."""
    from sklearn.metrics import confusion_matrix

    def run() -> str:
        truth, guess = _probe_labels()
        cm = confusion_matrix(truth, guess, labels=range(len(CLASSES)))
        try:
            with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 for an undefined score is expected
                answer = _call(lambda: scores_from_confusion(cm.copy()), "your function")
        except _Wrong as wrong:
            if "ZeroDivisionError" not in str(wrong):
                raise
            raise _Wrong("your function divided by zero: a class never predicted has no precision, one without "
                         "images no recall (0/0); give NaN there: divide numpy arrays (cm.sum(axis=0) ...), "
                         "which give nan, or write `x / n if n else float('nan')`.") from None
        if not isinstance(answer, dict):
            raise _Wrong(f"your function returned {type(answer).__name__}; return a dict with the keys "
                         f"{', '.join(KEYS)}.")
        missing = [key for key in KEYS if key not in answer]
        if missing:
            raise _Wrong(f"your dict has no key {', '.join(map(repr, missing))} (it has "
                         f"{', '.join(map(repr, answer))}): the keys are {', '.join(KEYS)}, spelled so.")
        ref = _reference(truth, guess)
        mine = {key: _as_array(answer[key], key) for key in KEYS[:3]}
        support, said = cm.sum(1) > 0, cm.sum(0) > 0
        _compare_per_class(mine, ref, cm, support, said)
        balanced = _call(lambda: float(answer["balanced_accuracy"]), "float(your balanced_accuracy)")
        _compare_balanced(balanced, ref, mine["recall"], cm, support)
        return ("precision, recall and F1 of every class and the balanced accuracy equal scikit-learn's "
                "(a class without images: no recall).")
    return _report("scores from the confusion matrix", run)


def _compare_per_class(mine, ref, cm, support, said) -> None:
    if np.nanmax(np.abs(np.concatenate(list(mine.values())))) > 1.5:
        raise _Wrong("your scores go above 1: give shares between 0 and 1, not percentages.")
    if _same(mine["recall"], ref["precision"], said) and not _same(mine["recall"], ref["recall"], support):
        raise _Wrong("your recall divides the diagonal by the column sums: that is precision. Rows are the "
                     "true classes: recall = cm.diag / cm.sum(axis=1).")
    for key, defined in (("recall", support), ("precision", said)):
        if not _same(mine[key], ref[key], defined):
            worst = int(np.nanargmax(np.where(defined, np.abs(mine[key] - ref[key]), -1)))
            raise _Wrong(f"{key} of {CLASSES[worst]} is {mine[key][worst]:.3f}, scikit-learn's "
                         f"{ref[key][worst]:.3f} (cm[i, j]: images of true class i predicted as j).")
    tp = np.diag(cm)
    arithmetic = (ref["precision"] + ref["recall"]) / 2
    f1_defined = support & said & (tp > 0)
    if _same(mine["f1"], arithmetic, f1_defined) and not _same(mine["f1"], ref["f1"], f1_defined):
        raise _Wrong("your F1 is the arithmetic mean of precision and recall; F1 is their harmonic mean, "
                     "2PR / (P + R).")
    if not _same(mine["f1"], ref["f1"], f1_defined):
        raise _Wrong("F1 differs from scikit-learn's: 2 * precision * recall / (precision + recall).")


def _compare_balanced(balanced, ref, recall, cm, support) -> None:
    if np.isclose(balanced, ref["balanced_accuracy"], atol=1e-6):
        return
    if np.isnan(balanced):
        raise _Wrong("balanced accuracy is NaN: a class without test images has no recall (NaN); average "
                     "over the classes that have images (np.nanmean).")
    if np.isclose(balanced, np.trace(cm) / cm.sum()):
        raise _Wrong("your balanced accuracy is plain accuracy (the diagonal over all images); balanced "
                     "accuracy is the mean of the per-class recalls.")
    if np.isclose(balanced, np.nan_to_num(recall).mean()):
        raise _Wrong("your balanced accuracy counts a class without test images as recall 0: average over "
                     "the classes that have images only.")
    if np.isclose(balanced, np.nanmean(np.where(cm.sum(0) > 0, np.diag(cm) / np.maximum(cm.sum(0), 1), np.nan))):
        raise _Wrong("your balanced accuracy is the mean precision; balanced accuracy is the mean of the "
                     "per-class recalls (over the classes with images).")
    raise _Wrong(f"balanced accuracy {balanced:.4f}, scikit-learn's {ref['balanced_accuracy']:.4f}: the mean "
                 "recall over the classes with images.")


# ------------------------------------------------------------------------------ Grad-CAM
class _ProbeNet(nn.Module):
    """A small CNN for the Grad-CAM check: `block` plays ResNet's layer4."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.block = nn.Conv2d(6, 10, 3, stride=2, padding=1)
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(10, len(CLASSES)))

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


def _plain_cam(model, images, score_of) -> torch.Tensor:
    """Grad-CAM at model.block for a score given the logits: the check's own variants of a mistake."""
    saved = {}
    handle = model.block.register_forward_hook(lambda m, i, o: saved.update(a=o))
    try:
        logits = model(images)
        gradients, = torch.autograd.grad(score_of(logits), saved["a"])
    finally:
        handle.remove()
    return torch.relu((gradients.mean(dim=(2, 3), keepdim=True) * saved["a"]).sum(1)).detach()


def check_grad_cam(my_grad_cam: Callable[..., Any]) -> bool:
    """`my_grad_cam(model, images, target, layer)` gives Grad-CAM maps (N, h, w) equal to captum's
    LayerGradCam (with its ReLU), and leaves no hook on the layer."""
    from captum.attr import LayerGradCam

    def run() -> str:
        model = _ProbeNet().eval()
        images = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            predicted = model(images).argmax(1)
        target = (predicted + 1) % len(CLASSES)  # not the predicted class: a CAM of the argmax is caught
        try:
            answer = _call(lambda: my_grad_cam(model, images, target, model.block), "your function")
        except _Wrong as wrong:
            if "_ProbeNet' object has no attribute" in str(wrong):
                raise _Wrong(f"{wrong}: hook the `layer` your function is given, not one named in it (the check "
                             "passes a small network of its own, without ResNet's layers).") from None
            if "Dimension out of range" in str(wrong):
                raise _Wrong(f"{wrong}: what your hooks caught is not a layer's feature maps (N, C, h, w): put "
                             "both hooks on `layer`, the function's argument, not on the model.") from None
            if "must match the size of tensor" not in str(wrong):
                raise
            raise _Wrong(f"{wrong}: the gradient does not have the layer output's shape: in the backward hook "
                         "take grad_outputs[0], the gradient at the layer's output (grad_inputs[0] is at its "
                         "input).") from None
        if model.block._forward_hooks or model.block._backward_hooks or model.block._backward_pre_hooks:
            raise _Wrong("your hooks are still on the layer after the function returned: keep the handles "
                         "and call handle.remove() (in a finally: block), or every later pass runs them.")
        if isinstance(answer, (tuple, list)):
            raise _Wrong(f"your function returned a {type(answer).__name__}; return the maps only.")
        if not isinstance(answer, torch.Tensor):
            raise _Wrong(f"your function returned {type(answer).__name__}, not a tensor of maps.")
        cams = answer.detach().float()
        if cams.dim() == 3 and tuple(cams.shape[1:]) == tuple(images.shape[-2:]):
            raise _Wrong(f"your maps have the image's size {tuple(cams.shape[1:])}: return the layer's maps "
                         "(here 6x6), taken with hooks on the `layer` you are given; stretching them to the "
                         "image is done afterwards (skinlib.gradcam.heatmap).")
        if tuple(cams.shape) != (3, 6, 6):
            raise _Wrong(f"your maps have shape {tuple(cams.shape)}; for 3 images and a layer of 6x6 maps "
                         "they should be (3, 6, 6): sum the weighted maps over the channels (dim=1).")
        reference = torch.relu(LayerGradCam(model, model.block).attribute(images, target=target))[:, 0].detach()
        if torch.allclose(cams, reference, rtol=1e-4, atol=1e-6):
            tip = (" (Tip: return maps.detach(): yours still hold the graph of the backward pass, and its "
                   "memory)") if answer.requires_grad else ""
            return f"your hooks give captum's LayerGradCam maps, and are removed afterwards.{tip}"
        _explain_cam(model, images, target, predicted, cams, reference)
    return _report("Grad-CAM", run)


def _explain_cam(model, images, target, predicted, cams, reference) -> None:
    if (cams < 0).any():
        raise _Wrong("your maps have negative values: apply ReLU to the weighted sum, keeping only what "
                     "raised the class score.")
    peak = reference.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    if torch.allclose(cams, reference / peak, rtol=1e-4, atol=1e-5):
        raise _Wrong("your maps are scaled to a maximum of 1: return them unscaled (heatmap() scales them for "
                     "the figure).")
    area = reference.shape[-1] * reference.shape[-2]
    if torch.allclose(cams, reference * area, rtol=1e-4, atol=1e-6):
        raise _Wrong(f"your maps are {area} times captum's: average the gradients over the positions "
                     "(mean over dims 2 and 3), not sum them.")
    chosen = _plain_cam(model, images, lambda logits: logits.gather(1, predicted[:, None]).sum())
    if torch.allclose(cams, chosen, rtol=1e-4, atol=1e-6):
        raise _Wrong("your maps are for the predicted class, not for `target`: take the score of "
                     "logits.gather(1, target[:, None]).")
    everything = _plain_cam(model, images, lambda logits: logits.sum())
    if torch.allclose(cams, everything, rtol=1e-4, atol=1e-6):
        raise _Wrong("your gradient is of the sum of every class score: backpropagate the target class's "
                     "score only.")
    raise _Wrong(f"your maps differ from captum's LayerGradCam (largest difference "
                 f"{(cams - reference).abs().max().item():.3g}): weights = gradients.mean(dim=(2, 3), "
                 "keepdim=True), then relu((weights * activations).sum(dim=1)).")


# ------------------------------------------------------------------------------ skinlib's answers
def reference_scores(cm) -> dict[str, Any]:
    """skinlib's answer to exercise 1: scikit-learn's scores, from the confusion matrix's counts."""
    cm = np.asarray(cm)
    truth = np.repeat(np.arange(len(cm)), cm.sum(axis=1))
    guess = np.concatenate([np.repeat(np.arange(len(cm)), row) for row in cm])
    return _reference(truth, guess)


def reference_grad_cam(model, images, target, layer) -> torch.Tensor:
    """skinlib's answer to exercise 2: `skinlib.gradcam.grad_cam`'s maps."""
    from skinlib.gradcam import grad_cam
    return grad_cam(model, images, target=target, layer=layer)[0]
