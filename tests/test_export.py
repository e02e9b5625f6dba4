"""Exported model files (skinlib.export): one file that loads with weights_only and predicts as before."""
from __future__ import annotations

import pickle
import zipfile

import pandas as pd
import pytest
import torch

from skinlib.data import CLASSES, IMAGENET_MEAN
from skinlib.export import ModelFileError, data_fingerprint, export_model, load_model
from skinlib.models import build_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("resnet50", pretrained=False).eval()
    path = export_model(tmp_path_factory.mktemp("export") / "model.pt", model, "resnet50",
                        data={"fingerprint": "ab" * 32, "images": 70, "synthetic": False},
                        metrics={"accuracy": 0.5, "balanced_accuracy": 0.25})
    return model, path


def test_the_file_loads_with_weights_only_and_holds_everything_needed(exported):
    _, path = exported
    state = torch.load(path, weights_only=True)
    assert state["format"] == "skinlib-model" and state["architecture"] == "resnet50"
    assert state["classes"] == list(CLASSES)
    assert state["preprocessing"] == {"resize": 256, "crop": 224, "mean": list(IMAGENET_MEAN),
                                      "std": [0.229, 0.224, 0.225]}
    assert state["data"]["fingerprint"] == "ab" * 32
    assert all(tensor.device.type == "cpu" for tensor in state["state_dict"].values())


def test_a_loaded_model_gives_the_same_outputs_as_the_original(exported):
    model, path = exported
    loaded = load_model(path)
    images = torch.randn(2, 3, 64, 64)  # ResNet-50 takes any size; small is quick
    with torch.no_grad():
        assert torch.equal(loaded.model(images), model(images))
    assert not loaded.model.training
    assert loaded.classes == list(CLASSES) and loaded.metrics["balanced_accuracy"] == 0.25
    assert loaded.transform()(torch.zeros(3, 300, 400, dtype=torch.uint8)).shape == (3, 224, 224)


def test_a_truncated_file_is_one_error_naming_it(exported, tmp_path):
    _, path = exported
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(ModelFileError, match="cut.pt is truncated"):
        load_model(cut)


def test_a_file_with_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "skinlib-model", "payload": pd.Timestamp(0)}, path)
    assert zipfile.is_zipfile(path)
    with pytest.raises(ModelFileError, match="evil.pt holds a pickled Python object and is refused"):
        load_model(path)


def test_a_training_checkpoint_is_not_a_model_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 1, "model": {}}, path)
    with pytest.raises(ModelFileError, match="checkpoint.pt is not a skinlib model file"):
        load_model(path)


def test_weights_of_another_architecture_are_refused(exported, tmp_path):
    _, path = exported
    state = torch.load(path, weights_only=True)
    state["architecture"] = "simplecnn"
    torch.save(state, tmp_path / "wrong.pt")
    with pytest.raises(ModelFileError, match="do not fit 'simplecnn'"):
        load_model(tmp_path / "wrong.pt")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ModelFileError, match="no model file at .*nothing.pt"):
        load_model(tmp_path / "nothing.pt")


def test_the_fingerprint_changes_with_an_image_a_label_or_the_split_and_not_with_row_order():
    frame = pd.DataFrame({"image": ["a", "b", "c"], "label": [0, 1, 2]})
    split = pd.Series(["train", "val", "test"])
    base = data_fingerprint(frame, split)
    assert data_fingerprint(frame.iloc[::-1], split.iloc[::-1]) == base
    assert data_fingerprint(frame.assign(label=[0, 1, 1]), split) != base
    assert data_fingerprint(frame.assign(image=["a", "b", "d"]), split) != base
    assert data_fingerprint(frame, pd.Series(["train", "test", "val"])) != base
