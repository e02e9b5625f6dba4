"""The synthetic set: the real download's layout and columns, the real class imbalance,
several photos per lesion, determinism, the SYNTHETIC marker, and visibly different classes."""
from __future__ import annotations

import filecmp
import shutil

import numpy as np
import pytest
from PIL import Image

from skinlib.data import (
    CLASSES, GROUND_TRUTH_CSV, IMAGES_DIR, METADATA_CSV, DataError, check_dataset, load_index, read_ground_truth,
)
from skinlib.storage.folders import claim_folder
from skinlib.acquire.synth import default_data_dir, make_synthetic
from skinlib.layout import is_synthetic


@pytest.fixture(scope="module")
def synthetic_index(synthetic_dir):
    return load_index(synthetic_dir)


def header(path):
    with open(path, newline="") as handle:
        return handle.readline().rstrip("\r\n")


def test_synthetic_csvs_have_exactly_the_real_columns(synthetic_dir, real_csv_dir):
    for name in (GROUND_TRUTH_CSV, METADATA_CSV):
        assert header(synthetic_dir / name) == header(real_csv_dir / name)


def test_synthetic_set_passes_the_same_checks_as_the_real_data(synthetic_dir):
    report = check_dataset(synthetic_dir, progress=False)
    assert report.ok, report.format()
    assert report.n_images == 160
    assert len(list((synthetic_dir / IMAGES_DIR).glob("ISIC_*.jpg"))) == 160
    # The report says SYNTHETIC wherever it is shown (notebook 00 prints it, as `check` does).
    assert report.synthetic and "SYNTHETIC data" in report.format().splitlines()[1]
    assert report.format().endswith("result: OK (SYNTHETIC data)")


def test_synthetic_class_shares_are_close_to_the_real_ones(synthetic_index, real_csv_dir):
    real = read_ground_truth(real_csv_dir / GROUND_TRUTH_CSV)["label"].value_counts(normalize=True)
    synthetic = synthetic_index["label"].value_counts(normalize=True)
    for i, name in enumerate(CLASSES):
        assert synthetic.get(i, 0) == pytest.approx(real[i], abs=0.025), name
    assert synthetic.idxmax() == CLASSES.index("NV")


def test_every_synthetic_class_has_a_few_lesions(synthetic_index):
    lesions = synthetic_index.groupby("label")["group"].nunique()
    assert len(lesions) == len(CLASSES)
    assert lesions.min() >= 3


def test_synthetic_lesions_have_several_images_and_some_none_has_a_lesion_id(synthetic_index):
    per_lesion = synthetic_index["lesion_id"].value_counts()
    assert (per_lesion > 1).sum() >= 10
    assert synthetic_index["lesion_id"].isna().any()
    # A lesion keeps its diagnosis across its photos.
    assert (synthetic_index.groupby("group")["label"].nunique() == 1).all()


def test_synthetic_photos_of_one_lesion_are_different_views(synthetic_index):
    lesion = synthetic_index["lesion_id"].value_counts().index[0]
    paths = synthetic_index.loc[synthetic_index["lesion_id"] == lesion, "path"].tolist()[:2]
    first, second = (np.asarray(Image.open(p), dtype=float) for p in paths)
    assert np.abs(first - second).mean() > 3


def test_synthetic_image_names_cannot_clash_with_real_ones(synthetic_index, real_csv_dir):
    real = set(read_ground_truth(real_csv_dir / GROUND_TRUTH_CSV)["image"])
    assert synthetic_index["image"].str.fullmatch(r"ISIC_9\d{6}").all()
    assert not real & set(synthetic_index["image"])


def test_synthetic_images_are_small_rgb_jpegs(synthetic_index):
    for path in synthetic_index["path"].iloc[:5]:
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (300, 225))


def test_synthetic_set_is_marked_synthetic_and_the_real_one_is_not(synthetic_dir, real_sample_dir):
    assert is_synthetic(synthetic_dir)
    assert "NOT MEDICAL" in (synthetic_dir / "SYNTHETIC.txt").read_text()
    assert not is_synthetic(real_sample_dir)


