"""Grad-CAM (skinlib.gradcam) against captum's LayerGradCam on the same models and images."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from skinlib.gradcam import default_layer, grad_cam, heatmap, overlay
from skinlib.models import SimpleCNN, build_model

try:  # the reference, pinned in requirements.txt; missing only in a partial set-up
    import captum.attr as captum_attr
except ImportError:
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        raise
    pytest.skip("captum is not installed (pip install -r requirements.txt)", allow_module_level=True)


def captum_cam(model, images, target):
    layer = default_layer(model)
    attribution = captum_attr.LayerGradCam(model, layer).attribute(images, target=target,
                                                                   relu_attributions=True)
    return attribution[:, 0].detach()


@pytest.mark.parametrize("name", ["resnet50", "simplecnn"])
def test_grad_cam_equals_captums_layer_grad_cam(name):
    torch.manual_seed(0)
    model = build_model(name, pretrained=False).eval()
    images = torch.randn(3, 3, *((128, 128) if name == "resnet50" else (224, 224)))
    target = torch.tensor([0, 3, 7])
    ours, logits = grad_cam(model, images, target)
    reference = captum_cam(model, images, target)
    assert ours.shape == reference.shape == ((3, 4, 4) if name == "resnet50" else (3, 106, 106))
    assert reference.abs().max() > 0  # not a comparison of two empty maps
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-6 * float(reference.abs().max()))
    assert logits.shape == (3, 8)


def test_without_a_target_each_image_is_explained_by_its_predicted_class():
    torch.manual_seed(1)
    model = build_model("resnet50", pretrained=False).eval()
    images = torch.randn(2, 3, 96, 96)
    ours, logits = grad_cam(model, images)
    torch.testing.assert_close(ours, captum_cam(model, images, logits.argmax(1)))


def test_frozen_weights_and_training_mode_are_handled():
    torch.manual_seed(2)
    model = SimpleCNN()
    for parameter in model.parameters():
        parameter.requires_grad = False
    model.train()
    cams, _ = grad_cam(model, torch.randn(1, 3, 224, 224), 2)
    assert cams.abs().sum() > 0 and model.training


def test_heatmap_is_resized_and_scaled_to_one_per_image():
    cams = torch.tensor([[[0.0, 2.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    maps = heatmap(cams, (8, 10))
    assert maps.shape == (2, 8, 10)
    assert maps[0].max() == pytest.approx(1.0) and maps[0].min() >= 0
    assert maps[1].abs().sum() == 0


def test_overlay_keeps_the_image_shape_and_range():
    image = np.full((4, 5, 3), 255, dtype=np.uint8)
    result = overlay(image, np.zeros((4, 5)))
    assert result.shape == (4, 5, 3) and 0 <= result.min() and result.max() <= 1


def test_overlay_leaves_the_image_visible_under_the_heatmap():
    black, white = np.zeros((4, 5, 3)), np.ones((4, 5, 3))
    for heat in (np.zeros((4, 5)), np.ones((4, 5))):
        shown = overlay(white, heat) - overlay(black, heat)
        assert shown.min() >= 0.7 - 1e-6, "the image keeps at least 70 % of its weight under the heatmap"
