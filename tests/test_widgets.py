"""Notebook 05's widget handlers (skinlib.widgets), driven without a browser."""
from __future__ import annotations

import datetime
import re

import numpy as np
import pytest
import torch
from PIL import Image

from skinlib import widgets
from skinlib.data import CLASS_NAMES, CLASSES, IMAGES_DIR, ImageError
from skinlib.export import ExportedModel
from skinlib.interpret import MEL, melanoma_decision
from skinlib.models import build_model
from skinlib.widgets import (MAX_UPLOAD_BYTES, explain, explanation_figure, image_from_upload, threshold_app,
                             threshold_report, try_model_app, uploaded_file)


@pytest.fixture(scope="module")
def exported():
    torch.manual_seed(0)
    return ExportedModel(model=build_model("resnet50", pretrained=False).eval(), architecture="resnet50",
                         classes=list(CLASSES), preprocessing={"resize": 256, "crop": 224}, data={}, metrics={},
                         path="model.pt")


@pytest.fixture(scope="module")
def jpeg(real_sample_dir):
    return sorted((real_sample_dir / IMAGES_DIR).glob("*.jpg"))[0]


def shown_sensitivity(html: str) -> str:
    return re.search(r"class='sensitivity'>([^<]*)<", html).group(1)


# ---------------------------------------------------------------- uploads
def upload_as_the_browser_does(upload, name: str, content: bytes) -> None:
    """What the front end sends a FileUpload when a file is chosen: in ipywidgets 8 its `value`; in
    ipywidgets 7 (Colab's 7.7.1, where `value` is read-only) the metadata, the bytes, then a counter."""
    import ipywidgets

    if int(ipywidgets.__version__.split(".")[0]) >= 8:
        upload.value = ({"name": name, "type": "image/jpeg", "size": len(content), "content": memoryview(content),
                         "last_modified": datetime.datetime(2026, 1, 1)},)
    else:
        upload.metadata = [{"name": name, "type": "image/jpeg", "size": len(content), "lastModified": 0}]
        upload.data = [content]
        upload._counter += 1


def test_an_upload_is_read_from_ipywidgets_8_and_7_values(jpeg):
    data = jpeg.read_bytes()
    v8 = ({"name": "lesion.jpg", "type": "image/jpeg", "size": len(data), "content": memoryview(data),
           "last_modified": datetime.datetime(2026, 1, 1)},)
    v7 = {"lesion.jpg": {"metadata": {"name": "lesion.jpg", "type": "image/jpeg", "size": len(data)},
                         "content": data}}
    assert uploaded_file(v8) == uploaded_file(v7) == ("lesion.jpg", data)
    assert uploaded_file(()) is None and uploaded_file({}) is None


def test_an_uploaded_image_is_decoded_like_every_image_of_the_kit(jpeg):
    image = image_from_upload("lesion.jpg", jpeg.read_bytes())
    assert image.mode == "RGB" and image.size == Image.open(jpeg).size


@pytest.mark.parametrize("content, needle", [(b"", "empty file"), (b"not an image at all", "not an image"),
                                              (b"x" * (MAX_UPLOAD_BYTES + 1), "more than this tool accepts")])
def test_a_bad_upload_is_an_error_naming_the_uploaded_file(content, needle):
    with pytest.raises(ImageError, match=needle) as caught:
        image_from_upload("holiday.jpg", content)
    assert str(caught.value).startswith("holiday.jpg: ")


# ---------------------------------------------------------------- one image
def test_explain_gives_probabilities_and_a_heatmap_the_size_of_the_crop(exported, jpeg):
    result = explain(exported, Image.open(jpeg).convert("RGB"))
    assert result.probs.shape == (8,) and result.probs.sum() == pytest.approx(1, abs=1e-5)
    assert result.crop.shape == (224, 224, 3) and result.heat.shape == (224, 224)
    assert 0 <= result.heat.min() and result.heat.max() <= 1


def test_the_try_app_redraws_for_another_image_and_for_an_upload(exported, real_sample_dir):
    paths = sorted((real_sample_dir / IMAGES_DIR).glob("*.jpg"))[:2]
    app = try_model_app({"ResNet-50": exported}, {p.stem: str(p) for p in paths})
    _, (model_box, image_box, upload), message, out = app.children[0], app.children[1].children, *app.children[2:]
    assert "not a medical device" in app.children[0].value
    first = out.outputs
    assert first and "image/png" in first[0]["data"], "the first image is shown at once"
    image_box.value = paths[1].stem
    assert out.outputs and out.outputs != first
    upload_as_the_browser_does(upload, "bad.jpg", b"abc")
    assert "bad.jpg" in message.value


