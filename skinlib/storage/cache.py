"""The prepared-image cache as a reader sees it: what it is on disk, whether it is whole and still
the images of its data folder, and the dataset that trains from it.

Why: decoding and resizing a JPEG costs far more CPU than reading a uint8 row from a
memory-mapped array, and Colab gives 2 CPU cores to feed the GPU (README and
`benchmarks/input_pipeline.py` have the measured rates).

`python -m skinlib prepare --data DATA --cache CACHE` (`storage.prepare.prepare`) writes, in CACHE:

    images-<key>.npy   uint8 [N, S, S, 3]: each image resized so its short side is S (default
                       256), then its centre S x S square, RGB. One fixed shape, so one .npy
                       that numpy can memory-map; the OS page cache holds what fits in RAM.
    index-<key>.csv    row, image, label, bytes and mtime_ns (the source file's size and time)
    manifest.json      written last, atomically: the only thing that makes the cache valid

Why the centre square of a short-side-256 resize: the evaluation view (Resize 256 +
CenterCrop 224) lies inside it exactly, and RandomResizedCrop draws from a 256x256 square,
which keeps 100 % of the square BCN_20000 images and 75 % of the 4:3 HAM10000 ones (the
lesion is centred in dermoscopy photos; the cut strips are skin and vignetting). A fixed
shape keeps the reader to one slice per sample. Full ISIC 2019 at S=256 is 4.98 GB on disk; a
memory map means it does not have to fit in RAM.

In Colab, put the cache on the runtime's local disk (e.g. /content/cache), not on a mounted
Google Drive: a memory map reads small scattered pieces, which a network file system serves slowly.

`open_cache` refuses a folder whose manifest is missing, of another version, or disagrees with
the files on disk; `check_cache_matches` refuses a cache whose data folder changed since (another
folder, an image added, removed, replaced or edited), naming the image and the command that
brings the cache up to date. A training run shares the folder's lock while it reads (`reading`);
`prepare` takes it alone, so it never rewrites the images under a run (a memory map of a file
rewritten in place reads zeros, or dies with SIGBUS).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from skinlib.augment import CenterCrop, TrainAugment
from skinlib.images import STORED_SIZE
from skinlib.layout import DataError
from skinlib.storage.folders import MARKER, shared_lock


MANIFEST = "manifest.json"
FORMAT = "skinlib-image-cache"
VERSION = 1
DEFAULT_SIZE = STORED_SIZE  # the stored form of every training image (images.stored_form)


class CacheError(DataError):
    """A cache folder that is missing, incomplete, stale or does not hold a requested image."""


def cache_bytes(n_images: int, size: int = DEFAULT_SIZE) -> int:
    """Bytes of pixel data in a cache of n_images at S=size (the .npy header adds 128)."""
    return n_images * size * size * 3

# ---------------------------------------------------------------- cache identity
def cache_key(images: list[str], sizes: list[int], size: int) -> str:
    digest = hashlib.sha256(f"{FORMAT} {VERSION} {size}\n".encode())
    for name, nbytes in zip(images, sizes):
        digest.update(f"{name} {nbytes}\n".encode())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- reading
@dataclass
class Cache:
    """A validated cache folder: its manifest and index; `images()` memory-maps the pixels."""

    cache_dir: Path
    manifest: dict
    index: pd.DataFrame  # row, image, label, bytes

    @property
    def size(self) -> int:
        return int(self.manifest["size"])

    @property
    def images_path(self) -> Path:
        return self.cache_dir / self.manifest["images_file"]

    def images(self) -> np.ndarray:
        """uint8 [N, S, S, 3], memory-mapped read-only (nothing is read until indexed)."""
        return np.load(self.images_path, mmap_mode="r")

    def __len__(self) -> int:
        return len(self.index)


def open_cache(cache_dir: str | os.PathLike) -> Cache:
    """Open a prepared cache, refusing anything incomplete or inconsistent (CacheError)."""
    cache_dir = Path(cache_dir)
    hint = f"run `python -m skinlib prepare --data DATA --cache {cache_dir}`"
    manifest_path = cache_dir / MANIFEST
    if not manifest_path.is_file():
        raise CacheError(f"{cache_dir} is not a complete image cache (no {MANIFEST}); {hint}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        raise CacheError(f"{manifest_path}: unreadable manifest ({err}); {hint}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or manifest.get("version") != VERSION:
        raise CacheError(f"{manifest_path}: not a version-{VERSION} {FORMAT} manifest; {hint}")
    try:
        images_path = cache_dir / manifest["images_file"]
        index_path = cache_dir / manifest["index_file"]
        shape = tuple(manifest["shape"])
        expected_bytes = int(manifest["images_bytes"])
    except (KeyError, TypeError, ValueError) as err:
        raise CacheError(f"{manifest_path}: missing or bad field {err}; {hint}") from None
    for path in (images_path, index_path):
        if not path.is_file():
            raise CacheError(f"{path} is missing (named in {manifest_path}); {hint}")
    if images_path.stat().st_size != expected_bytes:
        raise CacheError(f"{images_path} has {images_path.stat().st_size} bytes, the manifest "
                         f"says {expected_bytes}: the cache is damaged; {hint}")
    try:
        images = np.load(images_path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise CacheError(f"{images_path}: not a readable .npy file ({err}); {hint}") from None
    if images.shape != shape or images.dtype != np.uint8:
        raise CacheError(f"{images_path} holds {images.dtype} {images.shape}, the manifest "
                         f"says uint8 {shape}; {hint}")
    size = manifest.get("size")
    if len(shape) != 4 or shape[1:] != (size, size, 3):  # `size` decides the crops: it must be the images'
        raise CacheError(f"{manifest_path}: size {size!r} does not match the images' shape {shape}; {hint}")
    try:
        index = pd.read_csv(index_path, dtype={"image": str})
    except (OSError, ValueError, pd.errors.ParserError) as err:  # EmptyDataError is a ValueError
        raise CacheError(f"{index_path}: unreadable cache index ({' '.join(str(err).split())}); "
                         f"{hint}") from None
    if list(index.columns)[:4] != ["row", "image", "label", "bytes"] or len(index) != shape[0] \
            or not np.array_equal(index["row"].to_numpy(), np.arange(shape[0])):
        raise CacheError(f"{index_path} does not match {images_path} ({len(index)} rows for "
                         f"{shape[0]} images); {hint}")
    return Cache(cache_dir, manifest, index)


def reading(cache_dir: str | os.PathLike | None):
    """A context that shares the lock of the kit's cache folder `cache_dir` while a run reads it
    (none for no cache, or a folder the kit has not marked: no lock file is made there)."""
    if cache_dir is None or not (Path(cache_dir) / MARKER).is_file():
        return contextlib.nullcontext()
    return shared_lock(Path(cache_dir), "prepare, which is writing it")


def open_valid(cache_dir: Path) -> Cache | None:
    try:
        return open_cache(cache_dir)
    except CacheError:
        return None


# ---------------------------------------------------------------- still the data folder's images?
_SHOW = 3  # images named in a refusal


def file_stats(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(sizes in bytes, modification times in ns) of `paths`, as int64 arrays."""
    stats = [os.stat(p) for p in paths]
    return (np.array([s.st_size for s in stats], dtype=np.int64),
            np.array([s.st_mtime_ns for s in stats], dtype=np.int64))


