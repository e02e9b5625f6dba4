"""The command line: `python -m skinlib {check,synth,train,demo,...}` (also installed as `skinlib`).

Laid out like torchvision's reference scripts: `get_args_parser()` builds the parser and
`main(argv)` parses and calls the same functions the notebooks call. Every command is a
`register(subparsers)` function that adds its subparser and `set_defaults(func=...)`, where
`func(args) -> int` is the exit status; `prepare`, `download`, `predict` and `subset` are
registered by their modules (`cache`, `download`, `predict`, `subset`), next to the code they run.

Expected failures (a broken dataset, missing pretrained weights, a bad checkpoint) end as one
line on stderr and exit status 1, not a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from skinlib import predict
from skinlib.acquire import download, subset
from skinlib.storage import cache
from skinlib.cli_errors import (OneLineParser, device_name, expected_errors, int_at_least,  # noqa: F401
                                interrupted_line, one_line, option_names, worker_count)
from skinlib.config import TrainConfig
from skinlib.errors import SkinlibError
from skinlib.models import MODELS

# The demo: SimpleCNN from scratch on 800 synthetic images, 4 epochs at the course's learning
# rate (7e-4, one-cycle); README says how long it takes.
DEMO_SETTINGS = dict(model="simplecnn", pretrained=False, epochs=4, batch_size=32, lr=7e-4)
DEMO_IMAGES = 800

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


# ---------------------------------------------------------------- check
def cmd_check(args: argparse.Namespace) -> int:
    from skinlib.acquire.bundle import check_provenance
    from skinlib.data import check_dataset

    check_provenance(args.data)  # restored from a course bundle: where it came from; refused if its CSVs changed
    report = check_dataset(args.data, verify_images=not args.no_verify, progress=not args.quiet)
    print(report.format())
    return EXIT_OK if report.ok else EXIT_ERROR


def register_check(subparsers) -> None:
    p = subparsers.add_parser("check", help="check a dataset folder (CSVs, images, classes, lesions)")
    p.add_argument("data", type=Path, help="folder in the layout of the ISIC 2019 download")
    p.add_argument("--no-verify", action="store_true",
                   help="do not open every image (faster; only checks that the files exist)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_check)


# ---------------------------------------------------------------- synth
def cmd_synth(args: argparse.Namespace) -> int:
    from skinlib.acquire.synth import make_synthetic

    try:
        out = make_synthetic(args.out, n=args.n, seed=args.seed)
    except ValueError as err:  # too few images for every class to have a few lesions
        if isinstance(err, SkinlibError):  # a folder in the way: not a usage error
            raise
        print(f"error: {option_names(str(err))}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote a SYNTHETIC dataset of {args.n} images to {out}")
    return EXIT_OK


def register_synth(subparsers) -> None:
    p = subparsers.add_parser("synth", help="write a synthetic dataset in the ISIC 2019 layout")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--n", type=int, default=800, help="number of images (default: %(default)s)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default: %(default)s)")
    p.set_defaults(func=cmd_synth)


# ---------------------------------------------------------------- train
# argparse dest -> TrainConfig field, for the options whose names differ. Options left out on
# the command line stay None and are not passed, so TrainConfig's defaults are the only ones.
_TRAIN_FIELDS = {
    "data": "data", "out": "out", "model": "model", "epochs": "epochs", "batch_size": "batch_size",
    "lr": "lr", "pretrained": "pretrained", "weights": "weights_path", "seed": "seed",
    "limit": "limit", "cache": "cache", "workers": "num_workers", "device": "device",
    "amp": "amp", "max_batches": "max_batches", "progress": "progress",
}


def config_from_args(args: argparse.Namespace):
    """The TrainConfig that `train` arguments describe (unset options keep TrainConfig's defaults)."""
    values = {field: getattr(args, dest) for dest, field in _TRAIN_FIELDS.items()
              if getattr(args, dest) is not None}
    if "data" not in values:
        from skinlib.acquire.synth import default_data_dir

        values["data"] = default_data_dir()
    return TrainConfig(**values)


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from skinlib import distributed
    from skinlib.train import run

    try:
        _check_weights_options(args)
        config = config_from_args(args)
    except ValueError as err:  # TrainConfig names every invalid value
        print(f"error: {option_names(str(err))}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with distributed.torchrun_session(config.device, run_dir=config.out):  # only under torchrun
            run(config, resume=args.resume)
    except torch.cuda.OutOfMemoryError as err:
        # torch's message is a paragraph about allocator settings; the fix a student needs is the batch size
        first = str(err).strip().splitlines()[0] if str(err).strip() else "out of memory"
        print(f"error: the GPU ran out of memory at batch size {config.batch_size} ({first}); "
              f"start a new run with a smaller --batch-size, e.g. {max(1, config.batch_size // 2)} "
              f"(a resumed run keeps its batch size)", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _check_weights_options(args: argparse.Namespace) -> None:
    """--weights is ResNet-50's ImageNet weights: refused with another model or --no-pretrained."""
    if args.weights is None:
        return
    if (args.model or TrainConfig.model) != "resnet50":
        raise ValueError(f"--weights {args.weights}: --weights is the ImageNet weights file of resnet50; "
                         f"{args.model} has none (leave --weights out)")
    if args.pretrained is False:
        raise ValueError(f"--weights {args.weights} and --no-pretrained contradict each other (ImageNet "
                         f"weights from the file, or random weights); leave one out")


def existing_file(value: str) -> Path:
    """argparse type: a path that must name an existing file."""
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value} is not a file")
    return path


def register_train(subparsers) -> None:
    p = subparsers.add_parser("train", help="train and evaluate a model; writes a run folder")
    p.add_argument("--data", type=Path, default=None,
                   help="dataset folder (default: $SKINLIB_DATA, else the embedded SYNTHETIC set)")
    p.add_argument("--model", choices=sorted(MODELS), default=None,
                   help="network (default: resnet50)")
    p.add_argument("--epochs", type=int, default=None, help=f"passes over the training split (default: {TrainConfig.epochs})")
    p.add_argument("--out", type=Path, required=True, help="run folder for checkpoint, metrics, figures")
    p.add_argument("--batch-size", type=int, default=None, help=f"images per batch (default: {TrainConfig.batch_size})")
    p.add_argument("--lr", type=float, default=None, help=f"learning rate (default: {TrainConfig.lr:g})")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_const", const=False,
                   default=None, help="start from random weights instead of ImageNet")
    p.add_argument("--weights", type=existing_file, default=None,
                   help="ImageNet weights file for resnet50 (for machines without internet)")
    p.add_argument("--resume", action="store_true",
                   help="continue from RUN/checkpoint.pt with the run's saved split")
    p.add_argument("--seed", type=int, default=None,
                   help=f"seed of the split, the weights and the data order (default: {TrainConfig.seed})")
    p.add_argument("--limit", type=int, default=None,
                   help="use N images (stratified by class, drawn before the split)")
    p.add_argument("--cache", type=Path, default=None, help="prepared-image cache folder (see `prepare`)")
    p.add_argument("--workers", type=worker_count, default=None,
                   help="DataLoader workers (default: one per CPU, at most 8)")
    p.add_argument("--device", type=device_name, default=None,
                   help="cuda, cuda:1, mps or cpu (default: best available)")
    p.add_argument("--no-amp", dest="amp", action="store_const", const=False, default=None,
                   help="train in float32 (no mixed precision)")
    p.add_argument("--max-batches", type=int, default=None,
                   help="stop each epoch after N batches (a quick smoke run)")
    p.add_argument("--quiet", dest="progress", action="store_const", const=False, default=None,
                   help="no progress bars")
    p.set_defaults(func=cmd_train)


# ---------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    """Synthetic data -> prepared-image cache -> SimpleCNN run, all under `args.out`.

    The data is always the synthetic set (not $SKINLIB_DATA): the demo must run anywhere in
    minutes. Decoding every JPEG on each epoch would cost more CPU than the network itself, so
    the images are prepared once into the cache, as the README recommends for real training.
    """
    import time

    from skinlib.data import METADATA_CSV
    from skinlib.storage.folders import claim_folder
    from skinlib.storage.runfolder import open_run_folder
    from skinlib.acquire.synth import is_synthetic, make_synthetic
    from skinlib.train import run

    started = time.perf_counter()
    out = Path(args.out)
    data, cache_dir, run_dir = out / f"synthetic-{DEMO_IMAGES}", out / "cache", out / "run"
    parts = {data.name, cache_dir.name, run_dir.name}
    demo = claim_folder(out, "demo", option="--out", adopt=lambda path: _demo_parts(path, parts))
    demo.record(*parts)
    if not (is_synthetic(data) and (data / METADATA_CSV).is_file()):  # the CSVs are written last
        print(f"generating {DEMO_IMAGES} SYNTHETIC images (drawn shapes, not medical images) in {data}")
        make_synthetic(data, n=DEMO_IMAGES, seed=0)
    print(cache.prepare(data, cache_dir, progress=not args.quiet).format())
    if (run_dir / "config.json").is_file():
        print(f"replacing the previous demo run in {run_dir}")
        previous = open_run_folder(run_dir)
        for name in sorted(previous.files):
            previous.remove(name)
    config = TrainConfig(data=str(data), out=str(run_dir), cache=str(cache_dir), device=args.device,
                         progress=not args.quiet, **DEMO_SETTINGS)
    run(config)
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return EXIT_OK


def _demo_parts(path: Path, parts: set[str]) -> set[str] | None:
    """The parts of a demo folder written before markers existed, each with the kit's own file."""
    own = ("skinlib-folder.json", "SYNTHETIC.txt", "manifest.json", "checkpoint.pt")
    present = {p.name for p in path.iterdir()}
    if present <= parts and all(any((path / name / f).exists() for f in own) for name in present):
        return present
    return None


def register_demo(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="train a small SimpleCNN on SYNTHETIC data end to end (no download, a few minutes)")
    p.add_argument("--out", type=Path, default=Path("outputs/demo"),
                   help="folder for the synthetic data and the run (default: %(default)s)")
    p.add_argument("--device", type=device_name, default=None,
                   help="cuda, mps or cpu (default: best available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)


# ---------------------------------------------------------------- parser and main
COMMANDS = (register_check, register_synth, register_train, register_demo, cache.register,
            download.register, predict.register, subset.register)


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m skinlib",
        description="Skin-lesion classification on ISIC 2019: check data, train, evaluate.")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    expected = expected_errors()
    try:
        return args.func(args)
    except BrokenPipeError:  # stdout was closed early (`check DATA | head`): nothing left to say
        with contextlib.suppress(OSError, ValueError):  # so that the exit's flush is silent too
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except expected as err:  # bad input, a file in the way, a diverged run: one line, no traceback
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as err:
        print(interrupted_line(args, err), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
