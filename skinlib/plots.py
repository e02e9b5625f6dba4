"""The figures of the course: learning curves, confusion matrix, image grid, class distribution,
the one-cycle learning-rate schedule.

Every function returns the matplotlib Figure, so a notebook shows it (as the cell's last value)
and the CLI saves it (`fig.savefig(path)`). The figure is closed in pyplot before it is
returned: otherwise Jupyter would draw it twice (once as an open pyplot figure, once as the
returned value), and a long CLI run would pile up open figures.
"""
from __future__ import annotations


import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from skinlib.config import TrainConfig
from skinlib.data import CLASSES, IMAGENET_MEAN, IMAGENET_STD
from skinlib.metrics import as_array

SPLIT_COLOURS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}


def _done(fig: Figure, title: str | None = None) -> Figure:
    if title:
        fig.suptitle(title)
    # tight_layout leaves no room for a figure title by itself: keep a strip at the top for it
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.15 / fig.get_figheight()) if title else None)
    plt.close(fig)
    return fig


def plot_curves(history: list[dict], metrics=("accuracy", "loss"), title: str | None = None) -> Figure:
    """One panel per metric, one line per split (`train_<m>`, `val_<m>`, `test_<m>`) over the epochs
    (whole numbers on the axis), under `title` (say which model, data and mode).

    `train_balanced_<m>` / `val_balanced_<m>` (balanced accuracy), when the history has them,
    are drawn dashed in the colour of their split.
    """
    if not history:
        raise ValueError("history is empty: there is no epoch to plot")
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        drawn = False
        for split, colour in SPLIT_COLOURS.items():
            for key, style, label in (
                (f"{split}_{metric}", "-", split),
                (f"{split}_balanced_{metric}", "--", f"{split} balanced {metric}"),
            ):
                if any(key in row for row in history):
                    values = [np.nan if row.get(key) is None else row[key] for row in history]
                    ax.plot(epochs, values, style, color=colour, marker="o", markersize=3, label=label)
                    drawn = True
        if not drawn:
            keys = sorted({key for row in history for key in row})
            raise ValueError(f"history has no train_{metric} or val_{metric}; its keys are {keys}")
        ax.set_title(metric.replace("_", " ").capitalize())
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
        # below the axes, in one row: inside them, it would hide part of a curve
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=4, frameon=False)
    return _done(fig, title)


def plot_confusion(cm, classes=CLASSES, normalize="both", title: str | None = None) -> Figure:
    """Confusion matrix heatmap(s), true class down, prediction across, under `title`.

    normalize: False = counts, True = each row divided by its total (recall on the diagonal;
    a class with no images gets a row of dashes: it has no recall), "both" = the two side by side.
    """
    counts = as_array(cm)
    if len(classes) != len(counts):
        raise ValueError(f"{len(classes)} class names for a {len(counts)}-class confusion matrix")
    totals = counts.sum(axis=1, keepdims=True)
    by_row = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    shares = np.where(totals > 0, np.char.mod("%.2f", by_row), "–")
    panels = {
        False: [("counts", counts, counts.astype(int).astype(str))],
        True: [("row-normalised: recall on the diagonal", by_row, shares)],
    }
    panels["both"] = panels[False] + panels[True]
    if normalize not in panels:
        raise ValueError(f'normalize must be "both", True or False, got {normalize!r}')
    chosen = panels[normalize]
    fig, axes = plt.subplots(1, len(chosen), figsize=(7 * len(chosen), 6), squeeze=False)
    for ax, (what, data, labels) in zip(axes[0], chosen):
        bar = _heatmap(ax, data, labels, list(classes))
        if data is counts:  # a count of images is whole: no 0.5 or 2.5 on its colour bar
            bar.locator = MaxNLocator(integer=True)
            bar.update_ticks()
        ax.set_title(f"Confusion matrix ({what})")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.tick_params(axis="y", labelrotation=0)  # class names read across, like the x axis
    return _done(fig, title)


