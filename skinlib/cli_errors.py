"""How the command line turns every expected failure into one line, `error: ...`.

A usage error (a value argparse or TrainConfig refuses) exits with status 2, any other expected
failure (bad data, a folder that is not the kit's, a stale cache, a checkpoint of another run,
a file the system will not let us read or write) with status 1. Both name the option, file,
row or address at fault. A traceback means a bug in the kit.
"""
from __future__ import annotations

import argparse
import re

# Options of `train` whose TrainConfig field has another name.
OPTION_OF_FIELD = {"weights_path": "--weights", "num_workers": "--workers", "batch_size": "--batch-size",
                   "max_batches": "--max-batches"}


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (argparse prints the usage first)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def int_at_least(minimum: int):
    """argparse type: an integer >= `minimum`."""
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {number}")
        return number
    parse.__name__ = "integer"
    return parse


WORKERS_PER_CPU = 4  # more processes than this only wait for a CPU (and 100000 never start)


def worker_count(value: str) -> int:
    """argparse type: worker processes, from 0 to WORKERS_PER_CPU per CPU this process may use."""
    from skinlib.device import available_cpus

    number = int_at_least(0)(value)
    cpus = available_cpus()
    if number > WORKERS_PER_CPU * cpus:
        raise argparse.ArgumentTypeError(
            f"{number} is more than {WORKERS_PER_CPU} per CPU (this machine gives {cpus} CPU(s): at most "
            f"{WORKERS_PER_CPU * cpus}); leave it out for one per CPU")
    return number


worker_count.__name__ = "integer"


def device_name(value: str) -> str:
    """argparse type: a device torch understands ("cuda", "cuda:1", "mps", "cpu")."""
    import torch

    try:
        kind = torch.device(value).type
    except (RuntimeError, ValueError):
        kind = None
    if kind not in ("cuda", "mps", "cpu"):  # torch also names "meta", "xla", ...: nothing trains there
        raise argparse.ArgumentTypeError(f"{value!r} is not a device: use cuda, cuda:1, mps or cpu")
    return value


def option_names(message: str) -> str:
    """A TrainConfig message in the command line's words: field names become option names."""
    message = message.removeprefix("invalid TrainConfig: ").replace(" or None, got ", ", got ")
    return re.sub(r"\b([a-z_]+)(?= must )",
                  lambda m: OPTION_OF_FIELD.get(m.group(1), "--" + m.group(1).replace("_", "-")), message)


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input, a file in the way or a missing one: one line, exit status 1.

    Every skinlib error derives from SkinlibError; an OSError is the system refusing a file
    (permissions, a full disk, a name that is a folder) and is reported with that file's name.
    """
    from skinlib.errors import SkinlibError

    return (SkinlibError, OSError)


def one_line(err: BaseException) -> str:
    """The message of `err` on one line.

    An error raised in a DataLoader worker comes back with the worker's traceback in its
    message ("Caught ImageError in DataLoader worker process 0. Original Traceback ...");
    its last line is the original message. An OSError names its file and the system's reason.
    """
    if isinstance(err, OSError) and getattr(err, "filename", None) is not None and err.strerror:
        return f"{err.filename}: {err.strerror}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if "Original Traceback" in str(err):
        last, marker = lines[-1], f"{type(err).__name__}: "  # "skinlib.data.ImageError: ..."
        return last.split(marker, 1)[1] if marker in last else last
    return " ".join(lines)


# What each command keeps when Ctrl-C stops it, and how to go on (fields of its arguments).
INTERRUPTED = {
    "check": "check writes nothing; run it again",
    "synth": "{out} holds a partial SYNTHETIC set (no CSVs yet); run the same command again to write it whole",
    "prepare": "the images prepared so far are kept in {cache}; run the same command again to continue",
    "download": "what was fetched is kept in {data}; run the same command again to continue",
    "subset": "{out} holds a partial mirror; run the same command again to write it whole",
    "demo": "what finished is kept in {out}; run the same command again to continue (the run starts over)",
    "train": "{out} keeps what finished; run the same command with --resume to continue",
}


def interrupted_line(args: argparse.Namespace, err: KeyboardInterrupt) -> str:
    """The one line that Ctrl-C ends a command with: what is kept and how to continue."""
    describe = getattr(err, "describe", None)  # engine.TrainingInterrupted: the epoch and the checkpoint
    if describe is not None and args.command == "train":
        return "error: " + describe("running the same command with --resume")
    what = INTERRUPTED.get(args.command, "the files written so far are kept; run the command again")
    return f"error: interrupted; {what.format(**vars(args))}"