def check_cache_matches(cache, frame: pd.DataFrame, data_dir: str | os.PathLike) -> None:
    """Raise CacheError unless `cache` (a `Cache`) holds exactly the images of `frame`
    (the whole index of `data_dir`, before any --limit), unchanged since it was prepared."""
    data_dir = Path(data_dir)
    again = (f"run `python -m skinlib prepare --data {data_dir} --cache {cache.cache_dir}` "
             f"(images that did not change are copied, not decoded again)")
    source = cache.manifest.get("source")
    if source and Path(source) != data_dir.resolve():
        raise CacheError(f"{cache.cache_dir} was prepared from {source}, not from {data_dir}; {again}")
    index = cache.index.set_index("image")
    added = frame.loc[~frame["image"].isin(index.index), "image"].tolist()
    removed = sorted(set(index.index) - set(frame["image"]))
    if added or removed:
        what = [f"{len(added)} image(s) added (first: {', '.join(added[:_SHOW])})" if added else "",
                f"{len(removed)} removed (first: {', '.join(removed[:_SHOW])})" if removed else ""]
        raise CacheError(f"{cache.cache_dir} is out of date: since it was prepared, {data_dir} has "
                         f"{' and '.join(w for w in what if w)}; {again}")
    sizes, mtimes = file_stats(frame["path"].tolist())
    rows = index.loc[frame["image"]]
    changed = sizes != rows["bytes"].to_numpy()
    if "mtime_ns" in rows.columns:
        changed |= mtimes != rows["mtime_ns"].to_numpy()
    if changed.any():
        names = [Path(p).name for p in frame["path"].to_numpy()[changed]]
        raise CacheError(f"{cache.cache_dir} is out of date: {len(names)} image(s) of {data_dir} "
                         f"changed since it was prepared (first: {', '.join(names[:_SHOW])}); {again}")


# ---------------------------------------------------------------- dataset
class CachedDataset(torch.utils.data.Dataset):
    """Images of `frame` read from a prepared cache: item -> (uint8 tensor [3, size, size], label).

    `frame` is a DataFrame with columns image and label (as from `skinlib.data.load_index`,
    usually one split of it); its labels are used. `transform` turns a stored-form row into the
    sample (`loaders.make_loaders` passes the training augmentation); without it `train=True`
    applies `augment.TrainAugment` (new draws for every sample), `train=False` the deterministic
    centre crop. The output is uint8: convert to float and normalise on the device, where it is
    almost free.
    """

    def __init__(self, cache_dir: str | os.PathLike, frame: pd.DataFrame, train: bool = False,
                 size: int = 224, transform: Callable | None = None):
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
        self.transform = transform or (TrainAugment(size) if train else CenterCrop(size))
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
