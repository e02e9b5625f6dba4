"""The one training augmentation, and the one evaluation view, of a stored-form image.

Every image goes through the same two steps, whether it comes from its JPEG or from the
prepared-image cache:

1. its stored form: uint8 S x S x 3 (S = `images.STORED_SIZE`, 256), the image resized so its
   short side is S, then its centre square (`images.stored_form`). `prepare` stores exactly
   that in the cache; the JPEG datasets make it on every read with the same function
   (`images.load_resized`), and both transforms here make it from a PIL image they are given;
2. for training `TrainAugment`, whose steps are `TRAIN_RECIPE`; for evaluation `CenterCrop`,
   the centre 224 of the 256 pixels (the ImageNet convention, Resize 256 + CenterCrop 224).
   Both give uint8 3 x 224 x 224; the training loop turns it into normalised floats on the
   device (`engine.to_device_batch`).

So a run trains and evaluates on the same kind of images with or without a cache, and for
the same image and seed both give the same pixels (tests/test_augment.py).

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

Why OpenCV does the pixel work. Colab gives 2 vCPUs to feed the GPU, so every millisecond per
image counts. torchvision's transforms on a PIL image, one step after the other, cost about
5 ms per image (the rotation alone 2.5 ms; Pillow's affine warp about 2 ms). Here the crop,
the resize, both flips and the rotation are one affine map from output pixels to source
pixels, applied by one `cv2.warpAffine`; brightness and saturation are one 3 x 3 colour
matrix, applied by one `cv2.transform`; all on uint8: under 1 ms per image. The draws are
torchvision's own (`RandomResizedCrop.get_params`), and tests compare the pixels with
torchvision's functional transforms for the same parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms.v2 import functional as F

from skinlib.images import stored_form

# One thread per process: DataLoader workers are the parallelism (one per CPU), and an
# OpenCV thread pool inside each would only compete with the others.
cv2.setNumThreads(1)

TRAIN_RECIPE = {
    "random resized crop": "to 224 x 224, 50-100 % of the image, aspect ratio 3/4 to 4/3",
    "horizontal flip": "probability 0.5",
    "vertical flip": "probability 0.5",
    "rotation": "by an angle drawn from -180 to 180 degrees, bilinear, black corners",
    "colour jitter": "brightness x 0.875-1.125 (32/255), saturation x 0.5-1.5, hue unchanged",
}
CROP_SCALE, CROP_RATIO = (0.5, 1.0), (3 / 4, 4 / 3)
BRIGHTNESS, SATURATION = 32 / 255, 0.5
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 grey, as torchvision's rgb_to_grayscale (0.2989 ...)
# Resize(256) + CenterCrop(224), the ImageNet evaluation convention: the centre 87.5 %.
EVAL_CROP_FRACTION = 224 / 256


@dataclass(frozen=True)
class Draw:
    """One image's random parameters: the crop (pixels of the stored form), flips, angle, colour."""

    top: int
    left: int
    height: int
    width: int
    hflip: bool
    vflip: bool
    angle: float  # degrees, counter-clockwise, as torchvision's rotate
    brightness: float
    saturation: float


def draw(height: int, width: int) -> Draw:
    """`TRAIN_RECIPE`'s parameters for an image of height x width, from torch's generator.

    The crop is torchvision's RandomResizedCrop draw (area, log-uniform aspect ratio, 10 tries,
    then the centre); the rest are uniform draws in the recipe's ranges.
    """
    size_only = torch.empty(1, 1, 1).expand(3, height, width)  # get_params reads the size only
    top, left, h, w = RandomResizedCrop.get_params(size_only, list(CROP_SCALE), list(CROP_RATIO))
    hflip, vflip, angle, brightness, saturation = torch.rand(5, dtype=torch.float64).tolist()
    return Draw(top, left, h, w, hflip < 0.5, vflip < 0.5, angle=360 * angle - 180,
                brightness=1 + BRIGHTNESS * (2 * brightness - 1),
                saturation=1 + SATURATION * (2 * saturation - 1))


