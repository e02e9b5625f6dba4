"""The run folder of `train`: the kit's own, locked while a run writes it, checked before use.

`open_run_folder` claims `--out` as a run folder (see `storage.folders.claim_folder`): new, empty or
marked as a run. `check_settings` refuses, before any training, settings that cannot work on
the images of the run. `check_saved_split` refuses to resume on a split.csv that was drawn for
other settings (one left by a run that failed before its first checkpoint).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from skinlib.data import DataError
from skinlib.storage.atomic import remove_stale_temporaries
from skinlib.storage.checkpoint import CheckpointError, read_weights
from skinlib.storage.folders import KitFolder, claim_folder

CONFIG_JSON, SPLIT_CSV, CHECKPOINT = "config.json", "split.csv", "checkpoint.pt"
METRICS_JSON, CURVES_PNG, CONFUSION_PNG = "metrics.json", "curves.png", "confusion.png"
RUN_FILES = (CONFIG_JSON, SPLIT_CSV, CHECKPOINT, METRICS_JSON, CURVES_PNG, CONFUSION_PNG, "model.pt")
# The settings a split.csv depends on: another value draws another split.
SPLIT_SETTINGS = ("seed", "limit", "fractions")


def open_run_folder(out: str | Path) -> KitFolder:
    """`out` as the kit's run folder (FolderError if it holds anything else)."""
    return claim_folder(out, "run", option="--out")


def remove_leftovers(folder: KitFolder) -> list[Path]:
    """Delete temporary files a killed run left (call while holding the folder's lock)."""
    removed = []
    for name in RUN_FILES:
        removed += remove_stale_temporaries(folder.path / name)
    if removed:
        print(f"removed {len(removed)} temporary file(s) left by a run that was cut off: "
              f"{', '.join(p.name for p in removed)}")
    return removed


def check_saved_split(folder: KitFolder, config) -> None:
    """Refuse a split.csv without a checkpoint whose config.json says it was drawn otherwise.

    Such a split.csv comes from a run that stopped before its first epoch ended; its config.json
    (written once the loaders were built) says which settings drew it.
    """
    split_csv, saved_config = folder.path / SPLIT_CSV, folder.path / CONFIG_JSON
    if not split_csv.exists() or (folder.path / CHECKPOINT).exists():
        return
    try:
        saved = json.loads(saved_config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = None
    current = config.to_dict()
    if not isinstance(saved, dict):
        raise DataError(f"{split_csv} was left by a run that stopped before its first checkpoint "
                        f"and {saved_config.name} does not say how it was drawn; start a new run "
                        f"(another --out), or delete {split_csv}")
    differ = [f"{key}: {saved.get(key)!r} in {CONFIG_JSON}, {current[key]!r} now"
              for key in SPLIT_SETTINGS if saved.get(key) != current[key]]
    if Path(str(saved.get("data"))).resolve() != Path(config.data).resolve():
        differ.append(f"data: {saved.get('data')} in {CONFIG_JSON}, {config.data} now")
    if differ:
        raise DataError(f"{split_csv} was drawn by a run with other settings ({'; '.join(differ)}); "
                        f"resume with those settings, or start a new run (another --out)")


def check_checkpoint_data(checkpoint: Path, data: dict, split_csv: Path) -> None:
    """Refuse to resume `checkpoint` if the data record it was saved with differs from `data`
    (the fingerprint of the images, labels and split, and the pretrained setting).

    Read through a memory map: only the small record is loaded, not the weights. Checkpoints
    written before the record existed have none and are not checked.
    """
    try:
        saved = read_weights(checkpoint, "checkpoint", CheckpointError, mmap=True).get("data")
    except (CheckpointError, AttributeError):  # a damaged file is reported by load_checkpoint, with its name
        return
    if not isinstance(saved, dict):
        return
    differ = []
    if saved.get("fingerprint") not in (None, data["fingerprint"]):
        differ.append(f"the images, labels or {split_csv.name} changed (fingerprint "
                      f"{str(saved['fingerprint'])[:12]} in the checkpoint, {data['fingerprint'][:12]} now)")
    if saved.get("pretrained") not in (None, data["pretrained"]):
        differ.append(f"pretrained: {saved['pretrained']} in the checkpoint, {data['pretrained']} now")
    if differ:
        raise DataError(f"checkpoint {checkpoint} was trained on other data or settings "
                        f"({'; '.join(differ)}); resume with the data, {split_csv} and settings "
                        f"it was made with, or start a new run (another --out)")


def check_settings(config, frame: pd.DataFrame, split: pd.Series) -> None:
    """Refuse settings that cannot train on these images, before any training starts."""
    counts = split.value_counts()
    empty = [name for name in ("train", "val", "test") if counts.get(name, 0) == 0]
    where = f"--limit {config.limit}" if config.limit is not None else f"{config.data}"
    if empty:
        raise DataError(
            f"{where}: {len(frame)} image(s) in {frame['group'].nunique()} lesion group(s) leave the "
            f"{' and '.join(empty)} split(s) empty (fractions {'/'.join(map(str, config.fractions))}); "
            f"use more images{' (a larger --limit)' if config.limit is not None else ''}")
    n_train = int(counts["train"])
    if config.batch_size > n_train:
        raise DataError(
            f"--batch-size {config.batch_size} is larger than the training split ({n_train} images"
            f"{f' with {where}' if config.limit is not None else ''}); use --batch-size {n_train} or less")