def _heatmap(ax, data: np.ndarray, labels: np.ndarray, classes: list[str]):
    """A matrix as coloured squares with a colour bar (returned), each cell written on it (dark text
    on light cells, white on dark ones), the classes along both axes."""
    image = ax.imshow(data, cmap="Blues")
    bar = ax.figure.colorbar(image, ax=ax)
    middle = (np.nanmax(data) + np.nanmin(data)) / 2 if data.size else 0
    for (row, column), label in np.ndenumerate(labels):  # row by row
        ax.text(column, row, label, ha="center", va="center", fontsize=8,
                color="white" if data[row, column] > middle else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    return bar


def _to_display(images) -> np.ndarray:
    """(N, 3, H, W) uint8 or float tensor -> (N, H, W, 3) floats in [0, 1]; floats still normalised."""
    if isinstance(images, (list, tuple)):
        images = torch.stack([torch.as_tensor(image) for image in images])
    images = torch.as_tensor(images).detach().cpu()
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    return images.permute(0, 2, 3, 1).numpy()


def plot_image_grid(
    images, labels, preds=None, classes=CLASSES, ncols: int = 8, denormalize: bool = True,
    captions=None, title: str | None = None, row_per_label: bool = False,
) -> Figure:
    """A grid of images titled by their class, and by the prediction when given (green right, red wrong);
    `captions` (one string per image) add a line under the class; `title` heads the figure.
    `row_per_label=True` starts a row for each label (in order of first appearance), up to `ncols`
    images each, blank where a class has fewer: a short class does not shift the others.

    uint8 images are shown as they are; float images are assumed ImageNet-normalised (as the
    transforms leave them) and are mapped back to colours unless `denormalize=False`.
    """
    uint8 = torch.as_tensor(images[0] if isinstance(images, (list, tuple)) else images).dtype == torch.uint8
    pixels = _to_display(images).astype(np.float32)
    if uint8:
        pixels = pixels / 255
    elif denormalize:
        pixels = pixels * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)
    pixels = pixels.clip(0, 1)
    labels = [int(label) for label in labels]
    preds = None if preds is None else [int(pred) for pred in preds]
    n = len(pixels)
    if n == 0 or len(labels) != n or (preds is not None and len(preds) != n):
        raise ValueError(
            f"need at least one image and as many labels (and preds) as images: {n} images, "
            f"{len(labels)} labels, {'no' if preds is None else len(preds)} preds"
        )
    slots = _grid_slots(labels, ncols, row_per_label)
    nrows, ncols = max(row for row, _ in slots) + 1, max(col for _, col in slots) + 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(2 * ncols, 2.6 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (row, col) in enumerate(slots):
        ax = axes[row, col]
        ax.imshow(pixels[i])
        if preds is None:
            caption = f"\n{captions[i]}" if captions is not None else ""
            ax.set_title(f"{classes[labels[i]]}{caption}", fontsize=9)
        else:
            right = preds[i] == labels[i]
            ax.set_title(
                f"true {classes[labels[i]]}\npred {classes[preds[i]]}",
                fontsize=9, color="tab:green" if right else "tab:red",
            )
    return _done(fig, title)


def _grid_slots(labels: list[int], ncols: int, row_per_label: bool) -> list[tuple[int, int]]:
    """(row, column) of each image: in reading order, or a row per label (its first `ncols` images)."""
    if not row_per_label:
        return [divmod(i, ncols) for i in range(len(labels))]
    rows = {label: row for row, label in enumerate(dict.fromkeys(labels))}
    seen: dict[int, int] = {}
    slots = []
    for label in labels:
        seen[label] = seen.get(label, -1) + 1
        if seen[label] >= ncols:
            raise ValueError(f"more than ncols={ncols} images of label {label} for one row each")
        slots.append((rows[label], seen[label]))
    return slots


def plot_class_distribution(counts: dict[str, int], title: str | None = None) -> Figure:
    """Bar chart of images per class, each bar labelled with its count and share of the total,
    under `title` (say which data, and SYNTHETIC when it is)."""
    names, values = list(counts), [int(v) for v in counts.values()]
    total = sum(values)
    if total == 0:
        raise ValueError("class counts are all zero")
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names)), 4))
    bars = ax.bar(names, values, color=[plt.get_cmap("tab10")(i % 10) for i in range(len(names))])
    ax.bar_label(bars, labels=[f"{v:,}\n{100 * v / total:.1f}%" for v in values], fontsize=8)
    if title:  # one heading: `title` above the figure, the total under the axis
        ax.set_xlabel(f"class ({total:,} images)")
    else:
        ax.set(title=f"Images per class (n={total:,})", xlabel="class")
    ax.set_ylabel("images")
    ax.margins(y=0.2)  # room for the labels above the tallest bar
    return _done(fig, title)


def _count(n: int, noun: str) -> str:
    """The count and its noun, plural unless the count is 1: "1 step", "4 steps"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def plot_one_cycle(config: TrainConfig, train_images: int, smoke: bool = False,
                   synthetic: bool = False) -> Figure:
    """The learning rate of every step of a one-cycle run of `config` (its lr as the peak, its epochs
    and batch size) over `train_images` training images: torch's OneCycleLR on a throw-away
    optimizer, stepped once per batch as `fit` steps it.

    A smoke run takes a few steps only, so with `smoke=True` the figure shows the full run on
    this data instead (TrainConfig's default epochs and batch size) and says so in its title.
    """
    def steps_per_epoch(batch: int) -> int:  # as make_loaders: a last training batch of 1 is dropped
        return train_images // batch + (train_images % batch > 1)

    run = TrainConfig(data=config.data, out=config.out, lr=config.lr) if smoke else config
    steps = steps_per_epoch(run.batch_size)
    total = run.epochs * steps
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total)
    rates = []
    for _ in range(total):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(np.arange(total) / steps, rates)
    ax.set(xlabel="epoch", ylabel="learning rate")
    data = " (SYNTHETIC)" if synthetic else ""
    if smoke:
        smoke_steps = config.epochs * min(steps_per_epoch(config.batch_size), config.max_batches or total)
        what = f"the full run on this data{data}; this SMOKE run takes {_count(smoke_steps, 'step')}"
    else:
        what = f"this run{data}"
    return _done(fig, f"OneCycleLR, peak {config.lr:g}: {_count(run.epochs, 'epoch')} of {_count(steps, 'step')} "
                      f"({what})")
