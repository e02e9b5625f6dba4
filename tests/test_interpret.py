"""What notebooks 04 and 05 compute (skinlib.interpret), against scikit-learn where it has the answer."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import classification_report, recall_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from skinlib.config import TrainConfig
from skinlib.data import CLASSES
from skinlib.export import ModelFileError, data_fingerprint, export_model
from skinlib.data import load_index
from skinlib.splits import grouped_split
from skinlib.course import course_models, find_saved
from skinlib.interpret import (MEL, balanced_loader, flips, melanoma_decision, most_confident, per_class_report,
                               predict_probs)
from skinlib.models import MODELS, build_model

rng = np.random.default_rng(0)
TARGETS = rng.integers(0, 8, size=200)
PROBS = rng.dirichlet(np.ones(8), size=200)


def test_per_class_report_matches_scikit_learns_classification_report():
    ours = per_class_report(TARGETS, PROBS)
    theirs = classification_report(TARGETS, PROBS.argmax(1), labels=range(8), target_names=CLASSES,
                                   output_dict=True, zero_division=np.nan)
    for name in CLASSES:
        for column, key in [("precision", "precision"), ("recall", "recall"), ("F1", "f1-score")]:
            assert ours.loc[name, column] == pytest.approx(theirs[name][key], nan_ok=True), (name, column)
        assert ours.loc[name, "support"] == theirs[name]["support"]


# Two thresholds are the P(MEL) of an image itself: it is referred (P(MEL) >= threshold), as the slider says.
@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.2, 0.5, 1.0, float(PROBS[TARGETS == MEL][0, MEL]),
                                       float(PROBS[TARGETS != MEL][0, MEL])])
def test_melanoma_decision_matches_scikit_learns_recall_of_each_side(threshold):
    d = melanoma_decision(TARGETS, PROBS[:, MEL], threshold)
    truth, referred = TARGETS == MEL, PROBS[:, MEL] >= threshold
    assert d["sensitivity"] == pytest.approx(recall_score(truth, referred, zero_division=0))
    assert d["specificity"] == pytest.approx(recall_score(~truth, ~referred, zero_division=0))
    assert d["tp"] + d["fn"] == truth.sum() and d["fp"] + d["tn"] == (~truth).sum()


def test_a_lesion_exactly_at_the_threshold_is_referred():
    d = melanoma_decision([MEL, 1, MEL, 2], [0.5, 0.5, 0.49, 0.2], 0.5)
    assert (d["tp"], d["fn"], d["fp"], d["tn"]) == (1, 1, 1, 1)


def test_melanoma_decision_without_melanomas_has_no_sensitivity():
    d = melanoma_decision([1, 2], [0.3, 0.9], 0.5)
    assert np.isnan(d["sensitivity"]) and d["specificity"] == 0.5


def test_most_confident_mistakes_come_first_and_are_mistakes():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7], [0.99, 0.01]])
    targets = np.array([1, 1, 1, 0, 0])
    assert most_confident(probs, targets, 5, wrong=True).tolist() == [0, 3, 1]
    assert most_confident(probs, targets, 1, wrong=False).tolist() == [4]


def test_tta_is_the_mean_of_the_four_flips():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(8))
    images = torch.randn(6, 3, 10, 10)
    model(images)  # sizes the lazy layer
    loader = DataLoader(TensorDataset(images, torch.arange(6) % 8), batch_size=4)
    probs, targets = predict_probs(model, loader, torch.device("cpu"), tta=True)
    with torch.no_grad():
        expected = torch.stack([model(v).softmax(1) for v in flips(images)]).mean(0)
    assert np.allclose(probs, expected.numpy(), atol=1e-6) and targets.tolist() == [0, 1, 2, 3, 4, 5]
    plain, _ = predict_probs(model, loader, torch.device("cpu"))
    assert not np.allclose(plain, probs)  # the flips change this model's answers


def test_balanced_loader_draws_every_class_about_equally():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    dataset = TensorDataset(torch.zeros(len(labels), 1), torch.as_tensor(labels))
    dataset.labels = labels
    loader = balanced_loader(DataLoader(dataset, batch_size=100), seed=0)
    drawn = torch.cat([y for _, y in loader] + [y for _, y in loader]).numpy()
    shares = np.bincount(drawn, minlength=3) / len(drawn)
    assert len(drawn) == 2000 and np.all(np.abs(shares - 1 / 3) < 0.05), shares


def test_a_saved_model_of_other_data_is_passed_over_for_one_of_this_data(tmp_path, capsys):
    frame = pd.DataFrame({"image": [f"i{k}" for k in range(8)], "label": list(range(8))})
    split = pd.Series(["train"] * 4 + ["val"] * 2 + ["test"] * 2)
    model = build_model("resnet50", pretrained=False)
    export_model(tmp_path / "other" / "model.pt", model, "resnet50", data={"fingerprint": "0" * 64})
    export_model(tmp_path / "mine" / "model.pt", model, "resnet50",
                 data={"fingerprint": data_fingerprint(frame, split)})
    found = find_saved([tmp_path / "other", tmp_path / "mine"], data_fingerprint(frame, split))
    assert found.path == str(tmp_path / "mine" / "model.pt")
    assert "other data" in capsys.readouterr().out
    assert find_saved([tmp_path / "other", tmp_path / "none"], data_fingerprint(frame, split)) is None


def test_a_missing_course_model_in_full_mode_names_the_notebook_that_makes_it(tmp_path):
    frame = pd.DataFrame({"image": [f"i{k}" for k in range(8)], "label": list(range(8))})
    split = pd.Series(["train"] * 4 + ["val"] * 2 + ["test"] * 2)
    config = TrainConfig(data="d", out=str(tmp_path / "x"), model="resnet50")
    with pytest.raises(ModelFileError, match=r"no SimpleCNN .*02_simple_cnn.*: run notebook 02 first"):
        course_models(tmp_path, frame, split, config, smoke=False)
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


@pytest.mark.slow
def test_in_smoke_mode_a_missing_model_gets_a_stand_in_that_the_next_notebook_finds(synthetic_dir, tmp_path,
                                                                                       monkeypatch, capsys):
    monkeypatch.delitem(MODELS, "simplecnn")  # the course's ResNet-50 alone
    frame = load_index(synthetic_dir)
    split = grouped_split(frame, seed=0)
    config = TrainConfig(data=str(synthetic_dir), out=str(tmp_path / "x"), model="simplecnn", epochs=1,
                         batch_size=2, max_batches=1, pretrained=False, num_workers=0, progress=False)
    first = course_models(tmp_path, frame, split, config, smoke=True)["ResNet-50"]
    said = capsys.readouterr().out
    assert "no ResNet-50 of notebook 03" in said and "(run notebook 03 to make it)" in said
    assert "SMOKE mode: training a short stand-in" in said
    assert first.architecture == "resnet50" and first.path == str(tmp_path / "stand-in-resnet50" / "model.pt")
    again = course_models(tmp_path, frame, split, config, smoke=True)["ResNet-50"]
    assert again.path == first.path and "training" not in capsys.readouterr().out


@pytest.mark.parametrize("n, shape", [(8, (4, 4)), (3, (2, 3)), (5, (4, 4))])
def test_the_grad_cam_grid_wraps_to_at_most_four_images_a_row(n, shape):
    from skinlib.interpret_plots import plot_gradcam

    titles = [f"image {i}" for i in range(n)]
    fig = plot_gradcam(torch.zeros(n, 3, 8, 8), torch.rand(n, 8, 8), titles)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == len(fig.axes) - 1, "one colour bar: the heatmap's scale"
    grid = np.array(panels, dtype=object).reshape(shape)
    shown = [ax.get_title() for ax in grid[0::2].flat if ax.get_images()]
    assert shown == titles, "each image once, row after row"
    overlays = [ax for ax in grid[1::2].flat if ax.get_images()]
    assert len(overlays) == n, "each image's Grad-CAM under it"
