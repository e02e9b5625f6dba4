"""What `prepare` needs to write a cache folder safely.

- `open_cache_folder`: the folder must be new, empty, marked as a cache, or a cache written
  before markers existed (it has the kit's manifest); only files the kit recorded are deleted.
- `reserve`: the images file gets its whole size on disk before any row is written. A memory
  map of a sparse file that meets a full disk kills the process with SIGBUS, printing nothing;
  reserving first turns that into one line saying how much space is needed.
- `die_with_parent`: decoding processes exit when `prepare` dies, even by SIGKILL (Linux).
- `reading`: a training run shares the folder's lock while it reads the images; `prepare` takes
  it alone, so it never rewrites the images under a run (a memory map of a file rewritten in
  place reads zeros, or dies with SIGBUS).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import signal
from pathlib import Path

from skinlib.storage.cache_files import FORMAT, MANIFEST, CacheError
from skinlib.storage.folders import LOCK, MARKER, KitFolder, claim_folder, hold_lock

# The names of the files `prepare` writes (the key is 16 hex digits), and their temporaries.
KIT_FILE = re.compile(r"(images-[0-9a-f]{16}\.npy|index-[0-9a-f]{16}\.csv|progress-[0-9a-f]{16}\.npy"
                      rf"|{re.escape(MANIFEST)})")
TEMPORARY = re.compile(rf"\.({KIT_FILE.pattern})\..+\.tmp")


def reading(cache_dir: str | os.PathLike | None):
    """A context that shares the lock of the kit's cache folder `cache_dir` while a run reads it
    (none for no cache, or a folder the kit has not marked: no lock file is made there)."""
    if cache_dir is None or not (Path(cache_dir) / MARKER).is_file():
        return contextlib.nullcontext()
    return hold_lock(Path(cache_dir) / LOCK, Path(cache_dir), "prepare, which is writing it", shared=True)


def open_cache_folder(cache_dir: str | os.PathLike) -> KitFolder:
    """`cache_dir` as the kit's cache folder (FolderError if it holds anything else)."""
    return claim_folder(cache_dir, "cache", option="--cache", adopt=_cache_before_markers)


def _cache_before_markers(path: Path) -> list[str] | None:
    """The kit's files in an unmarked folder holding a manifest of the kit's cache, else None."""
    try:
        if json.loads((path / MANIFEST).read_text()).get("format") != FORMAT:
            return None
    except (OSError, ValueError, AttributeError):
        return None
    return [p.name for p in path.iterdir() if KIT_FILE.fullmatch(p.name) or TEMPORARY.fullmatch(p.name)]


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


def die_with_parent(parent: int) -> None:
    """Worker initializer: end this process when `parent` ends (Linux's PR_SET_PDEATHSIG).

    Without it, the workers of a `prepare` killed outright wait on their queue forever.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: nothing to set
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
