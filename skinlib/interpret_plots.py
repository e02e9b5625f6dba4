"""Figures for looking inside a trained model (notebooks 04 and 05, `predict --cam`).

Like skinlib.plots, every function returns the matplotlib Figure (closed in pyplot, so a
notebook shows it once and a script saves it).
"""
from __future__ import annotations

import math
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.calibration import calibration_curve
from sklearn.metrics import auc, roc_curve

from skinlib.data import CLASSES, IMAGENET_MEAN, IMAGENET_STD
from skinlib.gradcam import overlay


def caveat(synthetic: bool, smoke: bool, pretrained: bool = True) -> str:
    """What a title must say of the model behind it: " (SYNTHETIC, SMOKE run, RANDOM initial weights)",
    or "" for a real run from ImageNet's weights."""
    said = [word for word, true in (("SYNTHETIC", synthetic), ("SMOKE run", smoke),
                                    ("RANDOM initial weights", not pretrained)) if true]
    return f" ({', '.join(said)})" if said else ""


def _done(fig: Figure) -> Figure:
    if fig.get_layout_engine() is None:  # a figure with a suptitle lays itself out ("constrained")
        fig.tight_layout()
    plt.close(fig)
    return fig


def _wrapped(title: str, fig: Figure) -> str:
    """A suptitle broken into lines that fit the figure's width (about 9 characters an inch)."""
    return "\n".join(textwrap.wrap(title, max(30, int(9 * fig.get_figwidth()))))


def to_rgb(images: torch.Tensor) -> np.ndarray:
    """ImageNet-normalised images (N, 3, H, W) back to displayable colours: (N, H, W, 3) in [0, 1]."""
    images = torch.as_tensor(images).detach().float().cpu()
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def plot_roc_ovr(targets, probs, classes=CLASSES, title: str = "ROC, each class against the rest") -> Figure:
    """One-vs-rest ROC curve of every class, its AUC in the legend (scikit-learn's roc_curve, auc).
    A class without positive or negative test images has no curve and is listed as such."""
    targets, probs = np.asarray(targets), np.asarray(probs)
    fig, ax = plt.subplots(figsize=(6.5, 6))
    for k, name in enumerate(classes):
        positive = targets == k
        if positive.all() or not positive.any():
            ax.plot([], [], " ", label=f"{name}: no curve ({int(positive.sum())} positives)")
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, k])
        # drawn over the frame and inside a margin: a perfect curve runs along the left and top edges
        ax.plot(fpr, tpr, label=f"{name}: AUC {auc(fpr, tpr):.2f} (n={int(positive.sum())})",  # n: its test images
                zorder=3, clip_on=False)
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.set(xlabel="false positive rate (1 - specificity)", ylabel="true positive rate (sensitivity)",
           title="\n".join(textwrap.wrap(title, 60)), xlim=(-0.02, 1.0), ylim=(0, 1.03))
    ax.legend(fontsize=8, loc="lower right")
    return _done(fig)


def plot_reliability(targets, probs, n_bins: int = 10, title: str = "Reliability: is the confidence honest?") -> Figure:
    """Reliability diagram: among images predicted with confidence p (the top probability), the
    share that were right, against p (sklearn.calibration.calibration_curve); a calibrated model
    lies on the diagonal. Below: how many images fall in each confidence bin."""
    targets, probs = np.asarray(targets), np.asarray(probs)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == targets
    right, said = calibration_curve(correct, confidence, n_bins=n_bins, strategy="uniform")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6.5), height_ratios=(3, 1), sharex=True)
    top.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    top.plot(said, right, "o-", label="this model")
    top.set(ylabel="share correct", title=_wrapped(title, fig), ylim=(0, 1.02))  # as wide as the axes
    top.legend(fontsize=8)
    bottom.hist(confidence, bins=n_bins, range=(0, 1), color="tab:blue", alpha=0.7)
    bottom.set(xlabel="confidence (top probability)", ylabel="images", xlim=(0, 1))
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))  # a count of images: no 7.5
    return _done(fig)


