"""`python -m skinlib subset`: a smaller mirror in the download's own layout, grouped by lesion."""
from __future__ import annotations

import hashlib
import json
import zipfile

import pandas as pd
import pytest

from skinlib.cli import main
from skinlib.data import GROUND_TRUTH_CSV, IMAGES_DIR, METADATA_CSV, DataError, load_index
from skinlib.acquire.subset import ARCHIVE, LICENSE, MIRROR_MANIFEST, make_subset


@pytest.fixture(scope="module")
def mirror(real_sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("mirror") / "isic2019-half"
    make_subset(real_sample_dir, out, 0.5, seed=0)
    return out


def _chosen(mirror) -> pd.DataFrame:
    return pd.read_csv(mirror / METADATA_CSV)


def test_whole_lesions_are_kept_or_left_out(mirror, real_sample_dir):
    full = load_index(real_sample_dir)
    chosen = set(_chosen(mirror)["image"])
    for _, images in full.groupby("group")["image"]:
        assert set(images) <= chosen or not set(images) & chosen


def test_each_class_keeps_about_its_share(mirror, real_sample_dir):
    full = load_index(real_sample_dir)["label"].value_counts()
    truth = pd.read_csv(mirror / GROUND_TRUTH_CSV).set_index("image").drop(columns="UNK")
    kept = truth.to_numpy().argmax(axis=1)
    kept = pd.Series(kept).value_counts()
    for label, total in full.items():
        assert abs(kept.get(label, 0) - total / 2) <= 1.5  # half of each class, up to a lesion


def test_csv_rows_are_the_official_lines(mirror, real_sample_dir):
    for name in (GROUND_TRUTH_CSV, METADATA_CSV):
        official = (real_sample_dir / name).read_text(encoding="utf-8-sig").splitlines()
        subset = (mirror / name).read_text(encoding="utf-8").splitlines()
        assert subset[0] == official[0] and set(subset[1:]) <= set(official[1:])


def test_archive_holds_exactly_the_listed_images_byte_for_byte(mirror, real_sample_dir):
    listed = set(_chosen(mirror)["image"])
    with zipfile.ZipFile(mirror / ARCHIVE) as zf:
        names = {n[len(IMAGES_DIR) + 1:-4] for n in zf.namelist()}
        assert names == listed
        first = sorted(listed)[0]
        assert zf.read(f"{IMAGES_DIR}/{first}.jpg") == (real_sample_dir / IMAGES_DIR / f"{first}.jpg").read_bytes()


def test_manifest_has_every_files_checksum_and_says_subset(mirror):
    manifest = json.loads((mirror / MIRROR_MANIFEST).read_text())
    assert manifest["subset"] is True and manifest["images"] == len(_chosen(mirror))
    assert manifest["source_images"] == 70
    for name, entry in manifest["files"].items():
        data = (mirror / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_licence_and_the_three_citations_sit_beside_it(mirror):
    text = (mirror / LICENSE).read_text()
    assert "CC BY-NC 4.0" in text and "NOT the official release" in text
    for citation in ("arXiv:1908.02288", "Sci. Data 5, 180161", "arXiv:1710.05006"):
        assert citation in text


def test_a_non_empty_output_folder_is_refused(real_sample_dir, tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(DataError, match="holds files skinlib did not write"):
        make_subset(real_sample_dir, tmp_path, 0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_a_second_subset_into_the_same_folder_replaces_the_first(real_sample_dir, tmp_path):
    first = make_subset(real_sample_dir, tmp_path / "m", 0.5, seed=0)
    second = make_subset(real_sample_dir, tmp_path / "m", 0.3, seed=1)
    assert second["images"] < first["images"]
    assert json.loads((tmp_path / "m" / MIRROR_MANIFEST).read_text()) == second


def test_command_line(real_sample_dir, tmp_path, capsys):
    assert main(["subset", str(real_sample_dir), str(tmp_path / "m"), "--fraction", "0.3"]) == 0
    assert "SUBSET mirror" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["subset", str(real_sample_dir), str(tmp_path / "n"), "--fraction", "1.5"])
    assert "must be in (0, 1]" in capsys.readouterr().err
