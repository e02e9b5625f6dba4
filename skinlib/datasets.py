"""The JPEG dataset and its transforms: an index frame in, (image tensor, label) out.

Both transforms are `augment`'s, the ones for every image source: `train_transform` is its
training augmentation, `eval_transform` its evaluation view (`augment.CenterCrop`) turned into
normalised floats."""
from __future__ import annotations

from typing import Any, Callable

import pandas as pd
import torch
from torchvision.transforms import v2

from skinlib.augment import CenterCrop, train_transform
from skinlib.images import open_image
from skinlib.layout import DataError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "train_transform", "eval_transform", "ISICDataset"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_transform(size: int = 224, resize: int = 256) -> v2.Compose:
    """Evaluation, for an image (PIL, or a C x H x W tensor): shorter side to `resize`, centre crop `size`, ImageNet normalisation.

    The resize and crop are `augment.CenterCrop`'s: the centre `resize` square of the image
    resized to `resize` (the stored form), then its centre `size`, so a JPEG gives the pixels
    its row of a prepared cache gives in training and evaluation.
    """
    return v2.Compose([
        v2.ToPILImage(),  # a tensor or array image too (a PIL image passes as it is)
        CenterCrop(size, fraction=size / resize),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class ISICDataset(torch.utils.data.Dataset):
    """Images and labels of an index frame (columns path, label) -> (image tensor, int label).

    `loader(path)` reads an image (default `open_image`, a PIL image; the training set uses
    `images.load_resized`, the stored form), then `transform` makes the tensor
    (`transform=None` means `eval_transform()`). A file that cannot be decoded raises
    ImageError naming it (also from a DataLoader worker, whose re-raised error carries it).
    """

    def __init__(self, frame: pd.DataFrame, transform: Callable | None = None,
                 loader: Callable[[str], Any] = open_image):
        missing = [c for c in ("path", "label") if c not in frame.columns]
        if missing:
            raise DataError(f"ISICDataset needs a frame with columns path and label; missing {missing}")
        # Plain lists: indexing a DataFrame per item is slow and copies it into every worker.
        self.paths = frame["path"].astype(str).tolist()
        self.labels = frame["label"].astype(int).tolist()
        self.transform = transform if transform is not None else eval_transform()
        self.loader = loader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.loader(self.paths[index])), self.labels[index]
