"""One whole training run, from a dataset folder to a run folder of results.

`run(config)` is what `python -m skinlib train` and the notebooks call:

1. index the dataset (`data.load_index`);
2. with `config.limit`, keep N images drawn stratified by class (seeded), *before* the split;
3. split grouped by lesion and stratified by class (`splits.grouped_split`), saved as
   RUN/split.csv; a resumed run reads that file back instead of splitting again;
4. build the loaders, the model, Adam and the one-cycle schedule (`config.make_optimizer`,
   `config.make_scheduler`) and train with `engine.fit`, checkpointing to RUN/checkpoint.pt;
5. evaluate on the test split and write RUN/metrics.json, RUN/config.json, RUN/curves.png and
   RUN/confusion.png.

The run folder then holds everything needed to reproduce and report the run:

    RUN/config.json      the TrainConfig (TrainConfig.from_dict reads it back)
    RUN/split.csv        image, label, group, split for every image used
    RUN/checkpoint.pt    weights, optimizer, scheduler, random states, history (after every epoch)
    RUN/metrics.json     config, history, test metrics, split sizes, device, versions, synthetic
    RUN/curves.png       loss and accuracy per epoch, train and validation
    RUN/confusion.png    test confusion matrix
    RUN/model.pt         the trained model alone, for `predict` and notebooks 04-05 (skinlib.export)
"""
from __future__ import annotations

import contextlib
import json
import platform
from pathlib import Path
from typing import Any, Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torchvision

import skinlib
from skinlib import distributed, engine
from skinlib.acquire.synth import is_synthetic
from skinlib.config import make_optimizer, make_scheduler
from skinlib.data import CLASSES, NUM_CLASSES, DataError, load_index
from skinlib.device import autocast_dtype, describe_device, select_device
from skinlib.export import MODEL_FILE, data_fingerprint, export_model
from skinlib.storage.atomic import atomic_write, atomic_write_text
from skinlib.storage.folders import LOCK, MARKER, KitFolder, expand_home
from skinlib.storage.cache import check_cache_matches
from skinlib.loaders import make_loaders
from skinlib.metrics import json_safe, roc_auc_ovr, summarize
from skinlib.models import build_model
from skinlib.plots import plot_confusion, plot_curves
from skinlib.sampling import seed_everything
from skinlib.splits import SPLITS, grouped_split, load_split, save_split
from skinlib.storage.cache import reading
from skinlib.storage.checkpoint import CheckpointError, CheckpointPlan
from skinlib.storage.runfolder import (CHECKPOINT, CONFIG_JSON, CONFUSION_PNG, CURVES_PNG, METRICS_JSON, SPLIT_CSV,
                                       check_checkpoint_data, check_saved_split, check_settings, open_run_folder,
                                       remove_leftovers)


def run(config, *, resume: bool = False, train_augment: Callable | None = None) -> dict[str, Any]:
    """Train, evaluate and write the run folder `config.out`; return the metrics.

    The returned dict is what RUN/metrics.json holds (see `metrics_record`), plus the trained
    model under the key "model" (not written to the file). With `resume=True` an interrupted
    run continues from RUN/checkpoint.pt with its saved split, and a finished run is only
    evaluated again. Without it, a folder that already holds a checkpoint is refused rather
    than overwritten. The folder must be new, empty or the kit's own run folder, and is locked
    while the run writes it (see `skinlib.storage.runfolder`). Under torchrun only process 0 claims,
    locks, cleans and writes the folder; the other processes only read from it.
    `train_augment` replaces the training augmentation (see `loaders.make_loaders`); like the
    model, it is code, not a setting: a resumed run must be given the same one.
    """
    if not distributed.is_main_process():  # a view of the folder, never written through
        if distributed.main_refused_to_start(None):
            raise SystemExit(1)  # process 0 has said why, in one line: nothing to add
        return _run(config, KitFolder(Path(config.out), "run"), resume, train_augment)
    created = not expand_home(config.out).exists()
    folder = None
    try:
        with contextlib.ExitStack() as claimed:
            try:
                folder = open_run_folder(config.out)
                claimed.enter_context(folder.lock("another run"))
                claimed.enter_context(reading(config.cache))  # prepare cannot rewrite it meanwhile
            except BaseException as err:
                distributed.main_refused_to_start(err)
                raise
            distributed.main_refused_to_start(None)
            return _run(config, folder, resume, train_augment)
    except BaseException:
        if created and folder is not None:
            _remove_if_unused(folder)
        raise


