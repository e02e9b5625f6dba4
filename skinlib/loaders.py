"""DataLoaders for a split, with defaults that fit the machine they run on.

`make_loaders(frame, split, config)` returns {"train", "val", "test"} DataLoaders:

- workers: one per CPU this process may use (capped at MAX_WORKERS); `config.num_workers`
  overrides, 0 loads in the main process (simplest to debug);
- pinned memory when CUDA is there (faster, asynchronous host-to-GPU copies);
- with workers: persistent workers (no process start-up every epoch) and a deeper prefetch
  queue, so 2 Colab CPUs keep decoding while the GPU computes;
- the training loader drops its last batch only when that batch would hold a single image,
  which BatchNorm cannot train on (ResNet-50 raises an error on it);
- the training order, and a seed for each image's random augmentation, are drawn by
  `sampling.ShuffleWithSeeds` from a generator seeded from `config.seed` (and reseeded by
  `fit` every epoch) and applied by `sampling.SeededItems`, so a run and its resumed
  continuation see the same augmented images in the same order in every epoch, with any
  number of workers;
- under torchrun each process reads its own share of that order and of the val and test
  images (`distributed.train_sampler`, `distributed.eval_sampler`).

Images come either from the JPEGs (`data.ISICDataset`) or, when `config.cache` is set, from
the prepared-image cache (`storage.cache.CachedDataset`). Either way a training image is the same
uint8 tensor for the same seed (`augment` says how), and `train_augment` replaces the augmentation for both; the training loop converts and
normalises it on the device. Validation and test images are the centre view
(`augment.CenterCrop`), the same uint8 pixels from either source.
"""
from __future__ import annotations

from typing import Callable

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from skinlib import distributed
from skinlib.augment import CenterCrop, TrainAugment
from skinlib.data import ISICDataset
from skinlib.device import available_cpus
from skinlib.images import load_resized
from skinlib.sampling import SeededItems, make_generator
from skinlib.storage.cache import CachedDataset

# More workers than this rarely help an image pipeline and each one holds a copy of the
# dataset's state; a 96-core server would otherwise start 96 processes per loader.
MAX_WORKERS = 8
PREFETCH_FACTOR = 4
SPLIT_NAMES = ("train", "val", "test")


def default_num_workers() -> int:
    # under torchrun the processes of one machine share its CPUs
    return max(1, min(available_cpus() // distributed.local_world_size(), MAX_WORKERS))


def loader_options(num_workers: int | None = None, *, device: torch.device | str | None = None) -> dict:
    """The DataLoader keyword arguments this module uses, for a given worker count (None: auto)."""
    workers = default_num_workers() if num_workers is None else int(num_workers)
    if workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {workers}")
    cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    options = dict(num_workers=workers, pin_memory=cuda)
    if workers > 0:  # both options are errors with num_workers=0
        options.update(persistent_workers=True, prefetch_factor=PREFETCH_FACTOR)
    return options


def make_datasets(frame: pd.DataFrame, split: pd.Series, config,
                  train_augment: Callable | None = None) -> dict[str, Dataset]:
    """One dataset per split: `train_augment` (default `augment.TrainAugment`) for training, the
    centre view for val and test; from the cache when `config.cache` is set, else the JPEGs."""
    split = _aligned(frame, split)
    parts = {name: frame[split == name].reset_index(drop=True) for name in SPLIT_NAMES}
    size = config.image_size
    views = {"train": train_augment or TrainAugment(size), "val": CenterCrop(size), "test": CenterCrop(size)}
    if config.cache:
        return {name: CachedDataset(config.cache, part, transform=views[name], size=size)
                for name, part in parts.items()}
    # the stored form of every JPEG, then the transform the cache's rows get
    return {name: ISICDataset(part, transform=views[name], loader=load_resized) for name, part in parts.items()}


def make_loaders(frame: pd.DataFrame, split: pd.Series, config, *, device: torch.device | str | None = None,
                 train_augment: Callable | None = None) -> dict[str, DataLoader]:
    """{"train", "val", "test"} DataLoaders for `frame` divided by `split` (a Series of split names
    with the frame's index, as `splits.grouped_split` returns). `device` (default: CUDA if
    available) decides pinned memory.

    `train_augment` is the training augmentation, the one place to change it: a callable from a
    stored-form uint8 H x W x 3 array (or a PIL image) to a uint8 3 x size x size tensor, drawing
    from torch's generator only (so `sampling` replays it), applied to JPEGs and cache rows alike.
    """
    datasets = make_datasets(frame, split, config, train_augment)
    options = loader_options(config.num_workers, device=device)
    batch = config.batch_size
    # ShuffleWithSeeds; under torchrun this process's share of it
    sampler = distributed.train_sampler(len(datasets["train"]), make_generator(config.seed))
    loaders = {
        # The worker seeds come from a generator of their own: the DataLoader draws from it
        # when it starts workers (every epoch without persistent workers, once with them),
        # which must not shift the sampler's draws. Augmentations do not depend on it.
        "train": DataLoader(SeededItems(datasets["train"]), batch_size=batch,
                            sampler=sampler, generator=torch.Generator().manual_seed(config.seed),
                            drop_last=len(sampler) % batch == 1, **options),
    }
    for name in ("val", "test"):
        loaders[name] = DataLoader(datasets[name], batch_size=batch, shuffle=False,
                                   sampler=distributed.eval_sampler(len(datasets[name])), **options)
    return loaders


def _aligned(frame: pd.DataFrame, split: pd.Series) -> pd.Series:
    """`split` as a Series on `frame`'s index, with every image assigned to a known split."""
    if not isinstance(split, pd.Series) or not split.index.equals(frame.index):
        raise ValueError("split must be a pandas Series with the same index as the frame "
                         "(as splits.grouped_split returns)")
    unknown = sorted(set(split.unique()) - set(SPLIT_NAMES))
    if unknown:
        raise ValueError(f"split holds unknown split name(s) {unknown}; expected {SPLIT_NAMES}")
    return split