def plot_examples(images, targets, probs, classes=CLASSES, ncols: int = 6, title: str = "") -> Figure:
    """Normalised images (N, 3, H, W), each titled with its true class and the predicted class with
    its probability (green when right, red when wrong)."""
    pixels, probs = to_rgb(images), np.asarray(probs)
    n = len(pixels)
    if n == 0:
        raise ValueError("no images to show")
    ncols = min(ncols, n)
    # at least 6 inches wide, so that a title over one or two images still fits above them
    fig, axes = plt.subplots(math.ceil(n / ncols), ncols, figsize=(max(2.2 * ncols, 6), 2.6 * math.ceil(n / ncols)),
                             squeeze=False, layout="constrained" if title else None)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            pred, truth = int(probs[i].argmax()), int(targets[i])
            ax.imshow(pixels[i])
            ax.set_title(f"true {classes[truth]}\npred {classes[pred]} {probs[i, pred]:.2f}", fontsize=9,
                         color="tab:green" if pred == truth else "tab:red")
    if title:
        fig.suptitle(_wrapped(title, fig))
    return _done(fig)


def plot_gradcam(images, heats, titles, colours=None, title: str = "", ncols: int = 4) -> Figure:
    """Each image the model saw above its Grad-CAM overlay, `ncols` images to a band (more wrap
    to the next band), with a colour bar of the heatmap's scale."""
    pixels, heats = to_rgb(images), torch.as_tensor(heats).cpu().numpy()
    n = len(pixels)
    ncols, bands = min(ncols, n), math.ceil(n / ncols)
    fig, axes = plt.subplots(2 * bands, ncols, figsize=(max(2.6 * ncols, 6) + 1, 5.4 * bands), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        top, bottom = axes[2 * (i // ncols), i % ncols], axes[2 * (i // ncols) + 1, i % ncols]
        top.imshow(pixels[i])
        top.set_title(titles[i], fontsize=9, color=(colours or ["black"] * n)[i])
        bottom.imshow(overlay(pixels[i], heats[i]))
    for band in range(bands):  # a y label (not free text) so that the layout keeps room for it
        label = axes[2 * band + 1, 0]
        label.axis("on")
        label.set(xticks=[], yticks=[], ylabel="Grad-CAM")
        for spine in label.spines.values():
            spine.set_visible(False)
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps["jet"]), ax=axes[1::2, :].ravel().tolist(),
                       shrink=0.8, ticks=[0, 0.5, 1])
    bar.set_label("evidence (1: strongest)")
    if title:
        fig.suptitle(_wrapped(title, fig))
    return _done(fig)


def plot_top_k(probs, classes=CLASSES, k: int = 3, ax=None) -> Figure:
    """Horizontal bars of the k most probable classes with their probabilities, in a figure of their
    own or in `ax` (whose figure keeps its own layout)."""
    probs = np.asarray(probs, dtype=float).reshape(-1)
    order = np.argsort(probs)[::-1][:k]
    own = ax is None
    fig, ax = plt.subplots(figsize=(4, 0.5 + 0.45 * k)) if own else (ax.figure, ax)
    bars = ax.barh([classes[i] for i in order][::-1], probs[order][::-1], color="tab:blue")
    ax.bar_label(bars, labels=[f"{p:.2f}" for p in probs[order][::-1]], padding=3, fontsize=9)
    ax.set(xlim=(0, 1.15), xlabel="probability", title=f"top {k}")
    return _done(fig) if own else fig


def plot_threshold_point(fpr, tpr, point: tuple[float, float], threshold: float,
                         title: str = "Where the threshold puts you") -> Figure:
    """The melanoma-against-rest ROC curve with the operating point of one threshold marked."""
    fig, ax = plt.subplots(figsize=(4.8, 4.3))
    ax.plot(fpr, tpr, label="MEL against the rest", zorder=3, clip_on=False)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.plot(*point, "o", color="tab:red", markersize=9, label=f"threshold {threshold:.2f}")
    ax.set(xlabel="1 - specificity (false alarms)", ylabel="sensitivity (melanomas found)",
           xlim=(-0.02, 1), ylim=(0, 1.03), title="\n".join(textwrap.wrap(title, 42)))  # a long title wraps
    ax.legend(fontsize=8, loc="lower right")
    return _done(fig)