def _remove_if_unused(folder: KitFolder) -> None:
    """Remove a run folder this run created and failed before writing anything to (a wrong
    --data, a refused setting): only its marker and lock are there, and nothing is left behind."""
    if folder.files:
        return
    for name in (MARKER, LOCK):
        (folder.path / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # anything else in it stays, and so does the folder
        folder.path.rmdir()


def _run(config, folder: KitFolder, resume: bool, train_augment: Callable | None) -> dict[str, Any]:
    """`run` in a claimed and locked folder: check, split, train, test, write the results."""
    out = folder.path
    checkpoint = out / CHECKPOINT
    main = distributed.is_main_process()  # under torchrun only process 0 writes
    if main:
        remove_leftovers(folder)
    if checkpoint.exists() and not resume:
        raise CheckpointError(
            f"{out} already holds a run ({checkpoint}); resume it (--resume / resume=True) "
            f"or choose another output folder")
    if resume:
        check_saved_split(folder, config)
    device = select_device(config.device)
    seed_everything(config.seed)

    drawn = not (resume and (out / SPLIT_CSV).exists())
    frame, split = _frame_and_split(config, folder, reuse=resume)
    try:
        check_settings(config, frame, split)
    except DataError:
        if drawn and main:  # a split of settings that cannot train is of no use to --resume
            folder.remove(SPLIT_CSV)
        raise
    data = {"fingerprint": data_fingerprint(frame, split), "pretrained": config.pretrained}
    if resume and checkpoint.exists():
        check_checkpoint_data(checkpoint, data, out / SPLIT_CSV)
    loaders = make_loaders(frame, split, config, device=device, train_augment=train_augment)
    if not resume and main:  # a resumed run's settings are only known to be valid once fit accepts them
        _write_json(folder.file(CONFIG_JSON), config.to_dict())
    model, history = _train(config, folder, loaders, split, device, data, resume)
    if main:
        _write_json(folder.file(CONFIG_JSON), config.to_dict())

    amp_dtype = autocast_dtype(device) if config.amp else None
    options = engine.LoopOptions(amp_dtype, config.channels_last and device.type == "cuda",
                                 config.progress and main, config.max_batches)
    test = engine.evaluate(model, loaders["test"], device, options=options, return_probs=True)
    record = metrics_record(config, history, test, split, device)
    model = distributed.unwrap(model)
    if main:
        _write_results(config, folder, record, history, test, model, data, len(frame))
    return {**record, "model": model}


def _train(config, folder: KitFolder, loaders: dict, split: pd.Series, device: torch.device,
           data: dict, resume: bool) -> tuple[torch.nn.Module, list[dict]]:
    """Build the model, optimizer and schedule and train them (`engine.fit`); return the model
    and the history. A run that diverges writes metrics.json of the epochs that finished."""
    main = distributed.is_main_process()
    model = build_model(config.model, num_classes=NUM_CLASSES, pretrained=config.pretrained,
                        weights_path=config.weights_path).to(device)
    model = distributed.wrap(model, channels_last=config.channels_last and device.type == "cuda")
    optimizer = make_optimizer(model, config)
    steps = len(loaders["train"])
    if config.max_batches is not None:
        steps = min(steps, config.max_batches)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch=steps)
    try:  # every process reads a checkpoint to resume; process 0 alone saves it (engine.fit)
        plan = CheckpointPlan(folder.file(CHECKPOINT) if main else folder.path / CHECKPOINT, resume,
                              {"data": data})
        history = engine.fit(model, loaders, optimizer, device, epochs=config.epochs, scheduler=scheduler,
                             config=config.replace(progress=config.progress and main), checkpoint=plan)
    except engine.NonFiniteLoss as err:  # the checkpoint keeps the last good epoch; say what finished
        if main:
            _write_json(folder.file(METRICS_JSON),
                        stopped_record(config, err.history, split, device, err))
        raise
    return model, history


def _write_results(config, folder: KitFolder, record: dict, history: list[dict], test: dict,
                   model: torch.nn.Module, data: dict, n_images: int) -> None:
    """metrics.json, the two figures and model.pt; then the one line that says where they are."""
    _write_json(folder.file(METRICS_JSON), record)
    _save_figure(plot_curves(history), folder.file(CURVES_PNG))
    _save_figure(plot_confusion(test["confusion"], classes=CLASSES), folder.file(CONFUSION_PNG))
    t = record["test"]
    export_model(folder.file(MODEL_FILE), model, config.model,
                 data={"fingerprint": data["fingerprint"], "images": n_images,
                       "synthetic": record["synthetic"], "folder": Path(config.data).name},
                 metrics={k: t[k] for k in ("accuracy", "balanced_accuracy")},
                 smoke=config.max_batches is not None)  # a run cut to a few batches is a smoke run
    print(f"test accuracy {t['accuracy']:.3f}, balanced accuracy {t['balanced_accuracy']:.3f} "
          f"(chance {1 / NUM_CLASSES:.3f}) on {t['n']} images"
          f"{' of SYNTHETIC data' if record['synthetic'] else ''}; results in {folder.path}/: "
          f"{METRICS_JSON}, {CURVES_PNG}, {CONFUSION_PNG}, {CHECKPOINT}, {MODEL_FILE}")


