"""Writing a prepared-image cache: decode every image once, resumably, in parallel processes.

Rows are written into images-<key>.npy and a progress bitmap (progress-<key>.npy) is saved every
few seconds *after* the rows are flushed, so an interrupted run resumes where it stopped. The key
is a hash of the image list, each file's size and S, so a changed dataset gets a new file and
never mixes with an old one. Images already in a valid older cache (same name, same file size,
same S) are copied, not decoded.

- `open_cache_folder`: the folder must be new, empty, or marked as the kit's cache; only files
  the kit recorded are deleted.
- `reserve`: the images file gets its whole size on disk before any row is written. A memory
  map of a sparse file that meets a full disk kills the process with SIGBUS, printing nothing;
  reserving first turns that into one line saying how much space is needed.
- decoding processes exit when `prepare` dies, even by SIGKILL (Linux: `device.die_with_parent`).
"""
from __future__ import annotations

import errno
import itertools
import json
import os
import re
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from skinlib.data import load_index
from skinlib.device import available_cpus, die_with_parent
from skinlib.images import load_resized
from skinlib.layout import GROUND_TRUTH_CSV
from skinlib.storage.atomic import atomic_write, atomic_write_text, sha256_file
from skinlib.storage.cache import (DEFAULT_SIZE, FORMAT, MANIFEST, VERSION, Cache, CacheError, cache_bytes,
                                   cache_key, file_stats, open_valid)
from skinlib.storage.folders import KitFolder, claim_folder


# The names of the files `prepare` writes (the key is 16 hex digits), and their temporaries.
KIT_FILE = re.compile(r"(images-[0-9a-f]{16}\.npy|index-[0-9a-f]{16}\.csv|progress-[0-9a-f]{16}\.npy"
                      rf"|{re.escape(MANIFEST)})")
TEMPORARY = re.compile(rf"\.({KIT_FILE.pattern})\..+\.tmp")


def open_cache_folder(cache_dir: str | os.PathLike) -> KitFolder:
    """`cache_dir` as the kit's cache folder (FolderError if it holds anything else)."""
    return claim_folder(cache_dir, "cache", option="--cache")


def remove_stale(folder: KitFolder, keep: set[str]) -> None:
    """Delete the cache files the kit recorded writing, other than `keep` (older keys,
    abandoned partial runs) and temporaries of writes that were cut off."""
    for name in sorted(folder.files):
        if name not in keep and (KIT_FILE.fullmatch(name) or TEMPORARY.fullmatch(name)):
            folder.remove(name)
    for leftover in folder.path.iterdir():
        match = TEMPORARY.fullmatch(leftover.name)
        if match and folder.owns(match.group(1)):
            leftover.unlink(missing_ok=True)


def reserve(path: Path, nbytes: int) -> None:
    """Allocate the file's first `nbytes` on disk now (a CacheError if the disk is too small).

    File systems without fallocate (some network mounts) are left as they are.
    """
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return
        free = shutil.disk_usage(path.parent).free
        raise CacheError(f"{path.parent}: the cache needs {nbytes / 1e9:.2f} GB on disk, only "
                         f"{free / 1e9:.2f} GB can be allocated; free space, or try a smaller "
                         f"--size") from None
    finally:
        os.close(fd)


CHUNK = 16                # images per task sent to a worker process (~3 MB back at S=256)
CHECKPOINT_SECONDS = 5.0  # how often progress is made durable while preparing


# ---------------------------------------------------------------- decoding
def _decode_chunk(rows: list[int], paths: list[str], size: int) -> tuple[list[int], np.ndarray]:
    """Worker task: decode a chunk of images into one array (an ImageError propagates)."""
    return rows, np.stack([load_resized(path, size) for path in paths])

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




def _copy_from_previous(previous: Cache | None, frame: pd.DataFrame, sizes: np.ndarray,
                        mtimes: np.ndarray, size: int, images: np.memmap, done: np.ndarray) -> int:
    """Copy rows of unchanged images (same name, file size and, when the older cache recorded
    it, modification time) from a valid older cache."""
    if previous is None or previous.size != size:
        return 0
    old = previous.index.set_index("image")
    common = frame["image"].isin(old.index).to_numpy()
    new_rows = np.flatnonzero(common & ~done)
    if len(new_rows) == 0:
        return 0
    names = frame["image"].to_numpy()[new_rows]
    same = old.loc[names, "bytes"].to_numpy() == sizes[new_rows]
    if "mtime_ns" in old.columns:
        same &= old.loc[names, "mtime_ns"].to_numpy() == mtimes[new_rows]
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
    data_dir = Path(data_dir)
    frame = load_index(data_dir).reset_index(drop=True)
    folder = open_cache_folder(cache_dir)
    with folder.lock("another prepare, or a train reading it"):
        return _prepare(data_dir, folder, frame, size, workers, progress, force)


