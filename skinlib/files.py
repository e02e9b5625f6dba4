"""Files that are either complete or absent, never half-written.

A crash, a full disk or Ctrl+C in the middle of a write must not leave a truncated checkpoint,
cache manifest or metrics file that a later run would trust. `atomic_write` writes to a
temporary file in the same folder, flushes it to disk, and only then renames it over the
target (`os.replace` is atomic on one file system).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], *, binary: bool = True) -> Path:
    """Call `write(f)` on a temporary file beside `path`, then move it to `path`; return the path.

    On any failure (KeyboardInterrupt included) the temporary file is removed, `path` keeps
    its previous content (if any), and the error propagates.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them current
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`text` (UTF-8) to `path`, atomically."""
    return atomic_write(path, lambda f: f.write(text), binary=False)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); not possible on Windows, where it is skipped."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
