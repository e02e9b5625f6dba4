"""Grad-CAM: where in the image a convolutional network found the evidence for a class.

Selvaraju et al. (2017): take the activations A (N, K, h, w) of a late convolutional layer
and the gradient of one class score with respect to them. Each of the K feature maps gets a
weight, its gradient averaged over the h x w positions; the map is the ReLU of the weighted
sum of the feature maps, (N, h, w). Positive where the features raise the class score.

Written out here (a dozen lines) because the steps are the lesson; tests/test_gradcam.py
checks it against captum's `LayerGradCam` on the same model and images.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from torch import nn

from skinlib.models import network_of


def default_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM looks at: its network's `gradcam_layer` in `models.MODELS` (the last
    convolutional stage: ResNet's layer4, SimpleCNN's conv2)."""
    network = network_of(model)
    if network is None:
        raise ValueError(f"no default Grad-CAM layer for {type(model).__name__}: pass layer=..., or add "
                         f"the network to models.MODELS")
    return model.get_submodule(network.gradcam_layer)


def grad_cam(model: nn.Module, images: torch.Tensor, target=None, layer: nn.Module | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM maps (N, h, w) at the layer's resolution, and the model's logits (N, classes).

    `images` is a normalised batch (N, 3, H, W); `target` the class per image (an int, a
    sequence or a tensor), by default each image's predicted class. The maps are not
    rescaled: `heatmap` resizes them to the image and scales them to [0, 1].
    """
    layer = default_layer(model) if layer is None else layer
    saved = {}
    hook = layer.register_forward_hook(lambda module, inputs, output: saved.update(a=output))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            # The input asks for gradients, so the activations have one even if every weight is frozen.
            logits = model(images.detach().clone().requires_grad_(True))
            target = logits.argmax(dim=1) if target is None else torch.as_tensor(target).reshape(-1)
            target = target.to(logits.device).expand(len(logits))
            score = logits.gather(1, target[:, None]).sum()  # images do not mix: one backward for all
            activations = saved["a"]
            gradients, = torch.autograd.grad(score, activations)
    finally:
        hook.remove()
        model.train(was_training)
    weights = gradients.mean(dim=(2, 3), keepdim=True)  # (N, K, 1, 1): one weight per feature map
    cams = F.relu((weights * activations).sum(dim=1))  # (N, h, w)
    return cams.detach(), logits.detach()


def heatmap(cams: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Maps (N, h, w) resized to `size` (H, W) bilinearly and scaled to [0, 1] per image."""
    maps = F.interpolate(cams[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)  # an all-zero map stays zero
    return (maps / peak[:, None, None]).clamp(0, 1)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.3) -> np.ndarray:
    """An RGB image (H, W, 3; uint8 or floats in [0, 1]) with a heatmap (H, W in [0, 1]) laid over
    it in the "jet" colours (red = strongest evidence); floats in [0, 1], (H, W, 3). `alpha` is the
    heatmap's weight: light enough that the lesion under it stays visible."""
    image = np.asarray(image, dtype=np.float32)
    if image.max() > 1:
        image = image / 255
    coloured = colormaps["jet"](np.asarray(heat, dtype=np.float32))[..., :3]
    return ((1 - alpha) * image + alpha * coloured).clip(0, 1)
