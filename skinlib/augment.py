"""The one training augmentation, and the evaluation view of a prepared-image cache.

Every training image goes through the same two steps, whether it comes from its JPEG or from
the prepared-image cache:

1. its stored form: uint8 S x S x 3 (S = `images.STORED_SIZE`, 256), the image resized so its
   short side is S, then its centre square (`images.stored_form`). `prepare` stores exactly
   that in the cache; the JPEG training set makes it on every read with the same function
   (`images.load_resized`), and `TrainAugment` makes it from a PIL image it is given;
2. `TrainAugment`, whose steps are `TRAIN_RECIPE`. Its output stays uint8 (3 x 224 x 224);
   the training loop turns it into normalised floats on the device (`engine.to_device_batch`).

So a run trains on the same kind of images with or without a cache, and for the same image
and seed both give the same pixels (tests/test_augment.py).

Why this recipe. The winners of ISIC 2019 (Gessert et al., "Skin lesion classification using
ensembles of multi-resolution EfficientNets with meta data", MethodsX 2020; code in
github.com/ngessert/isic2019) trained on random crops, flipped left-right and up-down,
rotated by any angle (with some scaling and shear), with colour jitter of brightness 32/255 and
saturation 0.5, plus cutout. The course's seed used random resized crops, both flips, rotation
by any angle and a milder colour jitter. Dermoscopy has no "up", so flips and rotations are
label-preserving. Kept: all of these; the crop keeps at least half of the image so the lesion
stays in view, and the hue is left alone because colour (blue-grey, red, black) is a
diagnostic cue. Left out: shear, cutout and AutoAugment, which an introductory course does
not need. Draws come from torch's random generator only, so `sampling` can replay them.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from skinlib.images import stored_form

TRAIN_RECIPE = {
    "random resized crop": "to 224 x 224, 50-100 % of the image, aspect ratio 3/4 to 4/3",
    "horizontal flip": "probability 0.5",
    "vertical flip": "probability 0.5",
    "rotation": "by an angle drawn from -180 to 180 degrees, bilinear, black corners",
    "colour jitter": "brightness x 0.875-1.125 (32/255), saturation x 0.5-1.5, hue unchanged",
}
CROP_SCALE = (0.5, 1.0)
BRIGHTNESS, SATURATION = 32 / 255, 0.5
# Resize(256) + CenterCrop(224), the ImageNet evaluation convention: the centre 87.5 %.
EVAL_CROP_FRACTION = 224 / 256


class TrainAugment:
    """`TRAIN_RECIPE`: a stored-form uint8 array (or any PIL image) in, 3 x size x size uint8 out.

    A PIL image (a decoded JPEG, as a student's own Dataset opens it) is first brought to the
    stored form. The steps run on a PIL image, where torchvision uses Pillow's fast uint8 code
    for the resize, the rotation and the colour changes.
    """

    def __init__(self, size: int = 224):
        self.size = size
        self.transform = v2.Compose([
            v2.RandomResizedCrop(size, scale=CROP_SCALE, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomRotation(180, interpolation=InterpolationMode.BILINEAR),
            v2.ColorJitter(brightness=BRIGHTNESS, saturation=SATURATION),
            v2.PILToTensor(),
        ])

    def __call__(self, image: np.ndarray | Image.Image) -> torch.Tensor:
        if isinstance(image, Image.Image):
            image = stored_form(image)
        return self.transform(Image.fromarray(np.asarray(image, dtype=np.uint8))).contiguous()

    def __repr__(self) -> str:
        return f"TrainAugment(size={self.size}): " + "; ".join(
            f"{step} {how}" for step, how in TRAIN_RECIPE.items())


class CenterCrop:
    """Deterministic evaluation view: the centre `fraction` of the image, resized to `size`.

    On a 256x256 cache row this is exactly the stock Resize(256) + CenterCrop(224).
    """

    def __init__(self, size: int = 224, fraction: float = EVAL_CROP_FRACTION):
        self.size, self.fraction = size, fraction

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        height, width = image.shape[:2]
        h, w = round(height * self.fraction), round(width * self.fraction)
        top, left = (height - h) // 2, (width - w) // 2
        # np.array copies just the crop (a memory-mapped row is read-only; torch wants writable)
        chw = torch.from_numpy(np.array(image[top:top + h, left:left + w], dtype=np.uint8)).permute(2, 0, 1)
        if chw.shape[-2:] != (self.size, self.size):
            chw = F.resize(chw, [self.size, self.size], interpolation=InterpolationMode.BILINEAR,
                           antialias=True)
        return chw.contiguous()

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size}, fraction={self.fraction:.4f})"


def train_transform(size: int = 224) -> TrainAugment:
    """The training augmentation (`TRAIN_RECIPE`), for a Dataset that opens PIL images."""
    return TrainAugment(size)
