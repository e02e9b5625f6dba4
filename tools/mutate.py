"""A fixed set of mutants of the course's core, each of which the fast tests must kill (`make mutate`).

Each mutant is one textual change to a skinlib module (a step deleted, a comparison turned, a
setting forgotten): the mistakes a later edit could make without any test noticing. For each, the
tracked files are copied to a scratch folder, the change is made there, and the tests that should
notice run on the copy with `pytest -x`; a mutant whose tests still pass has survived, and the run
fails naming it. The working tree is never written to, so a Ctrl+C (or a crash) leaves nothing to
restore; the scratch folder is removed on the way out.

    python tools/mutate.py            # every mutant
    python tools/mutate.py --list     # their names
    python tools/mutate.py zero_grad  # the mutants whose name contains "zero_grad"
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    module: str  # path below the repository root
    original: str  # must occur exactly once in the module
    mutated: str
    tests: tuple[str, ...]  # pytest arguments (paths, globs, -k ...) that must fail on the mutant


MUTANTS = [
    # engine: the training step
    Mutant("engine: zero_grad deleted", "skinlib/engine.py",
           "        optimizer.zero_grad(set_to_none=True)\n", "", ("tests/test_engine.py",)),
    Mutant("engine: scheduler not stepped", "skinlib/engine.py",
           "            scheduler.step()\n", "            pass\n", ("tests/test_engine.py",)),
    Mutant("engine: clipping after the step", "skinlib/engine.py",
           "        if grad_clip is not None:\n            scaler.unscale_(optimizer)",
           "        if grad_clip is None:\n            scaler.unscale_(optimizer)", ("tests/test_engine.py",)),
    # metrics: the challenge's score
    Mutant("metrics: balanced accuracy over predicted counts", "skinlib/metrics.py",
           "    support = m.sum(axis=1)\n", "    support = m.sum(axis=0)\n", ("tests/test_metrics.py",)),
    Mutant("interpret: melanoma threshold >= turned into >", "skinlib/interpret.py",
           "np.asarray(mel_probs) >= threshold", "np.asarray(mel_probs) > threshold",
           ("tests/test_interpret.py",)),
    # augment: the training view and the evaluation view
    Mutant("augment: vertical flip drawn equal to the horizontal one", "skinlib/augment.py",
           "hflip < 0.5, vflip < 0.5", "hflip < 0.5, hflip < 0.5", ("tests/test_augment.py",)),
    Mutant("images: stored form from the top-left square, not the centre", "skinlib/images.py",
           "box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)",
           "box = (0, 0, side, side)", ("tests/test_augment.py",)),
    Mutant("augment: evaluation crop from the corner", "skinlib/augment.py",
           "top, left = (height - h) // 2, (width - w) // 2", "top, left = 0, 0", ("tests/test_augment.py",)),
    # splits
    Mutant("splits: load_split accepts negative labels", "skinlib/splits.py",
           " | (labels < 0)", "", ("tests/test_splits.py",)),
    Mutant("splits: every group to the first split", "skinlib/splits.py",
           "            k = int(np.argmax(target - filled))\n", "            k = 0\n", ("tests/test_splits.py",)),
    # resume: what a resumed run must share with the checkpoint
    Mutant("resume: batch_size not compared", "skinlib/storage/checkpoint.py",
           '"epochs", "batch_size", "lr"', '"epochs", "lr"', ("tests/test_resume.py", "-k", "refused")),
    Mutant("resume: grad_clip not compared", "skinlib/storage/checkpoint.py",
           '"weight_decay", "grad_clip", "seed"', '"weight_decay", "seed"',
           ("tests/test_resume.py", "-k", "refused")),
    Mutant("resume: random generators not restored", "skinlib/storage/checkpoint.py",
           '    restore_rng_state(state["rng"])\n', "", ("tests/test_resume.py", "-k", "not training_job")),
    # data on disk
    Mutant("download: a CSV already on disk not re-hashed", "skinlib/acquire/download.py",
           "            if sha256_file(path) != expected:", "            if False:",
           ("tests/test_download_integrity.py",)),
    Mutant("fetch: a download longer than announced kept", "skinlib/acquire/fetch.py",
           "        if total is not None and size > total:", "        if False:",
           ("tests/test_download_integrity.py",)),
    Mutant("course: Colab results folder not keyed by the data", "skinlib/course.py",
           'drive_dir / "runs" / data_id', 'drive_dir / "runs"', ("tests/test_course.py",)),
    # checks: what a student's loop is told
    Mutant("checks: piled-up gradients not noticed", "skinlib/checks/training.py",
           "        if spy.grads[1] is not None and torch.allclose(spy.grads[1], 2 * spy.grads[0], atol=1e-5):",
           "        if False:",
           ("tests/test_checks*.py",)),
]


def tracked_files() -> list[str]:
    """The repository's files as they are now: tracked ones, and new ones git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    return [name for name in listed.stdout.split("\0") if name and (ROOT / name).is_file()]


