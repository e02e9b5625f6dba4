"""One notebook run under nbval, as CI runs the notebooks: used by test_notebooks_meta and test_journey.

`pytest --nbval-lax --nbval-current-env` runs in a subprocess, in the notebook's working folder
and with the environment it is given, in a session of its own: `kill_when` (polled while it runs)
stops it as a runtime that disconnects stops, with SIGKILL to the kernel and to pytest at once.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

RUN_LIMIT_S = 300  # nbval's limit for one cell
NOTEBOOK_LIMIT_S = 600  # for a whole notebook: a loaded machine can take 4 minutes over notebook 03


@dataclass
class NbvalRun:
    code: int  # pytest's exit status (0: every cell ran and the checked outputs matched)
    output: str  # what pytest printed: nbval shows the failing cell, its output and traceback
    seconds: float
    killed: bool


def kill_everything(pid: int) -> None:
    """SIGKILL `pid` and every process below it: pytest, the kernel (jupyter_client starts it in
    a session of its own, so the process group alone would miss it) and the kernel's children."""
    try:
        processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_under_nbval(notebook: Path, workdir: Path, env: dict[str, str], *, kill_when=None) -> NbvalRun:
    """Copy `notebook` into `workdir` (its working folder: nbval starts the kernel there) and run
    nbval on it with exactly the environment `env`; stop it when `kill_when()` becomes true."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(notebook, workdir / notebook.name)
    command = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
               "--nbval-cell-timeout", str(RUN_LIMIT_S), "-q", notebook.name]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    killed = threading.Event()

    def watch():
        while process.poll() is None:
            if kill_when():
                killed.set()
                kill_everything(process.pid)
                return
            time.sleep(0.02)

    if kill_when is not None:
        threading.Thread(target=watch, daemon=True).start()
    try:
        output, _ = process.communicate(timeout=NOTEBOOK_LIMIT_S)
    except subprocess.TimeoutExpired:
        kill_everything(process.pid)
        output = process.communicate()[0] + f"\n(stopped after {NOTEBOOK_LIMIT_S} s)"
    return NbvalRun(process.returncode, output, time.perf_counter() - start, killed.is_set())