def test_a_copy_of_the_synthetic_set_without_its_marker_is_still_synthetic(synthetic_dir, real_sample_dir, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copytree(synthetic_dir / IMAGES_DIR, copy / IMAGES_DIR)
    for name in (GROUND_TRUTH_CSV, METADATA_CSV):  # everything but SYNTHETIC.txt
        shutil.copy(synthetic_dir / name, copy)
    assert is_synthetic(copy) and check_dataset(copy, verify_images=False, progress=False).synthetic
    assert not is_synthetic(real_sample_dir) and not check_dataset(real_sample_dir, progress=False).synthetic
    assert not is_synthetic(tmp_path / "nothing here")


def test_make_synthetic_is_deterministic_for_a_seed(tmp_path):
    first = make_synthetic(tmp_path / "a", n=48, seed=5)
    second = make_synthetic(tmp_path / "b", n=48, seed=5)
    other = make_synthetic(tmp_path / "c", n=48, seed=6)
    names = [GROUND_TRUTH_CSV, METADATA_CSV] + [f"{IMAGES_DIR}/{p.name}" for p in (first / IMAGES_DIR).iterdir()]
    match, mismatch, errors = filecmp.cmpfiles(first, second, names, shallow=False)
    assert len(match) == len(names) and not mismatch and not errors
    assert (first / METADATA_CSV).read_text() != (other / METADATA_CSV).read_text()


def test_make_synthetic_refuses_to_write_into_a_folder_of_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not writing into it"):
        make_synthetic(tmp_path, n=48)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_second_synth_into_a_folder_being_written_is_refused_and_changes_nothing(tmp_path):
    first = make_synthetic(tmp_path / "s", n=48, seed=5)
    before = sorted((first / IMAGES_DIR).iterdir())
    with claim_folder(first, "synthetic").lock("a test"):  # as while the first synth still writes it
        with pytest.raises(DataError, match=r"s is in use by another synth"):
            make_synthetic(first, n=160, seed=6)
    assert sorted((first / IMAGES_DIR).iterdir()) == before and len(load_index(first)) == 48


def colour_histogram(path, bins: int = 6) -> np.ndarray:
    """Share of pixels in each of bins**3 RGB cells: blind to position, rotation and flips."""
    cells = np.asarray(Image.open(path).reduce(4), dtype=np.int64) * bins // 256
    codes = (cells[..., 0] * bins + cells[..., 1]) * bins + cells[..., 2]
    return np.sqrt(np.bincount(codes.ravel(), minlength=bins**3) / codes.size)


def test_synthetic_classes_are_told_apart_by_their_colours(synthetic_index):
    """A linear model on colour histograms, tested on lesions it has not seen, must beat chance
    (balanced accuracy 0.125) by far: the classes differ visibly, not only in their labels.
    (It scores 0.63 on this 160-image set; DF, VASC and SCC have only two training images per fold.)"""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GroupKFold, cross_val_predict

    features = np.stack([colour_histogram(p) for p in synthetic_index["path"]])
    labels = synthetic_index["label"].to_numpy()
    predicted = cross_val_predict(
        LogisticRegression(C=100, class_weight="balanced", max_iter=5000), features, labels,
        groups=synthetic_index["group"], cv=GroupKFold(n_splits=4),
    )
    assert balanced_accuracy_score(labels, predicted) > 0.45


def test_default_data_dir_is_skinlib_data_when_set(monkeypatch, tmp_path):
    monkeypatch.setenv("SKINLIB_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path


def test_default_data_dir_names_a_missing_skinlib_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("SKINLIB_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="SKINLIB_DATA=.*nowhere.*does not exist"):
        default_data_dir()


def test_default_data_dir_generates_synthetic_once_and_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("SKINLIB_DATA", raising=False)
    monkeypatch.setenv("SKINLIB_CACHE", str(tmp_path))
    path = default_data_dir(n=48, seed=1)
    assert path == tmp_path / "synthetic-48-1" and is_synthetic(path)
    assert "SYNTHETIC" in capsys.readouterr().out
    stamp = (path / GROUND_TRUTH_CSV).stat().st_mtime_ns
    assert default_data_dir(n=48, seed=1) == path
    assert "SYNTHETIC" in capsys.readouterr().out
    assert (path / GROUND_TRUTH_CSV).stat().st_mtime_ns == stamp  # reused, not regenerated
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic-48-1"]  # no temporary folder left
