"""Responsible use, in numbers: how a model does for whom, and what a positive answer means.

Recall of one class per subgroup of ISIC 2019's metadata (anatomical site, sex, age band), with
each group's size and a 95 % Wilson interval, so that a small group's number is read with its
uncertainty; the class mix of each source archive (a shortcut a network can learn); and the
positive predictive value at a prevalence of one's choosing (Bayes' rule), not the test set's.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from skinlib.data import CLASSES, METADATA_CSV, read_metadata

AGE_BANDS = ((0, 30, "under 30"), (30, 45, "30-44"), (45, 60, "45-59"), (60, 75, "60-74"), (75, 200, "75 and over"))
UNKNOWN = "unknown"
SUBGROUPS = ("anatom_site_general", "sex", "age_band")


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion successes / n (95 % by default); (nan, nan)
    when n is 0. Unlike the normal approximation it stays inside [0, 1] for small groups."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def ppv_at_prevalence(sensitivity: float, specificity: float, prevalence: float) -> float:
    """P(disease | positive) by Bayes' rule: of the lesions called positive where a share
    `prevalence` has the disease, the share that have it."""
    true_pos = sensitivity * prevalence
    false_pos = (1 - specificity) * (1 - prevalence)
    return true_pos / (true_pos + false_pos) if true_pos + false_pos > 0 else float("nan")


def age_band(age) -> pd.Series:
    """Each approximate age as its band (AGE_BANDS), 'unknown' where it is missing."""
    age = pd.Series(age, dtype=float)
    bands = pd.Series(UNKNOWN, index=age.index, dtype=object)
    for low, high, name in AGE_BANDS:
        bands[(age >= low) & (age < high)] = name
    return bands


def with_metadata(frame: pd.DataFrame, data_dir: str | os.PathLike) -> pd.DataFrame:
    """`frame` (from `load_index`) with age_approx, age_band, sex and anatom_site_general from the
    metadata CSV (the kit's reader); a missing value reads 'unknown'."""
    meta = read_metadata(Path(data_dir) / METADATA_CSV).set_index("image")
    out = frame.copy()
    for column in ("age_approx", "sex", "anatom_site_general"):
        out[column] = out["image"].map(meta[column])
    out["age_band"] = age_band(out["age_approx"]).to_numpy()
    for column in ("sex", "anatom_site_general"):
        out[column] = out[column].fillna(UNKNOWN)
    return out


def subgroup_recall(groups, targets, predicted, cls: int = CLASSES.index("MEL")) -> pd.DataFrame:
    """Recall of class `cls` in each group: images of the group, lesions of the class among them,
    found (predicted as the class), recall and its 95 % Wilson interval; one row per group,
    largest first. A group without a lesion of the class has no recall (NaN)."""
    table = pd.DataFrame({"group": np.asarray(groups, dtype=object), "truth": np.asarray(targets) == cls,
                          "found": (np.asarray(predicted) == cls) & (np.asarray(targets) == cls)})
    rows = {}
    for group, part in table.groupby("group", sort=False):
        n, found = int(part["truth"].sum()), int(part["found"].sum())
        low, high = wilson_interval(found, n)
        rows[group] = {"images": len(part), f"{CLASSES[cls]} lesions": n, "found": found,
                       "recall": found / n if n else float("nan"), "95% low": low, "95% high": high}
    result = pd.DataFrame.from_dict(rows, orient="index")
    return result.sort_values(["images"], ascending=False, kind="stable")


def archive(frame: pd.DataFrame) -> pd.Series:
    """A proxy for the archive each image came from, read from its names: the lesion id's prefix
    (HAM_ for HAM10000, BCN_ for BCN_20000, MSK4_ for MSK), else 'no lesion id' (the oldest
    images, many of them named *_downsampled)."""
    prefix = frame["lesion_id"].astype("string").str.extract(r"^([A-Za-z]+\d*)_", expand=False)
    return prefix.map(lambda p: f"{p}_ lesion id", na_action="ignore").fillna("no lesion id").astype(object)


def class_mix(frame: pd.DataFrame, by: pd.Series) -> pd.DataFrame:
    """The share of each class within each group of `by` (rows sum to 1), and the group's size."""
    labels = pd.Series(pd.Categorical([CLASSES[i] for i in frame["label"]], categories=CLASSES), name="class")
    mix = pd.crosstab(pd.Series(np.asarray(by), name="group"), labels, normalize="index", dropna=False)
    mix = mix.reindex(columns=list(CLASSES), fill_value=0.0)
    mix.insert(0, "images", pd.Series(np.asarray(by)).value_counts())
    return mix.sort_values("images", ascending=False)
