"""skinlib.subgroups: Wilson intervals against scipy and a hand-computed value, PPV against Bayes'
rule by hand, recall per group against scikit-learn, and the metadata counts against the real CSVs."""
from __future__ import annotations

import csv
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.metrics import recall_score

from skinlib.data import CLASSES, load_index
from skinlib.subgroups import (age_band, archive, class_mix, ppv_at_prevalence, subgroup_recall, wilson_interval,
                               with_metadata)

MEL = CLASSES.index("MEL")


def test_wilson_interval_matches_a_hand_computed_value():
    # 3 of 10, z = 1.96: centre (0.3 + 0.19208) / 1.38416 = 0.35547, half 0.24769 (worked by hand)
    low, high = wilson_interval(3, 10)
    assert low == pytest.approx(0.1078, abs=1e-4) and high == pytest.approx(0.6032, abs=1e-4)


@pytest.mark.parametrize("k, n", [(0, 5), (5, 5), (1, 3), (17, 40), (480, 1000)])
def test_wilson_interval_matches_scipy(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(expected.low, abs=1e-7) and high == pytest.approx(expected.high, abs=1e-7)


def test_wilson_interval_of_an_empty_group_is_undefined():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_ppv_by_bayes_rule_by_hand():
    # 1,000,000 lesions, 1 % melanoma: 9,000 of 10,000 found; 20 % of 990,000 others referred = 198,000
    assert ppv_at_prevalence(0.9, 0.8, 0.01) == pytest.approx(9_000 / (9_000 + 198_000))
    assert ppv_at_prevalence(1.0, 1.0, 0.3) == 1.0
    assert math.isnan(ppv_at_prevalence(0.0, 1.0, 0.1))  # nothing referred: undefined


def test_age_bands_have_closed_lower_and_open_upper_ends():
    bands = age_band([0, 29, 30, 44, 45, 59.9, 60, 74, 75, 85, np.nan])
    assert bands.tolist() == ["under 30", "under 30", "30-44", "30-44", "45-59", "45-59", "60-74", "60-74",
                              "75 and over", "75 and over", "unknown"]


def test_subgroup_recall_matches_scikit_learn_per_group():
    rng = np.random.default_rng(0)
    groups = rng.choice(["a", "b", "c"], 300)
    targets = rng.integers(0, 8, 300)
    predicted = np.where(rng.random(300) < 0.5, targets, rng.integers(0, 8, 300))
    table = subgroup_recall(groups, targets, predicted)
    for group in "abc":
        part = groups == group
        truth, guess = targets[part] == MEL, predicted[part] == MEL
        row = table.loc[group]
        assert row["images"] == part.sum() and row["MEL lesions"] == truth.sum()
        assert row["recall"] == pytest.approx(recall_score(truth, guess))
        assert (row["95% low"], row["95% high"]) == pytest.approx(wilson_interval(int(row["found"]), int(truth.sum())))


def test_a_group_without_the_class_has_no_recall():
    table = subgroup_recall(["x", "x", "y"], [MEL, 1, 2], [MEL, 1, 2])
    assert table.loc["x", "recall"] == 1.0 and math.isnan(table.loc["y", "recall"])


def _raw_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_metadata_counts_per_site_and_sex_match_the_real_csv(real_csv_dir):
    frame = with_metadata(load_index(real_csv_dir, check_files=False), real_csv_dir)
    rows = _raw_csv(real_csv_dir / "ISIC_2019_Training_Metadata.csv")
    sites = Counter(row["anatom_site_general"] or "unknown" for row in rows)
    sexes = Counter(row["sex"] or "unknown" for row in rows)
    assert frame["anatom_site_general"].value_counts().to_dict() == dict(sites)
    assert frame["sex"].value_counts().to_dict() == dict(sexes)
    assert sites["anterior torso"] == 6915 and sites["unknown"] == 2631 and sexes["male"] == 13286
    assert (frame["age_band"] == "unknown").sum() == 437


def test_archive_proxy_and_class_mix_on_the_real_csv(real_csv_dir):
    frame = load_index(real_csv_dir, check_files=False)
    sources = archive(frame)
    assert sources.value_counts().to_dict() == {"BCN_ lesion id": 12413, "HAM_ lesion id": 10015,
                                                "no lesion id": 2084, "MSK4_ lesion id": 819}
    mix = class_mix(frame, sources)
    assert np.allclose(mix[list(CLASSES)].sum(axis=1), 1.0)
    truth = _raw_csv(real_csv_dir / "ISIC_2019_Training_GroundTruth.csv")
    ham = [row for row, source in zip(truth, sources) if source == "HAM_ lesion id"]
    assert mix.loc["HAM_ lesion id", "NV"] == pytest.approx(sum(row["NV"] == "1.0" for row in ham) / len(ham))
    assert mix.loc["BCN_ lesion id", "MEL"] > 2 * mix.loc["HAM_ lesion id", "MEL"]  # the archives differ


def test_subgroups_on_the_real_sample(real_sample_dir):
    frame = with_metadata(load_index(real_sample_dir), real_sample_dir)
    table = subgroup_recall(frame["sex"], frame["label"], frame["label"])  # a perfect model
    assert table["images"].sum() == len(frame) == 70
    assert (table["recall"].dropna() == 1.0).all()
    assert isinstance(class_mix(frame, archive(frame)), pd.DataFrame)
