"""Splits against the real ISIC 2019 metadata: no lesion in two splits, class shares kept,
and the leak of a per-image split measured against its expected value computed from the
real lesion sizes."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skinlib.data import CLASSES, DataError, load_index
from skinlib.splits import SPLITS, grouped_split, leakage, load_split, random_split, save_split


@pytest.fixture(scope="module")
def real_index(real_csv_dir):
    return load_index(real_csv_dir, check_files=False)


@pytest.fixture(scope="module")
def real_split(real_index):
    return grouped_split(real_index, seed=0)


def expected_random_leakage(frame: pd.DataFrame, train_share: float) -> float:
    """A test image of a lesion with k images leaks unless all k-1 siblings stay out of training."""
    sizes = frame.groupby("group")["group"].transform("size").to_numpy()
    return float(np.mean(1 - (1 - train_share) ** (sizes - 1)))


def test_grouped_split_puts_no_lesion_in_two_splits(real_index, real_split):
    groups = {name: set(real_index.loc[real_split == name, "group"]) for name in SPLITS}
    assert not groups["train"] & groups["val"]
    assert not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]


def test_grouped_split_keeps_every_class_share_within_1_5_points(real_index, real_split):
    overall = real_index["label"].value_counts(normalize=True).sort_index() * 100
    per_split = pd.crosstab(real_index["label"], real_split, normalize="columns") * 100
    assert list(per_split.index) == list(range(len(CLASSES)))  # every class in every split, DF and VASC too
    deviation = per_split.sub(overall, axis=0).abs()
    assert (deviation <= 1.5).all().all(), deviation


def test_grouped_split_sizes_are_near_70_15_15(real_split):
    shares = real_split.value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.70, abs=0.01)
    assert shares["val"] == pytest.approx(0.15, abs=0.01)
    assert shares["test"] == pytest.approx(0.15, abs=0.01)


def test_grouped_split_is_deterministic_for_a_seed(real_index, real_split):
    assert grouped_split(real_index, seed=0).equals(real_split)
    assert not grouped_split(real_index, seed=1).equals(real_split)


def test_grouped_split_leaks_nothing(real_index, real_split):
    assert leakage(real_index, real_split) == 0.0


def test_random_split_leaks_about_60_percent_of_test_images(real_index):
    split = random_split(real_index, seed=0)
    measured = leakage(real_index, split)
    assert 0.55 <= measured <= 0.65
    assert measured == pytest.approx(expected_random_leakage(real_index, 0.70), abs=0.02)
    # It is still a good per-image stratified split: sizes and class shares are right.
    assert split.value_counts(normalize=True)["test"] == pytest.approx(0.15, abs=0.005)


def test_notebook_00_quotes_the_leak_its_own_split_gives(real_index):
    # the figure a student's guess is put beside when the data folder is not the full ISIC 2019
    source = (Path(__file__).resolve().parent.parent / "tools" / "notebook_src" / "00_setup_and_data.py").read_text()
    quoted = float(re.search(r"^FULL_LEAK = ([0-9.]+)", source, re.MULTILINE).group(1))
    assert round(100 * leakage(real_index, random_split(real_index, seed=0)), 1) == quoted


def test_random_80_20_split_leaks_the_published_60_percent(real_index):
    measured = leakage(real_index, random_split(real_index, fractions=(0.8, 0.0, 0.2), seed=0))
    assert measured == pytest.approx(0.60, abs=0.02)
    assert measured == pytest.approx(expected_random_leakage(real_index, 0.80), abs=0.02)


def test_split_keeps_the_frame_index(real_index):
    subset = real_index.iloc[::7]
    split = grouped_split(subset, seed=3)
    assert split.index.equals(subset.index)
    assert set(split) == set(SPLITS)


def test_save_and_load_split_round_trip(real_index, real_split, tmp_path):
    path = tmp_path / "run" / "split.csv"
    save_split(real_index, real_split, path)
    table = load_split(path)
    assert list(table.columns) == ["image", "label", "group", "split"]
    assert table["image"].tolist() == real_index["image"].tolist()
    assert table["label"].tolist() == real_index["label"].tolist()
    assert table["split"].tolist() == real_split.tolist()


def test_load_split_names_the_row_with_an_unknown_split(real_index, real_split, tmp_path):
    path = tmp_path / "split.csv"
    save_split(real_index.head(10), real_split.head(10), path)
    lines = path.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",holdout"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"split\.csv.*row 3 \(line 4"):
        load_split(path)


@pytest.mark.parametrize("label", ["-1", "1.5", "MEL", ""])
def test_load_split_names_the_row_whose_label_is_not_a_class_index(tmp_path, label):
    path = tmp_path / "split.csv"
    path.write_text("image,label,group,split\nISIC_1,0,g1,train\nISIC_2,3,g2,val\n"
                    f"ISIC_3,{label},g3,test\nISIC_4,7,g4,train\n")
    with pytest.raises(DataError, match=r"split\.csv: label is not a class index in row 3 \(line 4, ISIC_3\)"):
        load_split(path)


def test_load_split_reads_whole_labels_as_integers(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("image,label,group,split\nISIC_1,0,g1,train\nISIC_2,7.0,g2,val\n")
    table = load_split(path)
    assert table["label"].tolist() == [0, 7] and table["label"].dtype == np.int64


@pytest.mark.parametrize("fractions", [(0.7, 0.2, 0.2), (0.0, 0.5, 0.5), (0.5, 0.5), (1.2, -0.1, -0.1)])
def test_bad_fractions_are_rejected(real_index, fractions):
    with pytest.raises(ValueError, match="fractions"):
        grouped_split(real_index.head(100), fractions=fractions)


def test_grouped_split_works_on_the_synthetic_set(synthetic_dir):
    index = load_index(synthetic_dir)
    split = grouped_split(index, seed=0)
    assert leakage(index, split) == 0.0
    assert split.value_counts(normalize=True)["train"] == pytest.approx(0.7, abs=0.05)
