"""The course bundle: written from a prepared cache, checked, restored to local disk, refused when wrong."""
from __future__ import annotations

import errno
import hashlib
import zipfile

import numpy as np
import pytest
from PIL import Image

from skinlib.acquire.bundle import (MANIFEST, BundleError, check_provenance, make_bundle, provenance_lines,
                            read_manifest, restore_bundle)
from skinlib.storage.cache import open_cache
from skinlib.storage.prepare import prepare
from skinlib.data import GROUND_TRUTH_CSV, IMAGES_DIR, METADATA_CSV, load_index


@pytest.fixture(scope="module")
def bundle(synthetic_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache") / "prepared"
    prepare(synthetic_dir, cache, workers=1, progress=False)
    path = tmp_path_factory.mktemp("drive") / "synthetic-bundle.zip"
    make_bundle(synthetic_dir, cache, path, dataset="synthetic", progress=False)
    return path


def test_manifest_records_where_the_data_came_from(bundle, synthetic_dir):
    manifest = read_manifest(bundle)
    assert manifest["images"] == len(load_index(synthetic_dir))
    assert manifest["source_folder"] == str(synthetic_dir.resolve())
    truth = (synthetic_dir / GROUND_TRUTH_CSV).read_bytes()
    assert manifest["files"][GROUND_TRUTH_CSV]["sha256"] == hashlib.sha256(truth).hexdigest()
    text = "\n".join(provenance_lines(manifest))
    assert str(synthetic_dir.resolve()) in text and hashlib.sha256(truth).hexdigest() in text


def test_restored_folder_reads_like_the_download(bundle, synthetic_dir, tmp_path):
    data = restore_bundle(bundle, tmp_path / "local" / "synthetic")
    for name in (GROUND_TRUTH_CSV, METADATA_CSV, "SYNTHETIC.txt"):
        assert (data / name).read_bytes() == (synthetic_dir / name).read_bytes()
    frame, original = load_index(data), load_index(synthetic_dir)
    assert frame[["image", "label", "group"]].equals(original[["image", "label", "group"]])
    with Image.open(frame["path"].iloc[0]) as image:
        assert image.size == (256, 256)
    assert check_provenance(data, quiet=True)["images"] == len(frame)


def test_restored_images_are_the_prepared_ones_up_to_jpeg_loss(bundle, synthetic_dir, tmp_path):
    data = restore_bundle(bundle, tmp_path / "data")
    prepared = open_cache(prepare(synthetic_dir, tmp_path / "c1", workers=1, progress=False).cache_dir)
    restored = open_cache(prepare(data, tmp_path / "c2", workers=1, progress=False).cache_dir)
    difference = np.abs(prepared.images()[:20].astype(int) - restored.images()[:20].astype(int))
    assert difference.mean() < 3  # quality-90 JPEG: a few levels out of 255 on average


def test_restoring_the_same_bundle_again_keeps_the_folder(bundle, tmp_path, capsys):
    data = restore_bundle(bundle, tmp_path / "data")
    marker = data / IMAGES_DIR / "kept.txt"
    marker.write_text("x")
    restore_bundle(bundle, data)
    assert marker.exists() and "already holds" in capsys.readouterr().out


def test_a_folder_the_kit_did_not_write_is_refused(bundle, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="not empty"):
        restore_bundle(bundle, tmp_path / "data")
    assert (tmp_path / "data" / "notes.txt").read_text() == "mine"


def _rewrite(bundle, target, change):
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            data = change(info.filename, source.read(info))
            if data is not None:
                out.writestr(info.filename, data)
    return target


def test_a_bundle_whose_csv_does_not_match_its_manifest_is_refused(bundle, tmp_path):
    def edit(name, data):
        return data.replace(b"1.0,0.0", b"0.0,1.0", 1) if name == GROUND_TRUTH_CSV else data

    bad = _rewrite(bundle, tmp_path / "bad.zip", edit)
    with pytest.raises(BundleError, match=r"bad\.zip: ISIC_2019_Training_GroundTruth\.csv has SHA-256"):
        read_manifest(bad)
    with pytest.raises(BundleError):
        restore_bundle(bad, tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_a_bundle_missing_an_image_is_refused(bundle, tmp_path):
    dropped = []

    def drop_one(name, data):
        if name.startswith(IMAGES_DIR + "/") and not dropped:
            dropped.append(name)
            return None
        return data

    bad = _rewrite(bundle, tmp_path / "short.zip", drop_one)
    with pytest.raises(BundleError, match="short.zip: holds"):
        read_manifest(bad)


def test_a_truncated_bundle_is_refused(bundle, tmp_path):
    cut = tmp_path / "cut.zip"
    cut.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    with pytest.raises(BundleError, match="cut.zip: not a readable course bundle"):
        read_manifest(cut)


def test_a_restored_folder_whose_csv_changed_is_refused(bundle, tmp_path):
    data = restore_bundle(bundle, tmp_path / "data")
    truth = data / GROUND_TRUTH_CSV
    truth.write_text(truth.read_text().replace("1.0,0.0", "0.0,1.0", 1))
    with pytest.raises(BundleError, match="do not belong together"):
        check_provenance(data)


def test_a_folder_not_restored_from_a_bundle_has_no_provenance(synthetic_dir):
    assert not (synthetic_dir / MANIFEST).exists()
    assert check_provenance(synthetic_dir) is None


def test_the_bundle_is_written_whole_or_not_at_all(synthetic_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    prepare(synthetic_dir, cache, workers=1, progress=False)
    import skinlib.acquire.bundle as bundle_module

    def fail(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bundle_module, "_encode", fail)
    with pytest.raises(BundleError, match=r"b\.zip: the disk \(or Drive\) is full \(No space left on device\); "
                                          r"nothing was saved; free some space"):
        make_bundle(synthetic_dir, cache, tmp_path / "b.zip", dataset="synthetic", progress=False)
    assert list(tmp_path.glob("*b.zip*")) == []  # neither the bundle nor a temporary file


def test_check_prints_the_provenance_of_a_restored_folder(bundle, synthetic_dir, tmp_path, capsys):
    from skinlib.cli import main

    data = restore_bundle(bundle, tmp_path / "data")
    assert main(["check", str(data), "--no-verify", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"from {synthetic_dir.resolve()}" in out and "SHA-256" in out and "result: OK" in out


def test_check_refuses_a_restored_folder_whose_csv_changed(bundle, tmp_path, capsys):
    from skinlib.cli import main

    data = restore_bundle(bundle, tmp_path / "data")
    truth = data / GROUND_TRUTH_CSV
    truth.write_text(truth.read_text().replace("1.0,0.0", "0.0,1.0", 1))
    assert main(["check", str(data), "--no-verify", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "do not belong together" in err
