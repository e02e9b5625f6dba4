"""Is a prepared cache still the images of the data folder? Checked before training from it.

A cache (see `skinlib.storage.cache`) records the folder it was prepared from and, per image, the source
file's size and modification time. `check_cache_matches` compares them with the data folder as
it is now: another folder, an image added, removed, replaced or edited since `prepare` is refused
with one line naming the cache, the image and the command that brings the cache up to date.
Caches prepared before modification times were recorded are checked by size only.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

_SHOW = 3


def file_stats(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(sizes in bytes, modification times in ns) of `paths`, as int64 arrays."""
    stats = [os.stat(p) for p in paths]
    return (np.array([s.st_size for s in stats], dtype=np.int64),
            np.array([s.st_mtime_ns for s in stats], dtype=np.int64))


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_cache_matches(cache, frame: pd.DataFrame, data_dir: str | os.PathLike) -> None:
    """Raise CacheError unless `cache` (a `cache.Cache`) holds exactly the images of `frame`
    (the whole index of `data_dir`, before any --limit), unchanged since it was prepared."""
    from skinlib.storage.cache_files import CacheError

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
