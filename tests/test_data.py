"""The reader against the real ISIC 2019 CSVs and the 70 real sample images.

References: the published facts about the CSVs (shared/README.md) and an independent parse
of the same files with the standard library's csv module.
"""
from __future__ import annotations

import csv
import shutil

import pytest
import torch

from skinlib.data import (
    CLASSES, GROUND_TRUTH_CSV, IMAGENET_MEAN, IMAGENET_STD, METADATA_CSV, DataWarning, ISICDataset,
    check_dataset, eval_transform, load_index, open_image, read_ground_truth, read_metadata,
    train_transform,
)

REAL_COUNTS = dict(MEL=4522, NV=12875, BCC=3323, AK=867, BKL=2624, DF=239, VASC=253, SCC=628)
SAMPLE_COUNTS = dict(MEL=10, NV=10, BCC=10, AK=3, BKL=10, DF=10, VASC=10, SCC=7)


@pytest.fixture(scope="module")
def real_index(real_csv_dir):
    return load_index(real_csv_dir, check_files=False)


def test_real_ground_truth_has_25331_rows_with_the_published_class_counts(real_csv_dir):
    truth = read_ground_truth(real_csv_dir / GROUND_TRUTH_CSV)
    assert len(truth) == 25_331
    counts = truth["label"].value_counts()
    assert {name: int(counts[i]) for i, name in enumerate(CLASSES)} == REAL_COUNTS


def test_real_labels_match_an_independent_parse_of_the_csv(real_csv_dir):
    with open(real_csv_dir / GROUND_TRUTH_CSV, newline="") as handle:
        rows = list(csv.DictReader(handle))
    expected = [(row["image"], next(i for i, c in enumerate(CLASSES) if float(row[c]) == 1.0)) for row in rows]
    truth = read_ground_truth(real_csv_dir / GROUND_TRUTH_CSV)
    assert list(zip(truth["image"], truth["label"].tolist())) == expected


def test_real_metadata_has_11847_lesions_5059_with_several_images(real_csv_dir):
    meta = read_metadata(real_csv_dir / METADATA_CSV)
    per_lesion = meta["lesion_id"].value_counts()
    assert len(meta) == 25_331
    assert len(per_lesion) == 11_847
    assert int((per_lesion > 1).sum()) == 5_059
    assert per_lesion.max() == 31
    assert int(meta["lesion_id"].isna().sum()) == 2_084
    assert meta[["age_approx", "anatom_site_general", "sex"]].isna().sum().tolist() == [437, 2631, 384]


def test_real_index_groups_by_lesion_and_images_without_lesion_id_alone(real_index):
    known = real_index["lesion_id"].notna()
    assert (real_index.loc[known, "group"] == real_index.loc[known, "lesion_id"]).all()
    assert (real_index.loc[~known, "group"] == real_index.loc[~known, "image"]).all()
    assert real_index["group"].nunique() == 11_847 + 2_084
    assert list(real_index.columns) == ["image", "label", "lesion_id", "group", "path"]


def test_index_without_metadata_warns_and_makes_every_image_its_own_group(real_csv_dir, tmp_path):
    shutil.copy(real_csv_dir / GROUND_TRUTH_CSV, tmp_path / GROUND_TRUTH_CSV)
    with pytest.warns(DataWarning, match=METADATA_CSV):
        index = load_index(tmp_path, check_files=False)
    assert (index["group"] == index["image"]).all()
    assert index["lesion_id"].isna().all()


def test_real_sample_checks_ok_with_its_class_counts(real_sample_dir):
    report = check_dataset(real_sample_dir, progress=False)
    assert report.ok, report.format()
    assert report.n_images == 70
    assert report.class_counts == SAMPLE_COUNTS
    text = report.format()
    assert "AK" in text and "result: OK" in text
    assert not report.synthetic and "SYNTHETIC" not in text


def test_real_sample_images_decode_to_rgb_at_their_size(real_sample_dir):
    index = load_index(real_sample_dir)
    image = open_image(index["path"].iloc[0])
    assert image.mode == "RGB" and image.size == (600, 450)


@pytest.mark.parametrize("transform, dtype", [(train_transform(), torch.uint8), (eval_transform(), torch.float32)],
                         ids=["train", "eval"])
def test_dataset_yields_3x224x224_tensors_and_int_labels(real_sample_dir, transform, dtype):
    # training images stay uint8 (normalised on the device), evaluation images are normalised floats
    index = load_index(real_sample_dir)
    dataset = ISICDataset(index, transform)
    assert len(dataset) == 70
    for i in (0, 35, 69):
        x, y = dataset[i]
        assert x.shape == (3, 224, 224) and x.dtype == dtype
        assert isinstance(y, int) and y == index["label"].iloc[i]


def test_eval_transform_is_resize_centre_crop_and_imagenet_normalisation(real_sample_dir):
    from torchvision.transforms import functional as F

    # the resize is of the image's centre square (the stored form every source shares), so the
    # view is Resize(256) + CenterCrop(224)'s on the same pixel grid as a prepared cache's
    image = open_image(load_index(real_sample_dir)["path"].iloc[0])
    square = F.center_crop(image, min(image.size))
    expected = F.normalize(F.to_tensor(F.center_crop(F.resize(square, 256), 224)), IMAGENET_MEAN, IMAGENET_STD)
    assert torch.allclose(eval_transform()(image), expected, atol=0.02)


def test_train_transform_is_random_and_eval_transform_is_not(real_sample_dir):
    image = open_image(load_index(real_sample_dir)["path"].iloc[0])
    torch.manual_seed(0)
    assert not torch.equal(train_transform()(image), train_transform()(image))
    assert torch.equal(eval_transform()(image), eval_transform()(image))