def _prepare(data_dir: Path, folder: KitFolder, frame: pd.DataFrame, size: int,
             workers: int | None, progress: bool, force: bool) -> PrepareReport:
    """`prepare` into a claimed and locked cache folder (see `prepare`): up to date, or resume
    or start the images file (copying from an older cache), decode the rest, publish."""
    started = time.perf_counter()
    cache_dir = folder.path
    paths = frame["path"].tolist()
    sizes, mtimes = file_stats(paths)
    # A replaced image of the same size gets a new key through its modification time.
    key = cache_key(frame["image"].tolist(), [f"{b} {t}" for b, t in zip(sizes, mtimes)], size)
    n = len(frame)

    previous = open_valid(cache_dir)
    if previous is not None and previous.manifest["key"] == key:
        if not force:
            return PrepareReport(cache_dir, size, n, 0, 0, 0, time.perf_counter() - started,
                                 previous.images_path.stat().st_size, up_to_date=True)
        (cache_dir / MANIFEST).unlink()  # its files are about to be rewritten in place
        previous = None

    images_name, index_name = f"images-{key}.npy", f"index-{key}.csv"
    progress_path = cache_dir / f"progress-{key}.npy"
    keep = {images_name, progress_path.name}
    if previous is not None:
        keep |= {previous.manifest["images_file"], previous.manifest["index_file"]}
    remove_stale(folder, keep)  # an abandoned partial run of other data: free its disk
    folder.record(images_name, progress_path.name, index_name, MANIFEST)

    images, done = _resumed(cache_dir / images_name, progress_path, (n, size, size, 3), force)
    n_resumed = int(done.sum()) if done is not None else 0
    n_reused = 0
    if images is None:
        images, done = _started(cache_dir / images_name, progress_path, (n, size, size, 3))
        if previous is not None and not force:
            n_reused = _copy_from_previous(previous, frame, sizes, mtimes, size, images, done)
        images.flush()
        atomic_write(progress_path, lambda f: np.save(f, done))

    n_decoded = _decode_into(images, done, np.flatnonzero(~done), paths, size, progress_path,
                             workers or available_cpus(), progress)
    images.flush()
    with open(cache_dir / images_name, "rb+") as f:
        os.fsync(f.fileno())
    del images
    manifest = _publish(data_dir, cache_dir, frame, sizes, mtimes, key, size)
    remove_stale(folder, {images_name, index_name, MANIFEST})  # also the progress file
    return PrepareReport(cache_dir, size, n, n_decoded, n_reused, n_resumed,
                         time.perf_counter() - started, manifest["images_bytes"], up_to_date=False)


def _resumed(images_path: Path, progress_path: Path, shape: tuple, force: bool):
    """The images file and the rows done of an interrupted run of the same key, or (None, None)."""
    if force or not (progress_path.is_file() and images_path.is_file()):
        return None, None
    try:
        done = np.load(progress_path)
        images = np.lib.format.open_memmap(images_path, mode="r+")
    except (OSError, ValueError):
        return None, None
    if images.shape != shape or done.shape != shape[:1]:
        return None, None
    return images, done


def _started(images_path: Path, progress_path: Path, shape: tuple) -> tuple[np.memmap, np.ndarray]:
    """A new images file with all its blocks reserved (no SIGBUS on a full disk), and no row done."""
    needed, free = cache_bytes(shape[0], shape[1]), shutil.disk_usage(images_path.parent).free
    if needed > free:
        raise CacheError(f"{images_path.parent}: the cache needs {needed / 1e9:.2f} GB, only "
                         f"{free / 1e9:.2f} GB free (try a smaller --size)")
    progress_path.unlink(missing_ok=True)
    images = np.lib.format.open_memmap(images_path, mode="w+", dtype=np.uint8, shape=shape)
    reserve(images_path, images.offset + images.nbytes)
    return images, np.zeros(shape[0], dtype=bool)


def _publish(data_dir: Path, cache_dir: Path, frame: pd.DataFrame, sizes: np.ndarray,
             mtimes: np.ndarray, key: str, size: int) -> dict:
    """Write the index, then the manifest that makes the finished cache valid; return the manifest."""
    n = len(frame)
    images_name, index_name = f"images-{key}.npy", f"index-{key}.csv"
    index = pd.DataFrame({"row": np.arange(n), "image": frame["image"], "label": frame["label"],
                          "bytes": sizes, "mtime_ns": mtimes})
    atomic_write_text(cache_dir / index_name, index.to_csv(index=False))
    manifest = {
        "format": FORMAT, "version": VERSION, "key": key, "size": size, "shape": [n, size, size, 3],
        "dtype": "uint8", "layout": "NHWC RGB; short side resized to size, centre square",
        "images_file": images_name, "index_file": index_name,
        "images_bytes": (cache_dir / images_name).stat().st_size, "source": str(data_dir.resolve()),
        "ground_truth_sha256": sha256_file(data_dir / GROUND_TRUTH_CSV),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(cache_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def _decode_into(images: np.memmap, done: np.ndarray, todo: np.ndarray, paths: list[str],
                 size: int, progress_path: Path, workers: int, progress: bool) -> int:
    """Decode rows `todo` into `images`, saving `done` durably every few seconds and on exit."""
    bar = tqdm(total=len(todo), desc="prepare", unit="img", disable=not progress or len(todo) == 0)  # no empty bar
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
            _decode_in_pool(chunks, paths, size, workers, store)
    finally:
        checkpoint()
        bar.close()
    return n_decoded


def _decode_in_pool(chunks: list[list[int]], paths: list[str], size: int, workers: int, store) -> None:
    """Decode `chunks` in `workers` processes (which end if this one dies), `store`-ing each result.

    A bounded number of chunks is in flight: bounded memory, and an error stops the run
    without decoding everything queued behind it.
    """
    with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        def submit(rows):
            return pool.submit(_decode_chunk, rows, [paths[r] for r in rows], size)

        chunk_iter = iter(chunks)
        pending = {submit(rows) for rows in itertools.islice(chunk_iter, 2 * workers)}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    store(*future.result())
                    rows = next(chunk_iter, None)
                    if rows is not None:
                        pending.add(submit(rows))
        finally:
            for future in pending:
                future.cancel()
