"""Decode every image once into a memory-mapped uint8 array, then train from it.

Why: decoding and resizing a JPEG costs far more CPU than reading a uint8 row from a
memory-mapped array, and Colab gives 2 CPU cores to feed the GPU (README and
`benchmarks/input_pipeline.py` have the measured rates).

`python -m skinlib prepare --data DATA --cache CACHE` (or `prepare(...)`) writes, in CACHE:

    images-<key>.npy   uint8 [N, S, S, 3]: each image resized so its short side is S (default
                       256), then its centre S x S square, RGB. One fixed shape, so one .npy
                       that numpy can memory-map; the OS page cache holds what fits in RAM.
    index-<key>.csv    row, image, label, bytes (the source file's size)
    manifest.json      written last, atomically: the only thing that makes the cache valid

Why the centre square of a short-side-256 resize: the evaluation view (Resize 256 +
CenterCrop 224) lies inside it exactly, and RandomResizedCrop draws from a 256x256 square,
which keeps 100 % of the square BCN_20000 images and 75 % of the 4:3 HAM10000 ones (the
lesion is centred in dermoscopy photos; the cut strips are skin and vignetting). A fixed
shape keeps the reader to one slice per sample.

Full ISIC 2019 at S=256: 25,331 x 256 x 256 x 3 bytes = 4.98 GB (4.64 GiB) on disk; memory
mapping means it does not have to fit in RAM (Colab has 12.7 GB; most of it ends up in the
page cache after the first epoch).

In Colab, put the cache on the runtime's local disk (e.g. /content/cache), not on a mounted
Google Drive: a memory map reads small scattered pieces, which a network file system serves
slowly. Preparing is needed once per runtime (the progress bar shows its rate).

Safety: rows are written into images-<key>.npy and a progress bitmap (progress-<key>.npy) is
saved every few seconds *after* the rows are flushed, so an interrupted run resumes where it
stopped. The key is a hash of the image list, each file's size and S, so a changed dataset
gets a new file and never mixes with an old one. A reader (`open_cache`) refuses a folder
whose manifest is missing, of another version, or disagrees with the files on disk. Images
already in a valid older cache (same name, same file size, same S) are copied, not decoded.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from skinlib.augment import CenterCrop, TrainAugment
from skinlib.storage.cache_files import (DEFAULT_SIZE, MANIFEST, Cache, CacheError, cache_bytes,
                                 open_cache)
from skinlib.storage.prepare import PrepareReport, load_resized, prepare

__all__ = ["MANIFEST", "DEFAULT_SIZE", "Cache", "CacheError", "cache_bytes", "open_cache",
           "PrepareReport", "load_resized", "prepare", "CachedDataset", "register"]


# ---------------------------------------------------------------- dataset
class CachedDataset(torch.utils.data.Dataset):
    """Images of `frame` read from a prepared cache: item -> (uint8 tensor [3, size, size], label).

    `frame` is a DataFrame with columns image and label (as from `skinlib.data.load_index`,
    usually one split of it); its labels are used. `train=True` applies TrainAugment (the one
    training augmentation, `augment.TRAIN_RECIPE`; new draws for every sample), `train=False`
    the deterministic centre crop. The output is uint8: convert to float and normalise on the
    device, where it is almost free.
    """

    def __init__(self, cache_dir: str | os.PathLike, frame: pd.DataFrame, train: bool,
                 size: int = 224):
        self.cache = open_cache(cache_dir)
        if size > self.cache.size:
            raise CacheError(f"{cache_dir} holds {self.cache.size}x{self.cache.size} images, "
                             f"smaller than the requested {size}; prepare it with --size {size} "
                             "or more")
        row_of = pd.Series(self.cache.index["row"].to_numpy(), index=self.cache.index["image"])
        missing = ~frame["image"].isin(row_of.index)
        if missing.any():
            names = frame.loc[missing, "image"].tolist()
            raise CacheError(f"{cache_dir} does not hold {len(names)} of the {len(frame)} images "
                             f"asked for (first: {', '.join(names[:5])}); run `python -m skinlib "
                             f"prepare` again on the dataset these images come from")
        self.rows = row_of.loc[frame["image"]].to_numpy()
        self.labels = frame["label"].to_numpy(dtype=np.int64)
        self.train, self.size = train, size
        self.transform = TrainAugment(size) if train else CenterCrop(size)
        self._images = None  # opened lazily, once per DataLoader worker process

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self._images is None:
            self._images = self.cache.images()
        return self.transform(self._images[self.rows[i]]), int(self.labels[i])

    def __getstate__(self) -> dict:
        # a memory map must not be pickled into worker processes (it would copy the array)
        state = self.__dict__.copy()
        state["_images"] = None
        return state


# ---------------------------------------------------------------- command line
def cmd_prepare(args: argparse.Namespace) -> int:
    report = prepare(args.data, args.cache, size=args.size, workers=args.workers,
                     progress=not args.quiet, force=args.force)
    print(report.format())
    from skinlib.acquire.synth import is_synthetic  # only the command needs it

    if is_synthetic(args.data):
        print("the images are SYNTHETIC (made by `skinlib synth`): drawn shapes, not medical images")
    return 0


def register(subparsers) -> None:
    """Add `prepare` to the skinlib command line."""
    from skinlib.cli_errors import int_at_least, worker_count

    p = subparsers.add_parser(
        "prepare", help="decode every image once into a fast uint8 cache for training")
    p.add_argument("--data", type=Path, required=True, help="dataset folder (ISIC 2019 layout)")
    p.add_argument("--cache", type=Path, required=True, help="cache folder to write")
    p.add_argument("--size", type=int_at_least(8), default=DEFAULT_SIZE,
                   help="side S of the stored S x S images (default: %(default)s; "
                        "full ISIC 2019 at 256 takes 4.98 GB)")
    p.add_argument("--workers", type=worker_count, default=None,
                   help="decoding processes (default: every available CPU)")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache is up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)
