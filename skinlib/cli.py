"""The command line: `python -m skinlib {check,synth,train,demo,prepare,download,predict,subset}`
(also installed as `skinlib`), the whole of it in this file.

Laid out like torchvision's reference scripts: `get_args_parser()` builds the parser and
`main(argv)` parses and calls the same functions the notebooks call. Every command is a
`register_...(subparsers)` function that adds its subparser and `set_defaults(func=...)`, where
`func(args) -> int` is the exit status; `COMMANDS` lists them. No other module imports argparse.

Expected failures (a broken dataset, missing pretrained weights, a bad checkpoint) end as one
line on stderr: exit status 2 for a usage error (a value argparse or TrainConfig refuses), 1 for
any other (bad data, a folder that is not the kit's, a stale cache, a checkpoint of another run,
a file the system will not let us read or write). Both name the option, file, row or address
at fault. A traceback means a bug in the kit.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from pathlib import Path

import torch

from skinlib import predict
from skinlib.acquire import download, subset
from skinlib.layout import is_synthetic
from skinlib.config import TrainConfig
from skinlib.data import DataError
from skinlib.device import available_cpus, select_device
from skinlib.errors import SkinlibError
from skinlib.export import ExportedModel, load_model
from skinlib.images import STORED_SIZE
from skinlib.models import MODELS
from skinlib.storage.atomic import atomic_write_text, remove_stale_temporaries
from skinlib.storage.folders import KitFolder
from skinlib.storage.prepare import prepare

# The demo: SimpleCNN from scratch on 800 synthetic images, 4 epochs at the course's learning
# rate (7e-4, one-cycle); README says how long it takes.
DEMO_SETTINGS = dict(model="simplecnn", pretrained=False, epochs=4, batch_size=32, lr=7e-4)
DEMO_IMAGES = 800

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


# ---------------------------------------------------------------- one line per failure
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
    """--weights is a network's ImageNet weights: refused for one without any, or with --no-pretrained."""
    if args.weights is None:
        return
    model = args.model or TrainConfig.model
    if not MODELS[model].imagenet_weights:
        with_weights = ", ".join(name for name, network in MODELS.items() if network.imagenet_weights)
        raise ValueError(f"--weights {args.weights}: --weights is the ImageNet weights file of {with_weights}; "
                         f"{model} has none (leave --weights out)")
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
                   help=f"network (default: {TrainConfig.model})")
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
    from skinlib.acquire.synth import make_synthetic
    from skinlib.train import run

    started = time.perf_counter()
    out = Path(args.out)
    data, cache_dir, run_dir = out / f"synthetic-{DEMO_IMAGES}", out / "cache", out / "run"
    parts = {data.name, cache_dir.name, run_dir.name}
    demo = claim_folder(out, "demo", option="--out")
    demo.record(*parts)
    if not (is_synthetic(data) and (data / METADATA_CSV).is_file()):  # the CSVs are written last
        print(f"generating {DEMO_IMAGES} SYNTHETIC images (drawn shapes, not medical images) in {data}")
        make_synthetic(data, n=DEMO_IMAGES, seed=0)
    print(prepare(data, cache_dir, progress=not args.quiet).format())
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


def register_demo(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="train a small SimpleCNN on SYNTHETIC data end to end (no download, a few minutes)")
    p.add_argument("--out", type=Path, default=Path("outputs/demo"),
                   help="folder for the synthetic data and the run (default: %(default)s)")
    p.add_argument("--device", type=device_name, default=None,
                   help="cuda, mps or cpu (default: best available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)


# ---------------------------------------------------------------- prepare
def cmd_prepare(args: argparse.Namespace) -> int:
    report = prepare(args.data, args.cache, size=args.size, workers=args.workers,
                     progress=not args.quiet, force=args.force)
    print(report.format())
    if is_synthetic(args.data):
        print("the images are SYNTHETIC (made by `skinlib synth`): drawn shapes, not medical images")
    return 0


def register_prepare(subparsers) -> None:
    """Add `prepare` to the skinlib command line."""
    p = subparsers.add_parser(
        "prepare", help="decode every image once into a fast uint8 cache for training")
    p.add_argument("--data", type=Path, required=True, help="dataset folder (ISIC 2019 layout)")
    p.add_argument("--cache", type=Path, required=True, help="cache folder to write")
    p.add_argument("--size", type=int_at_least(8), default=STORED_SIZE,
                   help="side S of the stored S x S images (default: %(default)s; "
                        "full ISIC 2019 at 256 takes 4.98 GB)")
    p.add_argument("--workers", type=worker_count, default=None,
                   help="decoding processes (default: every available CPU)")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache is up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)


