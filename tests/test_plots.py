"""Plots: the returned Figures carry the right axes, titles, tick labels and data."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from skinlib.data import CLASSES, IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from skinlib.metrics import ConfusionMatrix  # noqa: E402
from skinlib.plots import (  # noqa: E402
    plot_class_distribution,
    plot_confusion,
    plot_curves,
    plot_image_grid,
    plot_one_cycle,
)

HISTORY = [
    {"epoch": 1, "train_loss": 1.9, "val_loss": 1.7, "train_accuracy": 0.40, "val_accuracy": 0.45},
    {"epoch": 2, "train_loss": 1.4, "val_loss": 1.5, "train_accuracy": 0.55, "val_accuracy": 0.52},
    {"epoch": 3, "train_loss": 1.1, "val_loss": 1.4, "train_accuracy": 0.63, "val_accuracy": 0.56},
]


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def tick_texts(labels):
    return [label.get_text() for label in labels]


def test_plot_curves_draws_train_and_val_per_metric():
    fig = plot_curves(HISTORY)
    assert isinstance(fig, Figure)
    accuracy_ax, loss_ax = fig.axes
    assert accuracy_ax.get_title() == "Accuracy" and loss_ax.get_title() == "Loss"
    assert accuracy_ax.get_xlabel() == "epoch"
    lines = lines_by_label(loss_ax)
    assert set(lines) == {"train", "val"}
    np.testing.assert_allclose(lines["val"].get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(lines["val"].get_ydata(), [1.7, 1.5, 1.4])
    np.testing.assert_allclose(lines_by_label(accuracy_ax)["train"].get_ydata(), [0.40, 0.55, 0.63])


def test_plot_curves_adds_balanced_accuracy_dashed():
    history = [dict(row, train_balanced_accuracy=0.1 * i, val_balanced_accuracy=0.2 * i) for i, row in enumerate(HISTORY)]
    lines = lines_by_label(plot_curves(history).axes[0])
    assert set(lines) == {"train", "val", "train balanced accuracy", "val balanced accuracy"}
    assert lines["val balanced accuracy"].get_linestyle() == "--"
    assert lines["val balanced accuracy"].get_color() == lines["val"].get_color()
    np.testing.assert_allclose(lines["val balanced accuracy"].get_ydata(), [0.0, 0.2, 0.4])


def test_plot_curves_draws_test_split_when_present():
    history = [{"train_accuracy": 0.5, "test_accuracy": 0.4}, {"train_accuracy": 0.6, "test_accuracy": 0.5}]
    ax = plot_curves(history, metrics=("accuracy",)).axes[0]
    assert set(lines_by_label(ax)) == {"train", "test"}
    np.testing.assert_allclose(lines_by_label(ax)["test"].get_xdata(), [1, 2])  # no "epoch" key: 1, 2, ...


def test_plot_curves_names_a_metric_the_history_lacks():
    with pytest.raises(ValueError, match="no train_f1 or val_f1.*train_accuracy"):
        plot_curves(HISTORY, metrics=("f1",))


def test_plot_curves_leaves_no_figure_open_in_pyplot():
    before = plt.get_fignums()
    plot_curves(HISTORY)
    assert plt.get_fignums() == before


def random_confusion(seed=0) -> tuple[ConfusionMatrix, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets, preds = rng.integers(0, 8, 200), rng.integers(0, 8, 200)
    targets[targets == 5] = 0  # no DF: an empty row must normalise to zeros, not NaN
    cm = ConfusionMatrix(8).update(torch.as_tensor(preds), torch.as_tensor(targets))
    return cm, confusion_matrix(targets, preds, labels=range(8))


def test_plot_confusion_shows_counts_and_row_normalised_side_by_side():
    cm, expected = random_confusion()
    fig = plot_confusion(cm, CLASSES)
    heatmaps = [ax for ax in fig.axes if ax.get_xlabel() == "predicted"]  # the others are colour bars
    assert len(heatmaps) == 2
    counts_ax, normalised_ax = heatmaps
    assert "counts" in counts_ax.get_title() and "row-normalised" in normalised_ax.get_title()
    for ax in heatmaps:
        assert ax.get_ylabel() == "true"
        assert tick_texts(ax.get_xticklabels()) == list(CLASSES)
        assert tick_texts(ax.get_yticklabels()) == list(CLASSES)
    # the annotations are written row by row
    assert [int(t.get_text()) for t in counts_ax.texts] == expected.ravel().tolist()
    totals = expected.sum(axis=1, keepdims=True)
    by_row = np.divide(expected, totals, out=np.zeros(expected.shape), where=totals > 0)
    shares = [f"{v:.2f}" if total else "–" for row, total in zip(by_row, totals.ravel()) for v in row]
    assert [t.get_text() for t in normalised_ax.texts] == shares
    assert (totals == 0).any(), "the example should have a class with no images (a row of dashes)"


def test_the_colour_bar_of_counts_shows_whole_numbers_only():
    fig = plot_confusion(np.diag([3, 1, 0, 0, 3, 0, 0, 1]), CLASSES, normalize=False)  # few images: a smoke run
    colour_bar = next(ax for ax in fig.axes if ax.get_xlabel() != "predicted")
    ticks = [tick for tick in colour_bar.get_yticks() if 0 <= tick <= 3]
    assert len(ticks) >= 2 and all(float(tick).is_integer() for tick in ticks)


@pytest.mark.parametrize("normalize, word", [(False, "counts"), (True, "row-normalised")])
def test_plot_confusion_single_panel(normalize, word):
    cm, _ = random_confusion()
    heatmaps = [ax for ax in plot_confusion(cm.matrix, normalize=normalize).axes if ax.get_xlabel() == "predicted"]
    assert len(heatmaps) == 1 and word in heatmaps[0].get_title()


def test_plot_confusion_rejects_a_bad_normalize_value():
    with pytest.raises(ValueError, match="normalize"):
        plot_confusion(np.eye(8, dtype=int), normalize="rows")


def test_plot_image_grid_titles_label_and_prediction_in_colour():
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    fig = plot_image_grid(images, labels=[0, 1, 2, 3, 4], preds=[0, 1, 7, 3, 4], ncols=3)
    assert len(fig.axes) == 6  # 2 rows x 3 columns, the last one empty
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[2] == "true BCC\npred SCC" and titles[5] == ""
    assert fig.axes[2].title.get_color() == "tab:red"
    assert fig.axes[0].title.get_color() == "tab:green"
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), images[1].permute(1, 2, 0).numpy() / 255)


def test_plot_image_grid_undoes_imagenet_normalisation():
    pixels = torch.rand(2, 3, 8, 8)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    fig = plot_image_grid((pixels - mean) / std, labels=torch.tensor([1, 6]))
    assert [ax.get_title() for ax in fig.axes] == ["NV", "VASC"]
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), pixels[0].permute(1, 2, 0).numpy(), atol=1e-5)


def test_plot_image_grid_rejects_channels_last_images():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\), got \(2, 8, 8, 3\)"):
        plot_image_grid(torch.rand(2, 8, 8, 3), labels=[0, 1])


def test_plot_class_distribution_labels_bars_with_count_and_share():
    counts = {"MEL": 4522, "NV": 12875, "DF": 239}
    fig = plot_class_distribution(counts)
    ax = fig.axes[0]
    assert [bar.get_height() for bar in ax.patches] == [4522, 12875, 239]
    assert tick_texts(ax.get_xticklabels()) == ["MEL", "NV", "DF"]
    assert [t.get_text() for t in ax.texts] == ["4,522\n25.6%", "12,875\n73.0%", "239\n1.4%"]
    assert ax.get_title() == "Images per class (n=17,636)"


def test_figures_carry_the_title_they_are_given():
    history = [{"epoch": 1, "train_accuracy": 0.5, "val_accuracy": 0.4, "train_loss": 1.0, "val_loss": 1.2}]
    title = "SimpleCNN, SYNTHETIC data, SMOKE run"
    assert plot_curves(history, title=title)._suptitle.get_text() == title
    assert plot_confusion(random_confusion()[0], title=title)._suptitle.get_text() == title
    assert plot_curves(history)._suptitle is None


def test_curve_axes_show_whole_epochs_only():
    for epochs in (1, 3, 25):
        history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e} for e in range(1, epochs + 1)]
        ax = plot_curves(history, metrics=("loss",)).axes[0]
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), (epochs, ticks)


def test_plot_image_grid_adds_captions_under_the_class():
    fig = plot_image_grid(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), [0, 1], captions=["lesion A", "lesion B"])
    assert [ax.get_title() for ax in fig.axes] == ["MEL\nlesion A", "NV\nlesion B"]


def test_curve_legend_sits_below_the_axes_not_on_the_curves():
    fig = plot_curves(HISTORY)
    fig.canvas.draw()
    for ax in fig.axes:
        legend, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
        assert legend.y1 <= axes_box.y0, "the legend overlaps the plotting area"


def test_confusion_class_names_read_horizontally_on_both_axes():
    for ax in plot_confusion(random_confusion()[0]).axes[:2]:  # the heatmaps, not their colour bars
        assert tick_texts(ax.get_yticklabels()) == list(CLASSES)
        assert all(label.get_rotation() == 0 for label in ax.get_yticklabels())


def test_plot_image_grid_gives_each_label_its_own_row():
    labels = [0, 0, 0, 0, 3, 3, 3, 4, 4, 4, 4]  # AK (3) has only 3 images
    fig = plot_image_grid(torch.zeros(len(labels), 3, 8, 8, dtype=torch.uint8), labels, ncols=4, row_per_label=True)
    grid = [[ax.get_title() for ax in fig.axes[row * 4:(row + 1) * 4]] for row in range(3)]
    assert grid == [["MEL"] * 4, ["AK"] * 3 + [""], ["BKL"] * 4]
    with pytest.raises(ValueError, match="more than ncols=2 images of label 0"):
        plot_image_grid(torch.zeros(3, 3, 8, 8, dtype=torch.uint8), [0, 0, 0], ncols=2, row_per_label=True)


def test_plot_class_distribution_carries_its_title():
    fig = plot_class_distribution({"MEL": 3, "NV": 5}, title="Images per class: synthetic-800-0 (SYNTHETIC)")
    assert fig._suptitle.get_text() == "Images per class: synthetic-800-0 (SYNTHETIC)"
    assert fig.axes[0].get_title() == "", "one heading, not the title twice"
    assert fig.axes[0].get_xlabel() == "class (8 images)"


def one_cycle_reference(max_lr, total):
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=max_lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_plot_one_cycle_draws_torchs_schedule_of_the_run():
    from skinlib.config import TrainConfig

    config = TrainConfig(data="d", out="o", epochs=3, batch_size=10, lr=1e-3)
    fig = plot_one_cycle(config, train_images=41)  # 4 full batches and one of 1, dropped: 4 steps
    line = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), one_cycle_reference(1e-3, 12))
    np.testing.assert_allclose(line.get_xdata(), np.arange(12) / 4)
    assert fig._suptitle.get_text() == "OneCycleLR, peak 0.001: 3 epochs of 4 steps (this run)"


def test_plot_one_cycle_of_a_smoke_run_shows_the_full_run_and_says_so():
    from skinlib.config import TrainConfig

    smoke = TrainConfig(data="d", out="o", epochs=2, batch_size=4, max_batches=2)
    fig = plot_one_cycle(smoke, train_images=560, smoke=True, synthetic=True)
    assert len(fig.axes[0].get_lines()[0].get_ydata()) == 25 * 9  # 560 images in batches of 64
    assert fig._suptitle.get_text() == ("OneCycleLR, peak 0.0007: 25 epochs of 9 steps (the full run on this data "
                                        "(SYNTHETIC); this SMOKE run takes 4 steps)")


def test_plot_one_cycle_counts_one_epoch_and_one_step_in_the_singular():
    from skinlib.config import TrainConfig

    fig = plot_one_cycle(TrainConfig(data="d", out="o", epochs=1, batch_size=64, lr=1e-3), train_images=50)
    assert fig._suptitle.get_text() == "OneCycleLR, peak 0.001: 1 epoch of 1 step (this run)"
