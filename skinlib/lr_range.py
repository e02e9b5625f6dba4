"""The learning-rate range test (Smith 2017; fastai's `lr_find`): train for a few batches with
a rate that grows exponentially, and watch where the loss falls fastest and where it blows up.

The model's weights (and batch-norm statistics) are put back afterwards, so the test leaves it
as it found it. A smoothed loss (an exponential moving average with bias correction, as fastai)
makes the curve readable; the test stops once it exceeds 4 times its minimum.
"""
from __future__ import annotations

import copy
import itertools
import math
import textwrap

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import nn

from skinlib.engine import to_device_batch


def lr_range_test(model: nn.Module, loader, device, *, start: float = 1e-7, end: float = 10.0, steps: int = 100,
                  weight_decay: float = 0.0, smoothing: float = 0.98) -> dict[str, list[float]]:
    """Rates (start to end, geometric, one per batch; the loader is cycled if shorter) and the
    smoothed training loss after each, with Adam on the trainable parameters. Stops early when the
    loss diverges. The model is restored before returning."""
    device = torch.device(device)
    saved = copy.deepcopy(model.state_dict())
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=start, weight_decay=weight_decay)
    criterion, factor = nn.CrossEntropyLoss(), (end / start) ** (1 / max(steps - 1, 1))
    rates, losses, average, best = [], [], 0.0, math.inf
    model.train()
    try:
        for step, (images, labels) in enumerate(itertools.islice(_forever(loader), steps)):
            lr = start * factor ** step
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, labels = to_device_batch(images, labels, device)
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            average = smoothing * average + (1 - smoothing) * loss.item()  # one GPU wait per step: a short test
            smoothed = average / (1 - smoothing ** (step + 1))
            rates.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if not math.isfinite(smoothed) or smoothed > 4 * best:
                break
    finally:
        model.load_state_dict(saved)
    return {"lr": rates, "loss": losses}


def _forever(loader):
    """The loader's batches, pass after pass (itertools.cycle would keep every batch in memory)."""
    while True:
        yield from loader


def suggest_lr(result: dict[str, list[float]]) -> float:
    """fastai's "minimum / 10": a tenth of the rate at which the smoothed loss was lowest, a rate
    still on the falling slope, safely below where the loss turns up."""
    lowest = min(range(len(result["loss"])), key=result["loss"].__getitem__)
    return result["lr"][lowest] / 10


def plot_lr_range(result: dict[str, list[float]], suggestion: float | None = None,
                  title: str = "Learning-rate range test") -> Figure:
    """The smoothed loss against the rate (log scale), with a suggested rate marked."""
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.plot(result["lr"], result["loss"])
    if suggestion is not None:
        ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested {suggestion:.1e}")
        ax.legend(fontsize=8)
    ax.set(xscale="log", xlabel="learning rate (log scale)", ylabel="training loss (smoothed)",
           title="\n".join(textwrap.wrap(title, 55)))  # a long title wraps instead of running off the figure
    plt.close(fig)
    return fig
