"""The JPEG dataset and its transforms: an index frame in, (image tensor, label) out."""
from __future__ import annotations

from typing import Callable

import pandas as pd
import torch
from torchvision.transforms import v2

from skinlib.images import open_image
from skinlib.layout import DataError
from skinlib.sampling import item_random_state, split_key

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transform(size: int = 224) -> v2.Compose:
    """Training augmentation. Dermoscopy has no canonical orientation, so flips and any rotation
    are label-preserving; the crop keeps at least half of the image so the lesion stays in view."""
    return v2.Compose([
        v2.ToImage(),
        v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.RandomRotation(degrees=180),
        # Mild: colour is a diagnostic cue (blue-grey, red, black), so it must not be washed out.
        v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform(size: int = 224, resize: int = 256) -> v2.Compose:
    """Evaluation: shorter side to `resize`, centre crop `size`, ImageNet normalisation."""
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(resize, antialias=True),
        v2.CenterCrop(size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class ISICDataset(torch.utils.data.Dataset):
    """Images and labels of an index frame (columns path, label) -> (3xHxW float tensor, int).

    `transform=None` means `eval_transform()`. A file that cannot be decoded raises ImageError
    naming it (also from a DataLoader worker, whose re-raised error carries the message).
    """

    def __init__(self, frame: pd.DataFrame, transform: Callable | None = None):
        missing = [c for c in ("path", "label") if c not in frame.columns]
        if missing:
            raise DataError(f"ISICDataset needs a frame with columns path and label; missing {missing}")
        # Plain lists: indexing a DataFrame per item is slow and copies it into every worker.
        self.paths = frame["path"].astype(str).tolist()
        self.labels = frame["label"].astype(int).tolist()
        self.transform = transform if transform is not None else eval_transform()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        """`key`: an index, or (index, seed) from `sampling.ShuffleWithSeeds` for a replayable draw."""
        index, seed = split_key(key)
        image = open_image(self.paths[index])
        with item_random_state(seed):
            return self.transform(image), self.labels[index]
