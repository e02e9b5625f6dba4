"""Train / validation / test splits that keep every lesion in one split.

ISIC 2019 holds several photos of many lesions (5,059 lesions have 2 to 31 images). A split by
image puts photos of the same lesion on both sides: on the real metadata about 60 % of the
test images then have a sibling in training, and the test score measures recognition of a
lesion already seen. `grouped_split` assigns whole groups (`frame["group"]`: the lesion id, or
the image id when unknown) and keeps each class's share the same in every split.
`random_split` is the per-image split, kept to show the leak; `leakage` measures it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from skinlib.storage.atomic import atomic_write_text
from skinlib.data import read_csv, require_columns, row_refs
from skinlib.layout import DataError

SPLITS = ("train", "val", "test")


def check_fractions(fractions: Sequence[float]) -> np.ndarray:
    """The (train, val, test) shares as an array; ValueError unless train > 0, none < 0, sum 1."""
    values = np.asarray(fractions, dtype=float)
    if values.shape != (3,) or (values < 0).any() or values[0] <= 0 or abs(values.sum() - 1) > 1e-6:
        raise ValueError(
            f"fractions must be three shares (train, val, test), train > 0, summing to 1; got {fractions}"
        )
    return values


def _check_frame(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"the frame to split needs columns {', '.join(columns)}; missing {', '.join(missing)}")


def _assign(labels: np.ndarray, groups: np.ndarray, fractions: np.ndarray, seed: int) -> np.ndarray:
    """Split index (0, 1, 2) per row: whole groups, each class divided in `fractions` of its images.

    Per class, groups are visited largest first (ties in a seeded random order) and each goes to
    the split furthest below its target number of images. A group's class is its most common
    label; in ISIC 2019 all images of a lesion share the diagnosis, so stratification is exact
    up to the size of one group. Linear in the number of rows (scikit-learn's
    StratifiedGroupKFold gives the same guarantees but takes ~20 s on the 25,331 real rows).
    """
    group_codes, group_index = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(group_codes), int(labels.max()) + 1), dtype=np.int64)
    np.add.at(counts, (group_index, labels), 1)
    sizes = counts.sum(axis=1)
    group_label = counts.argmax(axis=1)

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(group_codes))
    order = order[np.argsort(-sizes[order], kind="stable")]  # largest first, shuffled ties

    group_split = np.empty(len(group_codes), dtype=np.int64)
    for label in np.unique(group_label):
        members = order[group_label[order] == label]
        target = fractions * sizes[members].sum()
        filled = np.zeros(3)
        for g in members.tolist():
            k = int(np.argmax(target - filled))
            group_split[g] = k
            filled[k] += sizes[g]
    return group_split[group_index]


def _as_series(codes: np.ndarray, frame: pd.DataFrame) -> pd.Series:
    return pd.Series(np.asarray(SPLITS, dtype=object)[codes], index=frame.index, name="split")


def grouped_split(
    frame: pd.DataFrame, fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
) -> pd.Series:
    """'train' / 'val' / 'test' per row (index = frame.index): stratified by `label`, grouped by
    `group` (no group in two splits), the same for the same seed."""
    _check_frame(frame, ("label", "group"))
    codes = _assign(
        frame["label"].to_numpy(dtype=np.int64), frame["group"].astype(str).to_numpy(),
        check_fractions(fractions), seed,
    )
    return _as_series(codes, frame)


def random_split(
    frame: pd.DataFrame, fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
) -> pd.Series:
    """Per-image split stratified by `label`, ignoring lesions: what not to do (see `leakage`)."""
    _check_frame(frame, ("label",))
    each_image_alone = np.arange(len(frame))
    codes = _assign(frame["label"].to_numpy(dtype=np.int64), each_image_alone, check_fractions(fractions), seed)
    return _as_series(codes, frame)


def leakage(frame: pd.DataFrame, split: pd.Series) -> float:
    """Share of test images whose group (lesion) also has an image in the training split."""
    _check_frame(frame, ("group",))
    split = pd.Series(np.asarray(split), index=frame.index) if not isinstance(split, pd.Series) else split
    if not split.index.equals(frame.index):
        raise ValueError("split must have the same index as frame (as returned by grouped_split)")
    test = frame.loc[split == "test", "group"]
    if test.empty:
        return 0.0
    train_groups = frame.loc[split == "train", "group"].unique()
    return float(test.isin(train_groups).mean())


def save_split(frame: pd.DataFrame, split: pd.Series, path: str | os.PathLike) -> None:
    """Write image,label,group,split to a CSV, so that a run can be evaluated on the same split."""
    _check_frame(frame, ("image", "label", "group"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = frame[["image", "label", "group"]].copy()
    out["split"] = split
    atomic_write_text(path, out.to_csv(index=False))  # whole or absent (skinlib.storage.atomic), even on Drive


def load_split(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV written by `save_split`; a bad label or split name is an error naming the row."""
    path = Path(path)
    table = read_csv(path, "split CSV")
    require_columns(table, path, ("image", "label", "group", "split"))
    labels = pd.to_numeric(table["label"], errors="coerce")
    bad = np.flatnonzero(labels.isna() | (labels % 1 != 0) | (labels < 0)).tolist()
    if bad:
        raise DataError(f"{path}: label is not a class index in {row_refs(bad, table['image'])}")
    bad = np.flatnonzero(~table["split"].isin(SPLITS)).tolist()
    if bad:
        raise DataError(f"{path}: split must be one of {', '.join(SPLITS)} in {row_refs(bad, table['image'])}")
    table["label"] = labels.astype(np.int64)
    return table[["image", "label", "group", "split"]]
