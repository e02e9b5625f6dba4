"""Commands run as a user without root's rights, so that permission tests run as root too (CI runs as root).

Root reads and writes any file whatever its permissions, so "permission denied" can only be
shown by a process that is not root. When the tests run as root, `as_user` runs a command as
the user `nobody` (uid 65534, through `setpriv`, else `runuser`); as any other user it runs the
command as that user. `user_folder` is a folder that user owns and can reach (pytest's own
temporary folders are readable by root alone). A test skips, saying why, only where root
cannot give up its rights (no setpriv or runuser, or a container that forbids it).
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

NOBODY = 65534


@functools.lru_cache(maxsize=1)
def _prefix() -> tuple[str, ...] | None:
    """The command prefix that drops root's rights; () when not root; None when it cannot be done."""
    if os.geteuid() != 0:
        return ()
    for prefix in ((shutil.which("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"),
                   (shutil.which("runuser"), "-u", "nobody", "--")):
        if prefix[0] and subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    return None


@pytest.fixture
def user_folder():
    """A folder owned by the user `as_user` runs as; removed afterwards."""
    if _prefix() is None:
        pytest.skip("running as root, and root cannot run a command as another user here "
                    "(neither setpriv nor runuser works): a permission test would prove nothing")
    folder = Path(tempfile.mkdtemp(prefix="skinlib-user-"))
    os.chmod(folder, 0o755)
    if os.geteuid() == 0:
        os.chown(folder, NOBODY, NOBODY)
    yield folder
    for path in [folder, *folder.rglob("*")]:  # read-only folders inside would stop rmtree
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(folder)


def as_user(args: list, folder: Path, **kwargs) -> subprocess.CompletedProcess:
    """`python ARGS` run as the unprivileged user, in `folder` (also its HOME), output captured."""
    env = {**os.environ, "HOME": str(folder), "MPLCONFIGDIR": str(folder / ".matplotlib")}
    return subprocess.run([*_prefix(), sys.executable, *map(str, args)], cwd=folder, env=env,
                          capture_output=True, text=True, **kwargs)


def start_as_user(args: list, folder: Path) -> subprocess.Popen:
    """`as_user`, left running: its output is piped, line by line."""
    env = {**os.environ, "HOME": str(folder), "MPLCONFIGDIR": str(folder / ".matplotlib")}
    return subprocess.Popen([*_prefix(), sys.executable, *map(str, args)], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def give_to_user(path: Path) -> None:
    """Make `path` (a file or a whole folder) the unprivileged user's, as a file they made would be."""
    if os.geteuid() != 0:
        return
    for item in [path, *(path.rglob("*") if path.is_dir() else [])]:
        os.chown(item, NOBODY, NOBODY, follow_symlinks=False)