# ---------------------------------------------------------------- data and split
def stratified_sample(frame: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """`n` rows of `frame` drawn at random (seeded) with each class in its share of the frame.

    Every class is shuffled, and its k-th image gets the key (k + 0.5) / class size; taking the
    n smallest keys takes the same fraction n / len(frame) of every class (up to rounding), and
    the rarest classes first, so no class vanishes from a small sample while it could be kept.
    The rows keep the frame's order and index.
    """
    if n >= len(frame):
        return frame
    rng = np.random.default_rng(seed)
    shuffled = frame.iloc[rng.permutation(len(frame))]
    rank = shuffled.groupby("label").cumcount()
    size = shuffled["label"].map(shuffled["label"].value_counts())
    key = (rank + 0.5) / size
    chosen = key.sort_values(kind="stable").index[:n]
    return frame.loc[frame.index.isin(chosen)]


def _frame_and_split(config, folder: KitFolder, *, reuse: bool) -> tuple[pd.DataFrame, pd.Series]:
    """The images of the run and their split: read back from RUN/split.csv when `reuse` and it
    exists, else drawn (limit, then grouped split) and saved there. A prepared cache must hold
    exactly the data folder's images, unchanged (`storage.cache.check_cache_matches`)."""
    frame = load_index(config.data)
    if config.cache is not None:
        from skinlib.storage.cache import open_cache  # lazily, as loaders does: the cache is optional

        check_cache_matches(open_cache(config.cache), frame, config.data)
    split_csv = folder.path / SPLIT_CSV
    if reuse and split_csv.exists():
        return _saved_split(frame, split_csv)
    if config.limit is not None:
        if config.limit > len(frame) and distributed.is_main_process():
            print(f"note: limit {config.limit} is more than the {len(frame):,} images of {config.data}; "
                  f"all {len(frame):,} are used")
        frame = stratified_sample(frame, config.limit, seed=config.seed)
    split = grouped_split(frame, fractions=config.fractions, seed=config.seed)
    if distributed.is_main_process():  # the others draw the same split (same seed), unsaved
        save_split(frame, split, folder.file(SPLIT_CSV))
    return frame, split


def _saved_split(frame: pd.DataFrame, split_csv: Path) -> tuple[pd.DataFrame, pd.Series]:
    """The frame's images listed in a saved split, and their split, checked against the data."""
    saved = load_split(split_csv).set_index("image")
    missing = saved.index.difference(frame["image"])
    if len(missing):
        raise DataError(
            f"{split_csv} lists {len(missing)} image(s) that the dataset does not have "
            f"(first: {', '.join(missing[:5])}): the run was made on other data")
    frame = frame[frame["image"].isin(saved.index)]
    relabelled = frame["label"].to_numpy() != saved.loc[frame["image"], "label"].to_numpy()
    if relabelled.any():
        names = frame["image"][relabelled].tolist()
        raise DataError(
            f"{split_csv}: {len(names)} image(s) have another label in the dataset now "
            f"(first: {', '.join(names[:5])}): the run was made on other data")
    split = pd.Series(saved.loc[frame["image"], "split"].to_numpy(), index=frame.index, name="split")
    return frame, split


# ---------------------------------------------------------------- results
def metrics_record(config, history: list[dict], test: dict, split: pd.Series,
                   device: torch.device) -> dict[str, Any]:
    """The contents of metrics.json: plain JSON types, NaN written as null."""
    auc = roc_auc_ovr(test["targets"], test["probs"])
    summary = summarize(test["confusion"], CLASSES)
    counts = split.value_counts()
    return json_safe({
        "config": config.to_dict(),
        "history": history,
        "test": {
            "loss": test["loss"],
            **summary,
            "roc_auc": {"per_class": dict(zip(CLASSES, auc["per_class"])), "macro": auc["macro"]},
        },
        "classes": list(CLASSES),
        "split_sizes": {name: int(counts.get(name, 0)) for name in SPLITS},
        "device": describe_device(device),
        "processes": distributed.world_size(),
        "versions": {"skinlib": skinlib.__version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "python": platform.python_version()},
        "synthetic": bool(is_synthetic(config.data)),
    })


def stopped_record(config, history: list[dict], split: pd.Series, device: torch.device,
                   reason: BaseException) -> dict[str, Any]:
    """metrics.json of a run that stopped early: the epochs that finished, no test results."""
    counts = split.value_counts()
    return json_safe({
        "config": config.to_dict(), "history": history, "test": None,
        "stopped": str(reason), "classes": list(CLASSES),
        "split_sizes": {name: int(counts.get(name, 0)) for name in SPLITS},
        "device": describe_device(device), "processes": distributed.world_size(),
        "versions": {"skinlib": skinlib.__version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "python": platform.python_version()},
        "synthetic": bool(is_synthetic(config.data)),
    })


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def _save_figure(figure, path: Path) -> None:
    atomic_write(path, lambda f: figure.savefig(f, format=path.suffix[1:], dpi=120, bbox_inches="tight"))
    plt.close(figure)  # a long session of runs must not keep every figure open