def warp_matrix(d: Draw, size: int) -> np.ndarray:
    """2 x 3 affine map from an output pixel (x, y) to its point in the crop (the inverse map).

    Pixel centres sit at whole coordinates. Read right to left, an output pixel is rotated back
    about the output's centre, flipped back, then scaled from the size x size output to the
    crop's width x height (the convention of a resize: the crop's edges meet the output's).
    """
    c = (size - 1) / 2
    cos, sin = math.cos(math.radians(d.angle)), math.sin(math.radians(d.angle))
    to_centre = np.array([[1, 0, -c], [0, 1, -c], [0, 0, 1]])
    unrotate = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])
    from_centre = np.array([[1, 0, c], [0, 1, c], [0, 0, 1]])
    unflip = np.diag([-1.0 if d.hflip else 1.0, -1.0 if d.vflip else 1.0, 1.0])
    unflip[:2, 2] = [size - 1 if d.hflip else 0, size - 1 if d.vflip else 0]
    sx, sy = d.width / size, d.height / size
    unscale = np.array([[sx, 0, (sx - 1) / 2], [0, sy, (sy - 1) / 2], [0, 0, 1]])
    return (unscale @ unflip @ from_centre @ unrotate @ to_centre)[:2]


def apply(image: np.ndarray, d: Draw, size: int = 224) -> np.ndarray:
    """`image` (uint8 H x W x 3) cropped, resized, flipped, rotated and colour-jittered by `d`.

    The crop's array view is the warp's source, so what the rotation brings in from outside
    the crop is black, as in torchvision's crop-then-rotate.
    """
    crop = image[d.top:d.top + d.height, d.left:d.left + d.width]
    out = cv2.warpAffine(crop, warp_matrix(d, size), (size, size),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.transform(out, colour_matrix(d.brightness, d.saturation))  # rounded, clipped to uint8


def colour_matrix(brightness: float, saturation: float) -> np.ndarray:
    """3 x 3 map of a pixel's RGB: saturation (a blend with the grey, ITU-R 601 luma, as
    torchvision's adjust_saturation), then brightness (a factor, as adjust_brightness).

    Both are linear, so together they are one matrix, and their order does not matter
    (torchvision's ColorJitter draws one; clipping to 0..255 happens once, at the end).
    """
    grey = np.tile(LUMA, (3, 1))  # every row: the weights of R, G, B in the grey value
    return (brightness * (saturation * np.eye(3) + (1 - saturation) * grey)).astype(np.float32)


class TrainAugment:
    """`TRAIN_RECIPE`: a stored-form uint8 array (or any PIL image) in, 3 x size x size uint8 out.

    A PIL image (a decoded JPEG, as a student's own Dataset opens it) is first brought to the
    stored form.
    """

    def __init__(self, size: int = 224):
        self.size = size

    def __call__(self, image: np.ndarray | Image.Image) -> torch.Tensor:
        if isinstance(image, Image.Image):
            image = stored_form(image)
        image = np.asarray(image, dtype=np.uint8)
        out = apply(image, draw(*image.shape[:2]), self.size)
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))  # numpy: 2x torch's speed here

    def __repr__(self) -> str:
        return f"TrainAugment(size={self.size}): " + "; ".join(
            f"{step} {how}" for step, how in TRAIN_RECIPE.items())


class CenterCrop:
    """The evaluation view: the centre `fraction` of a stored-form image, resized to `size`.

    On a 256 x 256 stored form this is the stock Resize(256) + CenterCrop(224). A PIL image is
    first brought to the stored form of side `size / fraction`, so a JPEG and its cache row
    give the same pixels.
    """

    def __init__(self, size: int = 224, fraction: float = EVAL_CROP_FRACTION):
        self.size, self.fraction = size, fraction

    def __call__(self, image: np.ndarray | Image.Image) -> torch.Tensor:
        if isinstance(image, Image.Image):
            image = stored_form(image, round(self.size / self.fraction))
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
        return (f"CenterCrop(size={self.size}, fraction={self.fraction:.4f}): the centre "
                f"{self.size} x {self.size} of the image's centre square resized to "
                f"{round(self.size / self.fraction)}")


def train_transform(size: int = 224) -> TrainAugment:
    """The training augmentation (`TRAIN_RECIPE`), for a Dataset that opens PIL images."""
    return TrainAugment(size)
