"""Faults a user meets without doing anything wrong: a full disk, a killed command, its leftovers."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from skinlib.storage.cache import CacheError
from skinlib.storage.prepare import reserve
from skinlib.storage.runfolder import open_run_folder, remove_leftovers


def test_a_cache_that_does_not_fit_on_the_disk_is_refused_before_any_row_is_written(tmp_path, monkeypatch):
    images = tmp_path / "images-0123456789abcdef.npy"
    np.lib.format.open_memmap(images, mode="w+", dtype=np.uint8, shape=(4, 8, 8, 3))

    def disk_full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", disk_full)
    with pytest.raises(CacheError, match=rf"{tmp_path}: the cache needs 0.00 GB on disk, only .* GB can be "
                                         r"allocated; free space, or try a smaller --size"):
        reserve(images, 4 * 8 * 8 * 3 + 128)


def test_reserving_gives_the_file_its_blocks_on_disk(tmp_path):
    images = tmp_path / "images-0123456789abcdef.npy"
    array = np.lib.format.open_memmap(images, mode="w+", dtype=np.uint8, shape=(64, 64, 64, 3))
    assert images.stat().st_blocks * 512 < array.nbytes  # a sparse file: a SIGBUS waiting to happen
    reserve(images, array.offset + array.nbytes)
    assert images.stat().st_blocks * 512 >= array.nbytes


WORKERS_OF_A_KILLED_PARENT = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
from skinlib.device import die_with_parent

with ProcessPoolExecutor(2, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
    print(*{f.result() for f in [pool.submit(os.getpid) for _ in range(8)]}, flush=True)
    time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_decoding_workers_end_when_prepare_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", WORKERS_OF_A_KILLED_PARENT], stdout=subprocess.PIPE,
                              text=True)
    workers = {int(pid) for pid in parent.stdout.readline().split()}
    assert workers and all(os.path.exists(f"/proc/{pid}") for pid in workers)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_a_temporary_checkpoint_left_by_a_killed_run_is_removed_on_the_next_start(tmp_path, capsys):
    folder = open_run_folder(tmp_path / "run")
    folder.file("checkpoint.pt").write_bytes(b"the last good epoch")
    stale = folder.path / ".checkpoint.pt.x7k2m9.tmp"  # 438 MB in the real case
    stale.write_bytes(b"half of the next epoch")
    (folder.path / ".mine.tmp").write_bytes(b"not the kit's")
    with folder.lock():
        assert remove_leftovers(folder) == [stale]
    assert (folder.path / "checkpoint.pt").read_bytes() == b"the last good epoch"
    assert (folder.path / ".mine.tmp").exists() and not stale.exists()
    assert "removed 1 temporary file(s) left by a run that was cut off" in capsys.readouterr().out
