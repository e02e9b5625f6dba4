"""What a prepared-image cache is on disk, and the reader that refuses anything incomplete.

A cache folder holds images-<key>.npy (uint8 [N, S, S, 3]), index-<key>.csv and, written
last, manifest.json: the only thing that makes the cache valid (see `cache` for the why).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from skinlib.images import STORED_SIZE
from skinlib.layout import DataError

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


def open_valid(cache_dir: Path) -> Cache | None:
    try:
        return open_cache(cache_dir)
    except CacheError:
        return None
