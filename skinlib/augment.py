"""Per-sample augmentation on uint8 images, cheap enough for 2 CPU cores.

The stock pipeline spends most of its CPU time decoding JPEGs and converting to float.
Here the input is an already-decoded uint8 HxWx3 array (a row of the prepared cache), the
random crop is cut out *before* anything is copied (so a memory-mapped row is only read
where the crop lies), and the output stays uint8 CxHxW: a quarter of the bytes of float32
through the DataLoader's queues and pinned memory. Conversion to float and ImageNet
normalisation happen on the GPU (the training loop's job).

Every call draws its own parameters from torch's random generator, which the DataLoader
seeds differently in every worker, so each sample of a batch gets its own crop, flip and
rotation. (numpy's global generator is *not* reseeded per worker: the classic trap that
gives every worker the same "random" crops.)
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms.v2 import functional as F

# Resize(256) + CenterCrop(224), the ImageNet evaluation convention: the centre 87.5 %.
EVAL_CROP_FRACTION = 224 / 256


def random_resized_crop_params(height: int, width: int, scale=(0.5, 1.0),
                               ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop, drawn by torchvision's RandomResizedCrop.get_params.

    It only needs the image's shape, so it gets a zero-byte stand-in of that shape.
    """
    shape_only = torch.empty(1, dtype=torch.uint8).expand(1, height, width)
    return tuple(int(v) for v in RandomResizedCrop.get_params(shape_only, list(scale), list(ratio)))


def _to_chw(crop: np.ndarray) -> torch.Tensor:
    # np.array copies just the crop (a memory-mapped row is read-only; torch wants writable)
    return torch.from_numpy(np.array(crop, dtype=np.uint8)).permute(2, 0, 1)


def _resize(chw: torch.Tensor, size: int) -> torch.Tensor:
    if chw.shape[-2:] == (size, size):
        return chw
    # bilinear with antialias, as torchvision's Resize on PIL images; uint8 in, uint8 out
    return F.resize(chw, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)


class TrainAugment:
    """Random resized crop to `size`, random horizontal flip, random 90-degree rotation.

    Input: HxWx3 uint8 array. Output: 3 x size x size uint8 tensor (contiguous).
    A flip and a rotation by k*90 degrees together reach all 8 symmetries of the square;
    a dermoscopy image has no "up", so all 8 are equally plausible. The crop scale matches
    `skinlib.data.train_transform` (at least half the image, so the lesion stays in view).
    Unlike that transform there is no free-angle rotation (it needs interpolation and leaves
    black corners) and no colour jitter (cheaper on the GPU, on whole batches, if wanted).
    """

    def __init__(self, size: int = 224, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), rotate: bool = True):
        self.size, self.scale, self.ratio, self.rotate = size, scale, ratio, rotate

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        top, left, h, w = random_resized_crop_params(image.shape[0], image.shape[1],
                                                     self.scale, self.ratio)
        out = _resize(_to_chw(image[top:top + h, left:left + w]), self.size)
        if torch.rand(1).item() < 0.5:
            out = out.flip(-1)
        if self.rotate:
            k = int(torch.randint(0, 4, size=(1,)).item())
            if k:
                out = torch.rot90(out, k, dims=(-2, -1))
        return out.contiguous()

    def __repr__(self) -> str:
        return (f"TrainAugment(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
                f"rotate={self.rotate})")


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
        return _resize(_to_chw(image[top:top + h, left:left + w]), self.size).contiguous()

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size}, fraction={self.fraction:.4f})"