def copy_tree(files: list[str], dest: Path) -> None:
    for name in files:
        if (ROOT / name).is_file():  # not removed since the list was made
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)


def pytest_args(tests: tuple[str, ...], where: Path) -> list[str]:
    """The mutant's arguments with globs expanded in the copy (a test file may be split or renamed)."""
    args = []
    for arg in tests:
        matches = sorted(glob.glob(str(where / arg))) if any(c in arg for c in "*?[") else []
        args.extend([str(Path(m).relative_to(where)) for m in matches] or [arg])
    return args


def run_tests(tests: tuple[str, ...], where: Path, scratch: Path) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(where), os.environ.get("PYTHONPATH")])),
           # bytecode of the copy goes elsewhere: never a stale .pyc of another mutant, nothing in the tree
           "PYTHONPYCACHEPREFIX": str(scratch / "pycache"), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
               "-o", "addopts=", "--basetemp", str(scratch / "pytest"), *pytest_args(tests, where)]
    done = subprocess.run(command, cwd=where, env=env, capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


def mutated_text(mutant: Mutant, where: Path) -> str:
    """The module's text with the mutation made; exits with one error line if it cannot be made."""
    path = where / mutant.module
    if not path.is_file():
        raise SystemExit(f"error: {mutant.module}: no such module for mutant {mutant.name!r}; update tools/mutate.py")
    text = path.read_text(encoding="utf-8")
    if text.count(mutant.original) != 1:
        raise SystemExit(f"error: {mutant.module}: the text of mutant {mutant.name!r} occurs "
                         f"{text.count(mutant.original)} times (once expected); update tools/mutate.py")
    return text.replace(mutant.original, mutant.mutated)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="run only the mutants whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.names or any(n in m.name for n in args.names)]
    if args.list or not chosen:
        print("\n".join(m.name for m in chosen) if chosen else f"error: no mutant matches {args.names}")
        return 0 if chosen else 2
    for mutant in chosen:  # every mutation can be made, before minutes of tests
        mutated_text(mutant, ROOT)
    files = tracked_files()
    with tempfile.TemporaryDirectory(prefix="skinlib-mutate-") as scratch_name:
        scratch = Path(scratch_name)
        # the unmutated copy first: tests that fail anyway would make every mutant look killed
        clean = scratch / "clean"
        copy_tree(files, clean)
        # in one pytest run: every file the mutants name (a -k choice is a part of its file)
        files_named = tuple(sorted({arg for m in chosen for arg in m.tests if arg.startswith("tests/")}))
        code, output = run_tests(files_named, clean, scratch)
        if code != 0:
            print(output[-3000:])
            print(f"error: the tests {' '.join(files_named)} fail without any mutant; fix them first")
            return 2
        survivors = []
        for mutant in chosen:
            where = scratch / "mutant"
            shutil.rmtree(where, ignore_errors=True)
            copy_tree(files, where)
            (where / mutant.module).write_text(mutated_text(mutant, where), encoding="utf-8")
            start = time.perf_counter()
            code, output = run_tests(mutant.tests, where, scratch)
            verdict = {0: "SURVIVED", 1: "killed"}.get(code, f"error (pytest exit {code})")
            print(f"{verdict:>9}  {mutant.name}  ({time.perf_counter() - start:.0f} s)", flush=True)
            if code != 1:
                survivors.append(mutant.name)
                if code != 0:
                    print(output[-2000:])
    print(f"{len(chosen) - len(survivors)} of {len(chosen)} mutants killed")
    if survivors:
        print("error: not killed by the tests: " + "; ".join(survivors))
        return 1
    return 0


def _stop(signum, frame):
    raise KeyboardInterrupt  # a `kill` cleans up as Ctrl+C does


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("stopped: the working tree was never changed, the scratch copy is removed")
        sys.exit(130)
