"""Decode every image once into a memory-mapped uint8 array, then train from it.

Why: opening a JPEG with Pillow and resizing it costs 4-15 ms of CPU per image (a 1024x1024
BCN_20000 photo, more for the 6000x4000 MSK ones). Colab gives 2 CPU cores, so the stock
pipeline delivers on the order of 100 images/s while a T4 trains ResNet-50 at ~350 images/s
and an H100 at thousands. Reading a uint8 row from a memory-mapped array costs microseconds.

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
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from skinlib.augment import CenterCrop, TrainAugment
from skinlib.data import DataError, load_index, open_image
from skinlib.files import atomic_write, atomic_write_text
from skinlib.sampling import item_random_state, split_key

MANIFEST = "manifest.json"
FORMAT = "skinlib-image-cache"
VERSION = 1
DEFAULT_SIZE = 256
CHUNK = 16                # images per task sent to a worker process (~3 MB back at S=256)
CHECKPOINT_SECONDS = 5.0  # how often progress is made durable while preparing


class CacheError(DataError):
    """A cache folder that is missing, incomplete, stale or does not hold a requested image."""


def cache_bytes(n_images: int, size: int = DEFAULT_SIZE) -> int:
    """Bytes of pixel data in a cache of n_images at S=size (the .npy header adds 128)."""
    return n_images * size * size * 3


# ---------------------------------------------------------------- decoding
def load_resized(path: str | os.PathLike, size: int = DEFAULT_SIZE) -> np.ndarray:
    """The image at `path` as uint8 [size, size, 3]: short side resized to `size`, centre square.

    For JPEGs, Pillow's draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale in the DCT
    domain (never below the target size), which is 3-5x faster for the 1024x1024 and larger
    photos. The remaining resize is bilinear with antialiasing, straight from the source's
    centre square (`box=`), so the short-side resize and the centre crop are one step.
    Unreadable files raise `ImageError` naming the file (via `skinlib.data.open_image`).
    """
    image = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as source:
                if source.format == "JPEG" and source.mode in ("RGB", "YCbCr"):
                    w, h = source.size
                    scale = size / min(w, h)
                    source.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
                    image = source.convert("RGB")
    except Exception:  # noqa: BLE001 - open_image below names the file and the problem
        image = None
    if image is None:
        image = open_image(path)
    w, h = image.size
    side = min(w, h)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    resized = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
    return np.asarray(resized, dtype=np.uint8)


def _decode_chunk(rows: list[int], paths: list[str], size: int) -> tuple[list[int], np.ndarray]:
    """Worker task: decode a chunk of images into one array (an ImageError propagates)."""
    return rows, np.stack([load_resized(path, size) for path in paths])


# ---------------------------------------------------------------- cache identity
def _cache_key(images: list[str], sizes: list[int], size: int) -> str:
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
    index = pd.read_csv(index_path, dtype={"image": str})
    if list(index.columns) != ["row", "image", "label", "bytes"] or len(index) != shape[0] \
            or not np.array_equal(index["row"].to_numpy(), np.arange(shape[0])):
        raise CacheError(f"{index_path} does not match {images_path} ({len(index)} rows for "
                         f"{shape[0]} images); {hint}")
    return Cache(cache_dir, manifest, index)


def _open_valid(cache_dir: Path) -> Cache | None:
    try:
        return open_cache(cache_dir)
    except CacheError:
        return None


# ---------------------------------------------------------------- preparing
@dataclass
class PrepareReport:
    """What `prepare` did. `up_to_date` means the cache already matched and nothing was written."""

    cache_dir: Path
    size: int
    n_images: int
    n_decoded: int
    n_reused: int
    n_resumed: int
    seconds: float
    nbytes: int
    up_to_date: bool

    def format(self) -> str:
        amount = f"{self.nbytes / 1e9:.2f} GB" if self.nbytes >= 1e9 else f"{self.nbytes / 1e6:.1f} MB"
        head = f"{self.cache_dir}: {self.n_images} images of {self.size}x{self.size}, {amount}"
        if self.up_to_date:
            return head + " (already up to date, nothing to do)"
        rate = self.n_decoded / self.seconds if self.seconds > 0 else float("nan")
        return (head + f"; decoded {self.n_decoded} in {self.seconds:.1f} s ({rate:.0f} images/s)"
                + f", copied {self.n_reused} from the previous cache"
                + f", {self.n_resumed} kept from an interrupted run")


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _remove_stale(cache_dir: Path, keep: set[str]) -> None:
    """Delete cache files of other keys (older caches, abandoned partial runs)."""
    for pattern in ("images-*.npy", "index-*.csv", "progress-*.npy"):
        for path in cache_dir.glob(pattern):
            if path.name not in keep:
                path.unlink(missing_ok=True)


def _copy_from_previous(previous: Cache | None, frame: pd.DataFrame, sizes: np.ndarray,
                        size: int, images: np.memmap, done: np.ndarray) -> int:
    """Copy rows of unchanged images (same name and file size) from a valid older cache."""
    if previous is None or previous.size != size:
        return 0
    old = previous.index.set_index("image")
    common = frame["image"].isin(old.index).to_numpy()
    new_rows = np.flatnonzero(common & ~done)
    if len(new_rows) == 0:
        return 0
    names = frame["image"].to_numpy()[new_rows]
    same = old.loc[names, "bytes"].to_numpy() == sizes[new_rows]
    new_rows, old_rows = new_rows[same], old.loc[names[same], "row"].to_numpy()
    source = previous.images()
    for start in range(0, len(new_rows), 256):  # bounded memory: 256 rows = 50 MB at S=256
        part = slice(start, start + 256)
        images[new_rows[part]] = source[old_rows[part]]
    done[new_rows] = True
    return len(new_rows)


def prepare(data_dir: str | os.PathLike, cache_dir: str | os.PathLike, size: int = DEFAULT_SIZE,
            workers: int | None = None, progress: bool = True, force: bool = False) -> PrepareReport:
    """Decode every image of `data_dir` (ISIC 2019 layout) once into `cache_dir`.

    Resumes an interrupted run, copies unchanged images from an older cache, does nothing if
    the cache is already up to date (`force=True` rebuilds anyway), and raises ImageError
    naming the file for an image that cannot be read (the rows done so far are kept for the
    next run). `workers` processes decode in parallel (default: every CPU this process may use).
    """
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    started = time.perf_counter()
    data_dir, cache_dir = Path(data_dir), Path(cache_dir)
    frame = load_index(data_dir).reset_index(drop=True)
    paths = frame["path"].tolist()
    sizes = np.array([os.stat(p).st_size for p in paths], dtype=np.int64)
    key = _cache_key(frame["image"].tolist(), sizes.tolist(), size)
    n = len(frame)
    shape = (n, size, size, 3)

    cache_dir.mkdir(parents=True, exist_ok=True)
    previous = _open_valid(cache_dir)
    if previous is not None and previous.manifest["key"] == key:
        if not force:
            return PrepareReport(cache_dir, size, n, 0, 0, 0, time.perf_counter() - started,
                                 previous.images_path.stat().st_size, up_to_date=True)
        (cache_dir / MANIFEST).unlink()  # its files are about to be rewritten in place
        previous = None

    images_name, index_name = f"images-{key}.npy", f"index-{key}.csv"
    progress_path = cache_dir / f"progress-{key}.npy"
    images_path = cache_dir / images_name
    keep = {images_name, progress_path.name}
    if previous is not None:
        keep |= {previous.manifest["images_file"], previous.manifest["index_file"]}
    _remove_stale(cache_dir, keep)  # an abandoned partial run of other data: free its disk

    images, done = None, None
    if progress_path.is_file() and images_path.is_file() and not force:
        try:
            done = np.load(progress_path)
            images = np.lib.format.open_memmap(images_path, mode="r+")
        except (OSError, ValueError):
            images, done = None, None
        if images is not None and (images.shape != shape or done.shape != (n,)):
            images, done = None, None
    n_resumed = int(done.sum()) if done is not None else 0
    n_reused = 0
    if images is None:
        needed = cache_bytes(n, size)
        free = shutil.disk_usage(cache_dir).free
        if needed > free:
            raise CacheError(f"{cache_dir}: the cache needs {needed / 1e9:.2f} GB, only "
                             f"{free / 1e9:.2f} GB free (try a smaller --size)")
        progress_path.unlink(missing_ok=True)
        images = np.lib.format.open_memmap(images_path, mode="w+", dtype=np.uint8, shape=shape)
        done = np.zeros(n, dtype=bool)
        if previous is not None and not force:
            n_reused = _copy_from_previous(previous, frame, sizes, size, images, done)
        images.flush()
        atomic_write(progress_path, lambda f: np.save(f, done))

    todo = np.flatnonzero(~done)
    n_decoded = _decode_into(images, done, todo, paths, size, progress_path,
                             workers or _default_workers(), progress)
    images.flush()
    with open(images_path, "rb+") as f:
        os.fsync(f.fileno())
    del images

    index = pd.DataFrame({"row": np.arange(n), "image": frame["image"], "label": frame["label"],
                          "bytes": sizes})
    atomic_write_text(cache_dir / index_name, index.to_csv(index=False))
    manifest = {
        "format": FORMAT, "version": VERSION, "key": key, "size": size, "shape": list(shape),
        "dtype": "uint8", "layout": "NHWC RGB; short side resized to size, centre square",
        "images_file": images_name, "index_file": index_name,
        "images_bytes": images_path.stat().st_size, "source": str(data_dir.resolve()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(cache_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    _remove_stale(cache_dir, {images_name, index_name})  # also the progress file
    return PrepareReport(cache_dir, size, n, n_decoded, n_reused, n_resumed,
                         time.perf_counter() - started, manifest["images_bytes"], up_to_date=False)


def _decode_into(images: np.memmap, done: np.ndarray, todo: np.ndarray, paths: list[str],
                 size: int, progress_path: Path, workers: int, progress: bool) -> int:
    """Decode rows `todo` into `images`, saving `done` durably every few seconds and on exit."""
    bar = tqdm(total=len(todo), desc="prepare", unit="img", disable=not progress)
    last_checkpoint = time.monotonic()
    n_decoded = 0

    def store(rows, block):
        nonlocal last_checkpoint, n_decoded
        images[rows] = block
        done[rows] = True
        n_decoded += len(rows)
        bar.update(len(rows))
        if time.monotonic() - last_checkpoint > CHECKPOINT_SECONDS:
            checkpoint()
            last_checkpoint = time.monotonic()

    def checkpoint():
        images.flush()  # rows first, then the bitmap that vouches for them
        atomic_write(progress_path, lambda f: np.save(f, done))

    chunks = [todo[i:i + CHUNK].tolist() for i in range(0, len(todo), CHUNK)]
    try:
        if workers <= 1 or len(chunks) <= 1:
            for rows in chunks:
                store(*_decode_chunk(rows, [paths[r] for r in rows], size))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                pending = set()
                chunk_iter = iter(chunks)
                try:
                    # keep a bounded number of chunks in flight: bounded memory, and an
                    # error stops the run without decoding everything queued behind it
                    for rows in chunk_iter:
                        pending.add(pool.submit(_decode_chunk, rows, [paths[r] for r in rows], size))
                        if len(pending) >= 2 * workers:
                            break
                    while pending:
                        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in finished:
                            store(*future.result())
                            rows = next(chunk_iter, None)
                            if rows is not None:
                                pending.add(pool.submit(_decode_chunk, rows,
                                                        [paths[r] for r in rows], size))
                finally:
                    for future in pending:
                        future.cancel()
    finally:
        checkpoint()
        bar.close()
    return n_decoded


# ---------------------------------------------------------------- dataset
class CachedDataset(torch.utils.data.Dataset):
    """Images of `frame` read from a prepared cache: item -> (uint8 tensor [3, size, size], label).

    `frame` is a DataFrame with columns image and label (as from `skinlib.data.load_index`,
    usually one split of it); its labels are used. `train=True` applies TrainAugment (random
    resized crop, flip, 90-degree rotation; new random draws for every sample), `train=False`
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

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        """`key`: an index, or (index, seed) from `sampling.ShuffleWithSeeds` for a replayable draw."""
        if self._images is None:
            self._images = self.cache.images()
        i, seed = split_key(key)
        with item_random_state(seed):
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
    return 0


def register(subparsers) -> None:
    """Add `prepare` to the skinlib command line."""
    p = subparsers.add_parser(
        "prepare", help="decode every image once into a fast uint8 cache for training")
    p.add_argument("--data", type=Path, required=True, help="dataset folder (ISIC 2019 layout)")
    p.add_argument("--cache", type=Path, required=True, help="cache folder to write")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE,
                   help="side S of the stored S x S images (default: %(default)s; "
                        "full ISIC 2019 at 256 takes 4.98 GB)")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes (default: every available CPU)")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache is up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)