# ---------------------------------------------------------------- download
def register_download(subparsers) -> None:
    """Add `download` to the `python -m skinlib` command line."""
    parser = subparsers.add_parser(
        "download",
        help="download, verify and unpack the ISIC 2019 training data (about 9 GB)",
        description="Download ISIC 2019 (images, ground truth, metadata) into DATA, check every "
        "file and unpack the images. Re-running resumes an interrupted download; a finished "
        "one is only re-checked.",
    )
    parser.add_argument("data", type=Path, help="folder to fill (use local disk, e.g. /content/isic2019 in Colab)")
    parser.add_argument("--base-url", default=download.BASE_URL,
                        help=f"where the three files live (default {download.BASE_URL})")
    parser.add_argument("--keep-archive", action="store_true", help="keep the 9 GB zip after unpacking it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=cmd_download)


def cmd_download(args: argparse.Namespace) -> int:
    download.download_isic2019(
        args.data, base_url=args.base_url, progress=not args.no_progress, keep_archive=args.keep_archive
    )
    return 0


# ---------------------------------------------------------------- predict
def register_predict(subparsers) -> None:
    p = subparsers.add_parser("predict", help="classify images with a saved model (RUN/model.pt)")
    p.add_argument("images", nargs="+", type=a_path, help="image files or folders of images")
    p.add_argument("--model", type=a_path, required=True, help="model file written by train (RUN/model.pt)")
    p.add_argument("--top-k", type=int_at_least(1), default=3, help="classes shown per image (default: %(default)s)")
    p.add_argument("--cam", type=a_path, default=None, metavar="OUT_DIR", help="write Grad-CAM overlays here")
    p.add_argument("--csv", type=a_path, default=None, help="write every probability, one row per image")
    p.add_argument("--batch-size", type=int_at_least(1), default=16)
    p.add_argument("--device", type=device_name, default=None,
                   help="cuda, cuda:1, mps or cpu (default: best available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)


def a_path(value: str) -> Path:
    """argparse type: a path; an empty one would mean the current folder, which nobody types on purpose."""
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty name is not a file or folder")
    return Path(value)


def cmd_predict(args: argparse.Namespace) -> int:
    if args.csv is not None and args.csv.exists():
        raise DataError(f"{args.csv} already exists; choose another --csv file or move it away")
    paths = predict.image_paths(args.images)
    exported = load_model(args.model)
    if predict.is_synthetic(exported):
        print(predict.SYNTHETIC_NOTE)
    if args.cam is None:
        probs = _predict_and_print(args, exported, paths, None)
    else:
        cams = predict.open_cam_folder(args.cam, paths)
        with cams.lock("another predict"):
            for name in cams.files | set(predict.overlay_names(paths).values()):  # left by a predict that was killed
                remove_stale_temporaries(cams.path / name)
            probs = _predict_and_print(args, exported, paths, cams)
        print(f"Grad-CAM overlays in {cams.path}{os.sep}")
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(args.csv, locked=False)
        frame = predict.labelled(predict.table(paths, probs, exported.classes), exported)
        atomic_write_text(args.csv, frame.to_csv(index=False, float_format="%.6f"))
        print(f"wrote {len(paths)} rows to {args.csv}")
    return 0


def _predict_and_print(args, exported: ExportedModel, paths: list[Path], cams: KitFolder | None) -> torch.Tensor:
    probs = predict.predict(exported, paths, batch_size=args.batch_size, cam_dir=cams,
                            device=select_device(args.device, announce=False), progress=not args.quiet)
    for path, p in zip(paths, probs):
        print(predict.format_top_k(path, p, exported.classes, args.top_k))
    return probs


# ---------------------------------------------------------------- subset
def cmd_subset(args: argparse.Namespace) -> int:
    manifest = subset.make_subset(args.data, args.out, args.fraction, seed=args.seed)
    size = sum(entry["bytes"] for entry in manifest["files"].values())
    print(f"wrote a SUBSET mirror of ISIC 2019 to {args.out}: {manifest['images']:,} of "
          f"{manifest['source_images']:,} images ({manifest['lesion_groups']:,} lesion groups), "
          f"{size / 1e6:,.1f} MB, with {subset.MIRROR_MANIFEST} and {subset.LICENSE}.\n"
          f"Serve the folder over HTTP(S); students run `python -m skinlib download DATA --base-url URL`.")
    return 0


def _fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number (write 0.2 for a fifth)") from None
    if not 0 < number <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return number


def register_subset(subparsers) -> None:
    """Add `subset` to the `python -m skinlib` command line."""
    p = subparsers.add_parser("subset", help="write a smaller, lesion-grouped copy of ISIC 2019 to host as a mirror")
    p.add_argument("data", type=Path, help="the full download (ISIC 2019 layout)")
    p.add_argument("out", type=Path, help="new or empty folder for the mirror (or an earlier mirror, replaced)")
    p.add_argument("--fraction", type=_fraction, required=True, help="share of the images to keep, in (0, 1]")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="which lesions are drawn (default: %(default)s)")
    p.set_defaults(func=cmd_subset)


# ---------------------------------------------------------------- parser and main
COMMANDS = (register_check, register_synth, register_train, register_demo, register_prepare,
            register_download, register_predict, register_subset)


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