# ---------------------------------------------------------------- the threshold
TARGETS = np.array([MEL, MEL, MEL, 1, 2, 3, 4, MEL])
MEL_PROBS = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.05, 0.45])


def test_threshold_report_shows_the_decisions_numbers(exported):
    html, figure = threshold_report(TARGETS, MEL_PROBS, 0.5)
    d = melanoma_decision(TARGETS, MEL_PROBS, 0.5)
    assert shown_sensitivity(html) == f"{d['sensitivity']:.3f}" == "0.500"
    assert f"{d['fp']} false alarms" in html and f"{d['fn']} missed" in html
    point = figure.axes[0].lines[-1].get_xydata()[0]
    assert point == pytest.approx([1 - d["specificity"], d["sensitivity"]])


def test_without_melanomas_there_is_no_roc_curve_but_no_error():
    html, figure = threshold_report(np.array([1, 2]), np.array([0.2, 0.6]), 0.5)
    assert figure is None and "no ROC curve" in html


def test_moving_the_slider_updates_the_sensitivity_shown():
    app = threshold_app(TARGETS, MEL_PROBS, value=0.5)
    slider, report = app.children[1], app.children[2]
    assert shown_sensitivity(report.value) == "0.500"
    slider.value = 0.1
    assert shown_sensitivity(report.value) == "1.000"
    slider.value = 1.0
    assert shown_sensitivity(report.value) == "0.000"


# ---------------------------------------------------------------- SYNTHETIC and class names
@pytest.mark.parametrize("synthetic, smoke", [(True, False), (False, False), (False, True), (True, True)])
def test_the_threshold_tools_say_synthetic_and_smoke_exactly_when_they_are(synthetic, smoke):
    html, figure = threshold_report(TARGETS, MEL_PROBS, 0.5, synthetic=synthetic, smoke=smoke)
    for word, true in (("SYNTHETIC", synthetic), ("SMOKE run", smoke)):
        assert (word in html) == true
        assert (word in figure.axes[0].get_title()) == true
        report = threshold_app(TARGETS, MEL_PROBS, synthetic=synthetic, smoke=smoke).children[2]
        assert (word in report.value) == true
    if synthetic and smoke:  # a long title wraps to fit the figure (it was clipped on one line)
        assert figure.axes[0].get_title().replace("\n", " ") == "Where the threshold puts you (SYNTHETIC, SMOKE run)"


def test_the_threshold_tools_say_random_initial_weights_when_not_pretrained():
    html, figure = threshold_report(TARGETS, MEL_PROBS, 0.5, pretrained=False)
    assert "RANDOM initial weights" in html
    assert figure.axes[0].get_title().replace("\n", " ") == "Where the threshold puts you (RANDOM initial weights)"
    assert "RANDOM" not in threshold_report(TARGETS, MEL_PROBS, 0.5)[0]


@pytest.mark.parametrize("synthetic, smoke", [(True, False), (False, False), (False, True)])
def test_the_try_app_heads_every_figure_with_the_model_and_synthetic_and_smoke_when_they_are(
        exported, jpeg, monkeypatch, synthetic, smoke):
    shown = []
    monkeypatch.setattr(widgets, "_show", lambda output, *figures: shown.extend(figures))
    app = try_model_app({"ResNet-50": exported}, {jpeg.stem: str(jpeg)}, synthetic=synthetic, smoke=smoke)
    upload = app.children[1].children[2]
    upload_as_the_browser_does(upload, "mine.jpg", jpeg.read_bytes())
    assert len(shown) == 2, "the first test image, then the upload"
    for figure in shown:
        heading = figure._suptitle.get_text()
        assert heading.startswith("ResNet-50") and ("SYNTHETIC" in heading) == synthetic
        assert ("SMOKE run" in heading) == smoke


def test_the_explanation_names_the_classes_in_full(exported, jpeg):
    result = explain(exported, Image.open(jpeg).convert("RGB"))
    figure = explanation_figure(result, exported.classes, "lesion.jpg")
    top = CLASSES[int(result.probs.argmax())]
    bars = [label.get_text() for label in figure.axes[1].get_yticklabels()]
    assert f"{top}\n({CLASS_NAMES[top]})" in bars and len(bars) == 3
    assert figure.axes[2].get_title().endswith(f"{top} ({CLASS_NAMES[top]})")


def test_a_single_melanoma_is_counted_in_the_singular():
    html, _ = threshold_report(np.array([MEL, 1]), np.array([0.9, 0.1]), 0.5)
    assert "1 of 1 melanoma referred" in html
