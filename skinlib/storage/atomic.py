"""Files that are either complete or absent.

A crash, a full disk or Ctrl+C in the middle of a write must not leave a truncated checkpoint,
cache manifest or metrics file that a later run would trust. `atomic_write` writes to a
temporary file in the same folder, flushes it to disk, and only then renames it over the target
(`os.replace` is atomic on one file system). The file gets the permissions any new file of the
user gets (0666 less the umask), not mkstemp's owner-only 0600.

The rule for concurrent writers (two Colab runtimes saving to one Drive folder, two commands
writing one CSV): every writer writes its own temporary file, named after the target, the
machine and the process (`.NAME.HOST.PID.RANDOM.tmp`, unique even across machines), and publishes
it with one rename. Two writers never share a half-written file, and the target always holds one
writer's whole file (the last to finish). A temporary left by a process killed outright is removed
by the next writer (`remove_stale_temporaries`) once its writer is known to be gone. `sha256_file` is the one hash
of a file's bytes that the kit records and checks.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], *, binary: bool = True) -> Path:
    """Call `write(f)` on a temporary file beside `path`, then move it to `path`; return the path.

    On any failure (KeyboardInterrupt included) the temporary file is removed, `path` keeps
    its previous content (if any), and the error propagates. A process killed outright leaves
    its temporary file, named `temporary_name_pattern(path)`: `remove_stale_temporaries` clears it.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".tmp")
    except OSError as err:
        raise _naming(err, path, err.filename) from None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600: give the user's usual mode
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them current
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _naming(err, path, tmp) from None
        raise
    _fsync_folder(path.parent)
    return path


def _naming(err: OSError, path: Path, tmp: str | None) -> OSError:
    """`err` naming `path`, the file the user knows, where it named the temporary file or nothing."""
    named = err.errno is not None and err.filename in (None, tmp)
    return type(err)(err.errno, err.strerror, str(path)) if named else err


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`text` (UTF-8) to `path`, atomically."""
    return atomic_write(path, lambda f: f.write(text), binary=False)


def temporary_name_pattern(path: str | os.PathLike) -> str:
    """The glob pattern of the temporary files `atomic_write(path, ...)` makes."""
    return f".{Path(path).name}.*.tmp"


# A temporary nobody has written to for this long is abandoned, whoever made it (another machine's,
# whose process this one cannot see). Writers write continuously, so a live one is never this idle.
IDLE_LIMIT_S = 3600.0
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def remove_stale_temporaries(path: str | os.PathLike, *, locked: bool = True) -> list[Path]:
    """Delete temporary files left beside `path` by a killed `atomic_write`; return them.

    `locked=True`: the caller holds the folder's lock, so no other writer is half-way through and
    every temporary is stale. `locked=False` (no lock: a Drive folder two runtimes share) removes
    only those whose writer is gone: a process of this machine that no longer runs, or a file
    idle for `IDLE_LIMIT_S`.
    """
    path = Path(path)
    stale = sorted(p for p in path.parent.glob(temporary_name_pattern(path)) if locked or _abandoned(p, path))
    for leftover in stale:
        leftover.unlink(missing_ok=True)
    return stale


def _abandoned(temporary: Path, path: Path) -> bool:
    """Whether the writer of `temporary` (named by `atomic_write` for `path`) is gone."""
    try:
        if time.time() - temporary.stat().st_mtime > IDLE_LIMIT_S:
            return True
    except OSError:
        return False
    parts = temporary.name[len(path.name) + 2:-len(".tmp")].split(".")
    if len(parts) < 3 or parts[0] != _HOST or not parts[1].isdigit():
        return False  # another machine's (or an older name): only its idle time can tell
    return not _running(int(parts[1]))


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it runs, as another user
        return True
    return True


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back: POSIX has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); not possible on Windows, where it is skipped."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in blocks (a 9 GB archive never sits in memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
