"""Folders the kit may write to (its files are written whole: `skinlib.storage.atomic`).

Folder ownership. A command writes only into a folder that is new, empty, or marked as the
kit's, and deletes only files it recorded writing. `claim_folder(path, kind)` returns a
`KitFolder` and leaves in it the marker `skinlib-folder.json`, which names the kit, the kind of
folder ("cache", "run", "synthetic", ...) and every file the kit wrote there. A folder that holds
anything else is refused with a `FolderError` that names it and says what to do.

Locks. `KitFolder.lock()` holds `filelock`'s exclusive lock on `.skinlib-lock` while a command
writes the folder; a second command is refused. A run reading a cache shares it (`shared_lock`), so
a writer is refused while any reads, and a reader while one writes. Both are flocks: the kernel
drops them when their process dies, however it dies, so a lock is never stale (no pid to check,
nothing to clean up). The lock file is never written, so a command that finds nothing to do
changes nothing on disk.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import filelock
import platformdirs

from skinlib.storage.atomic import atomic_write_text
from skinlib.layout import DataError

KIT = "skinlib"
MARKER = "skinlib-folder.json"
LOCK = ".skinlib-lock"
MARKER_VERSION = 1
# Files an operating system or a notebook server leaves in any folder: a folder holding only
# these counts as empty, and the kit never touches them.
IGNORED = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", ".ipynb_checkpoints", ".directory"})


# ---------------------------------------------------------------- folder ownership
class FolderError(DataError):
    """A folder the kit must not or cannot write to; the message names it and what to do.

    A DataError, like every other unusable input, so callers that catch bad data catch it too."""


@dataclass
class KitFolder:
    """A folder marked as the kit's: its kind and the files (relative paths) the kit wrote there."""

    path: Path
    kind: str
    files: set[str] = field(default_factory=set)

    @property
    def marker(self) -> Path:
        return self.path / MARKER

    def file(self, name: str) -> Path:
        """`path / name`, recorded as the kit's before anything is written to it."""
        self.record(name)
        return self.path / name

    def record(self, *names: str) -> None:
        """Add `names` to the marker (written before the files, so a crash never loses one)."""
        new = {_relative(name) for name in names} - self.files
        if new:
            self.files |= new
            self._save()

    def owns(self, name: str) -> bool:
        return _relative(name) in self.files

    def remove(self, name: str) -> bool:
        """Delete `name` if the kit recorded writing it (a file, or a folder of only its files).

        Returns whether it was the kit's. Anything the kit did not record is left alone.
        """
        name = _relative(name)
        if name not in self.files:
            return False
        target = self.path / name
        if target.is_dir() and not target.is_symlink():
            for inner in sorted(self.files, reverse=True):  # deepest first
                if inner.startswith(name + "/") and (self.path / inner).is_file():
                    (self.path / inner).unlink()
                    self.files.discard(inner)
            with contextlib.suppress(OSError):  # a folder still holding others' files stays
                target.rmdir()
        else:
            target.unlink(missing_ok=True)
        if not target.exists():
            self.files.discard(name)
        self._save()
        return True

    def remove_all(self) -> None:
        """Delete every file the kit recorded here, deepest first; a recorded folder goes only
        when nothing else is left in it. The marker is written once, at the end."""
        for name in sorted(self.files, key=lambda n: n.count("/"), reverse=True):
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                with contextlib.suppress(OSError):
                    target.rmdir()
            else:
                target.unlink(missing_ok=True)
        self.files = {name for name in self.files if os.path.lexists(self.path / name)}
        self._save()

    def unrecorded(self) -> list[str]:
        """Entries at the top of the folder the kit did not write (and that are not ignored)."""
        tops = {name.split("/", 1)[0] for name in self.files}
        return sorted(p.name for p in self.path.iterdir()
                      if p.name not in tops and p.name not in IGNORED | {MARKER, LOCK})

    @contextlib.contextmanager
    def lock(self, what: str = "another command") -> Iterator[None]:
        """Hold the folder's lock alone for the block; FolderError naming `what` if another
        process holds it (alone, or shared by readers)."""
        lock = filelock.FileLock(self.path / LOCK, timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise FolderError(_in_use(self.path, what)) from None
        try:
            yield
        finally:
            lock.release()

    def _save(self) -> None:
        record = {"kit": KIT, "kind": self.kind, "version": MARKER_VERSION,
                  "note": f"written by {KIT}: it deletes only the files listed here",
                  "files": sorted(self.files)}
        try:
            atomic_write_text(self.marker, json.dumps(record, indent=1) + "\n")
        except OSError as err:
            raise FolderError(f"{self.path}: cannot write to this folder ({err.strerror or err}); "
                              f"choose a folder you can write to") from None


def cache_home() -> Path:
    """The kit's own cache folder: $SKINLIB_CACHE, else the user's cache folder that platformdirs
    names (~/.cache/skinlib on Linux, $XDG_CACHE_HOME/skinlib where that is set)."""
    return expand_home(os.environ.get("SKINLIB_CACHE") or platformdirs.user_cache_path("skinlib"))


def expand_home(path: str | os.PathLike) -> Path:
    """`path` with a leading ~ or ~user expanded, as the shell does; a FolderError for a ~name that
    names no user (`~runs` typed for `~/runs`), where `Path.expanduser` raises a bare RuntimeError."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        first = Path(path).parts[0]
        raise FolderError(f"{path}: there is no user {first[1:]!r} for {first} to stand for; write "
                          f"~/{first[1:]} for a folder in your home, or ./{first} for one named {first}") from None


def claim_folder(path: str | os.PathLike, kind: str, *, option: str = "the folder") -> KitFolder:
    """Make `path` a kit folder of `kind` and return it; refuse what is not the kit's.

    New or empty (ignoring IGNORED): created and marked. Marked `kind`: its record is read
    back. Anything else raises FolderError naming the folder and `option` to change.
    """
    path = expand_home(path)
    if path.exists() and not path.is_dir():
        raise FolderError(f"{path} is a file, not a folder; choose another {option}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        entries = [p.name for p in path.iterdir() if p.name not in IGNORED]
    except OSError as err:
        raise FolderError(f"{path}: cannot create or read this folder ({err.strerror or err}); "
                          f"choose another {option}") from None
    if MARKER in entries:
        return _read_marker(path, kind, option)
    folder = KitFolder(path, kind)
    others = [name for name in entries if name != LOCK]
    if others:
        raise FolderError(_not_ours(path, others, option))
    folder._save()
    return folder


def _read_marker(path: Path, kind: str, option: str) -> KitFolder:
    marker = path / MARKER
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("kit") != KIT or not isinstance(record.get("files"), list):
            raise ValueError("not the kit's marker")
        found_kind = str(record["kind"])
        files = {_relative(str(name)) for name in record["files"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise FolderError(f"{marker}: not a readable {KIT} folder marker ({err}); choose another "
                          f"{option}, or move this folder away") from None
    if found_kind != kind:
        raise FolderError(f"{path} is a {KIT} {found_kind} folder, not a {kind} folder; "
                          f"choose another {option}")
    # A folder the kit wrote, since replaced by a link: cleaning or writing its recorded files would
    # delete or replace files in the link's target, which the kit never wrote.
    for folder in sorted({name.rsplit("/", 1)[0] for name in files if "/" in name}):
        inner = path
        for part in folder.split("/"):
            inner = inner / part
            if inner.is_symlink():
                raise FolderError(f"{inner} was a folder {KIT} wrote and is now a link (to {os.readlink(inner)}); "
                                  f"{KIT} will not delete or write files through it: remove the link, or choose "
                                  f"another {option}")
    return KitFolder(path, kind, files)


def _not_ours(path: Path, names: list[str], option: str) -> str:
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (f"{path} holds files {KIT} did not write ({shown}), so it is not writing into it "
            f"(only into a new or empty folder, or one it marked with {MARKER}): choose another "
            f"{option}, or move those files away")


def _relative(name: str) -> str:
    """A recorded name: relative, with '/' separators, never leaving the folder."""
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts:
        raise ValueError(f"{name!r} is not a path inside the folder")
    return "/".join(parts)


# ---------------------------------------------------------------- locks
def _in_use(folder: Path, what: str) -> str:
    return f"{folder} is in use by {what} (it holds {LOCK}); wait for it to finish, or choose another folder"


@contextlib.contextmanager
def shared_lock(folder: Path, what: str) -> Iterator[None]:
    """A shared, non-blocking flock on the folder's lock file for the block: any number of readers
    hold it at once, and `KitFolder.lock` (filelock's exclusive flock on the same file) is refused
    while they do; FolderError naming `what` if a writer holds it.

    filelock has no shared flock (its ReadWriteLock keeps an SQLite file beside, which a reader
    must be able to write), so this one lock is fcntl's. The file is opened read-only: a cache an
    instructor shares read-only (no write permission on the folder or its files) stays readable.
    Where the lock file cannot be opened (such a folder the writer never locked) or the file
    system has no flock (some network mounts), the block runs unlocked.
    """
    import fcntl  # POSIX only; imported here so the rest of the module loads anywhere

    try:
        fd = os.open(folder / LOCK, os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderError(_in_use(folder, what)) from None
        except OSError:  # ENOLCK, EOPNOTSUPP: no locks on this file system
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
