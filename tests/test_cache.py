"""The prepared-image cache: what `prepare` writes, how it resumes and refuses, what CachedDataset yields.

References: every cached row is compared with torchvision's Resize(S) + CenterCrop(S) of a
full decode by `skinlib.data.open_image`; the evaluation view with torchvision's center_crop.
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

import skinlib.storage.prepare as cache_module
from skinlib.storage.cache import (MANIFEST, CacheError, CachedDataset, cache_bytes, open_cache)
from skinlib.storage.prepare import prepare
from skinlib.data import GROUND_TRUTH_CSV, IMAGES_DIR, DataError, ImageError, load_index, open_image
from skinlib.storage.folders import LOCK, MARKER


def index_of(data_dir: Path) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a copied folder without metadata
        return load_index(data_dir)


def reference(path: str, size: int) -> np.ndarray:
    """Short side to `size`, centre square: torchvision on a full-resolution decode."""
    transform = v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])
    return np.asarray(transform(open_image(path)))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def assert_rows_match_reference(cache_dir: Path, frame: pd.DataFrame, size: int) -> None:
    """Every image is in the cache, and its row looks like a direct decode + resize.

    Tolerance: the cache resizes straight from the centre square (and JPEG draft mode may
    decode at a reduced scale), torchvision resizes the whole image then crops at a whole
    pixel; on detailed real images that half-pixel shift alone costs up to ~5 grey levels
    per pixel (PSNR ~29 dB). A different image scores far below 20 dB.
    """
    cache = open_cache(cache_dir)
    images = cache.images()
    assert images.shape == (len(frame), size, size, 3)
    row_of = dict(zip(cache.index["image"], cache.index["row"]))
    assert set(row_of) == set(frame["image"])
    for image, path in zip(frame["image"], frame["path"]):
        assert psnr(images[row_of[image]], reference(path, size)) > 28, image


@pytest.fixture
def synthetic_copy(synthetic_dir, tmp_path) -> Path:
    """A copy of the synthetic dataset that a test may damage or change."""
    return Path(shutil.copytree(synthetic_dir, tmp_path / "data"))


# ---------------------------------------------------------------- prepare: content
def test_prepare_stores_every_synthetic_image_like_a_direct_decode(synthetic_dir, synthetic_cache):
    assert_rows_match_reference(synthetic_cache, index_of(synthetic_dir), 256)


@pytest.mark.real_data
def test_prepare_stores_every_real_image_like_a_direct_decode(real_sample_dir, tmp_path):
    frame = index_of(real_sample_dir)
    report = prepare(real_sample_dir, tmp_path / "cache", size=256, workers=2, progress=False)
    assert (report.n_images, report.n_decoded) == (70, 70)
    assert_rows_match_reference(tmp_path / "cache", frame, 256)
    index = open_cache(tmp_path / "cache").index
    assert index["label"].tolist() == frame["label"].tolist()


def test_a_large_jpeg_decoded_in_draft_mode_matches_a_full_decode(tmp_path):
    # 2048x1536: draft mode decodes it at 1/4 scale (512x384) before the last resize
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1536, 0:2048]
    smooth = np.stack([128 + 100 * np.sin(xx / 97 + c) * np.cos(yy / 61 - c) for c in range(3)], -1)
    pixels = np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "large.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    assert psnr(cache_module.load_resized(path, 256), reference(str(path), 256)) > 35


def test_a_picture_that_is_not_a_lesion_would_fail_the_comparison(synthetic_dir, synthetic_cache):
    # guards the tolerance above: the row of another image is far from the reference
    frame = index_of(synthetic_dir)
    images = open_cache(synthetic_cache).images()
    assert psnr(images[1], reference(frame["path"][0], 256)) < 25


def test_cache_size_of_full_isic_2019():
    assert cache_bytes(25_331, 256) == 4_980_277_248
    assert cache_bytes(25_331, 224) == 25_331 * 224 * 224 * 3


# ---------------------------------------------------------------- prepare: runs
def test_a_second_run_with_nothing_new_writes_nothing(synthetic_dir, synthetic_cache):
    # Every file but the empty lock file, which some filelock versions (Colab's 3.32) reopen with
    # O_TRUNC when they take the lock: its time changes, its (empty) content cannot.
    def stamps():
        return {p.name: p.stat().st_mtime_ns for p in synthetic_cache.iterdir() if p.name != LOCK}

    before = stamps()
    report = prepare(synthetic_dir, synthetic_cache, size=256, workers=1, progress=False)
    assert report.up_to_date and report.n_decoded == 0
    assert stamps() == before and (synthetic_cache / LOCK).stat().st_size == 0


def test_an_interrupted_run_resumes_and_ends_identical(synthetic_dir, synthetic_cache, tmp_path,
                                                      monkeypatch):
    real_load = cache_module.load_resized
    calls = {"n": 0}

    def failing_load(path, size):
        calls["n"] += 1
        if calls["n"] > 50:
            raise KeyboardInterrupt  # as if the user stopped the cell
        return real_load(path, size)

    monkeypatch.setattr(cache_module, "load_resized", failing_load)
    with pytest.raises(KeyboardInterrupt):
        prepare(synthetic_dir, tmp_path / "cache", size=256, workers=1, progress=False)
    with pytest.raises(CacheError, match="no manifest.json"):
        open_cache(tmp_path / "cache")  # a half-written cache is never used

    monkeypatch.setattr(cache_module, "load_resized", real_load)
    report = prepare(synthetic_dir, tmp_path / "cache", size=256, workers=1, progress=False)
    n = len(index_of(synthetic_dir))
    assert report.n_resumed == 48  # the three whole chunks of 16 done before the failure
    assert report.n_decoded == n - 48
    assert np.array_equal(open_cache(tmp_path / "cache").images(), open_cache(synthetic_cache).images())
    assert not list((tmp_path / "cache").glob("progress-*"))


@pytest.mark.filterwarnings("ignore::skinlib.data.DataWarning")  # the 10 images left out at first
def test_a_changed_dataset_decodes_only_the_new_images(synthetic_copy, synthetic_cache, tmp_path):
    csv = synthetic_copy / GROUND_TRUTH_CSV
    full = pd.read_csv(csv, dtype=str)
    full.iloc[10:].to_csv(csv, index=False)  # the first 10 images are "new" later
    prepare(synthetic_copy, tmp_path / "cache", size=256, workers=1, progress=False)
    old_files = {p.name for p in (tmp_path / "cache").iterdir()}

    full.to_csv(csv, index=False)
    report = prepare(synthetic_copy, tmp_path / "cache", size=256, workers=1, progress=False)
    assert (report.n_decoded, report.n_reused) == (10, len(full) - 10)
    assert np.array_equal(open_cache(tmp_path / "cache").images(), open_cache(synthetic_cache).images())
    # the old key's files are gone; what stays is the manifest and the folder's marker and lock
    assert not old_files & {p.name for p in (tmp_path / "cache").iterdir()} - {MANIFEST, MARKER, LOCK}


def test_a_run_with_nothing_to_decode_shows_no_empty_progress_bar(synthetic_copy, tmp_path, capsys):
    prepare(synthetic_copy, tmp_path / "cache", size=32, workers=1, progress=True)
    assert "prepare:" in capsys.readouterr().err  # a run that decodes shows its bar
    csv = synthetic_copy / GROUND_TRUTH_CSV
    rows = pd.read_csv(csv, dtype=str)
    rows.iloc[::-1].to_csv(csv, index=False)  # another row order: a new cache, every image copied from the old one
    report = prepare(synthetic_copy, tmp_path / "cache", size=32, workers=1, progress=True)
    assert (report.up_to_date, report.n_decoded, report.n_reused) == (False, 0, len(rows))
    assert "prepare:" not in capsys.readouterr().err


def test_prepare_from_the_command_line(synthetic_dir, tmp_path, capsys):
    from skinlib.cli import main

    args = ["prepare", "--data", str(synthetic_dir), "--cache", str(tmp_path / "c"), "--size", "64",
            "--workers", "1", "--quiet"]
    assert main(args) == 0
    assert "decoded 160" in capsys.readouterr().out
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out
    assert open_cache(tmp_path / "c").images().shape == (160, 64, 64, 3)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("workers", [1, 2])
def test_a_corrupt_image_is_named_and_no_cache_is_made(synthetic_copy, tmp_path, workers):
    victim = sorted((synthetic_copy / IMAGES_DIR).glob("*.jpg"))[20]
    victim.write_bytes(victim.read_bytes()[:300])  # truncated
    with pytest.raises(ImageError, match=victim.name):
        prepare(synthetic_copy, tmp_path / "cache", size=64, workers=workers, progress=False)
    assert not (tmp_path / "cache" / MANIFEST).exists()


@pytest.mark.parametrize("damage", ["no manifest", "garbage manifest", "truncated images",
                                    "other version"])
def test_an_incomplete_or_damaged_cache_is_refused(synthetic_dir, tmp_path, damage):
    cache_dir = tmp_path / "cache"
    prepare(synthetic_dir, cache_dir, size=32, workers=1, progress=False)
    manifest = cache_dir / MANIFEST
    if damage == "no manifest":
        manifest.unlink()
    elif damage == "garbage manifest":
        manifest.write_text("{not json")
    elif damage == "truncated images":
        images = next(cache_dir.glob("images-*.npy"))
        images.write_bytes(images.read_bytes()[:-100])
    else:
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 999}))
    with pytest.raises(CacheError, match=str(cache_dir)):
        open_cache(cache_dir)
    with pytest.raises(CacheError):
        CachedDataset(cache_dir, index_of(synthetic_dir), train=False)


def test_an_image_missing_from_the_cache_is_named(synthetic_dir, synthetic_cache):
    frame = index_of(synthetic_dir).head(5).copy()
    frame.loc[3, "image"] = "ISIC_9999999"
    with pytest.raises(CacheError, match="ISIC_9999999"):
        CachedDataset(synthetic_cache, frame, train=True)


# ---------------------------------------------------------------- CachedDataset
def test_items_are_uint8_chw_with_the_frames_labels(synthetic_dir, synthetic_cache):
    frame = index_of(synthetic_dir).iloc[::7].reset_index(drop=True)
    for train in (True, False):
        dataset = CachedDataset(synthetic_cache, frame, train=train, size=224)
        assert len(dataset) == len(frame)
        image, label = dataset[2]
        assert image.dtype == torch.uint8 and image.shape == (3, 224, 224) and image.is_contiguous()
        assert label == frame["label"][2] and isinstance(label, int)


def test_eval_is_the_centre_crop_and_deterministic(synthetic_dir, synthetic_cache):
    frame = index_of(synthetic_dir)
    dataset = CachedDataset(synthetic_cache, frame, train=False, size=224)
    images = open_cache(synthetic_cache).images()
    for i in (0, 57, 159):
        expected = F.center_crop(torch.from_numpy(np.array(images[i])).permute(2, 0, 1), [224, 224])
        assert torch.equal(dataset[i][0], expected)
        assert torch.equal(dataset[i][0], dataset[i][0])


@pytest.mark.parametrize("workers", [0, 2])
def test_every_sample_of_a_batch_gets_its_own_augmentation(synthetic_dir, synthetic_cache, workers):
    # the same image 16 times: identical outputs would mean one crop shared by the batch
    frame = index_of(synthetic_dir).iloc[[5] * 16].reset_index(drop=True)
    loader = DataLoader(CachedDataset(synthetic_cache, frame, train=True), batch_size=8,
                        num_workers=workers)
    views = torch.cat([images for images, _ in loader])
    distinct = {tuple(v.flatten()[::97].tolist()) for v in views}
    assert len(distinct) >= 15  # 16 draws of crop x flip x rotation; a tie is possible, two unlikely


def test_a_crop_larger_than_the_cache_is_refused(synthetic_dir, tmp_path):
    prepare(synthetic_dir, tmp_path / "cache", size=32, workers=1, progress=False)
    with pytest.raises(CacheError, match="--size 224"):
        CachedDataset(tmp_path / "cache", index_of(synthetic_dir), train=True, size=224)


def test_a_cache_a_run_is_reading_is_not_rewritten_and_one_being_written_is_not_read(synthetic_dir, tmp_path,
                                                                                      capsys):
    from skinlib import cli
    from skinlib.storage.cache import reading
    from skinlib.storage.prepare import open_cache_folder

    cache = tmp_path / "cache"
    prepare(synthetic_dir, cache, size=64, workers=1, progress=False)
    images = open_cache(cache).images_path
    before = images.read_bytes()
    with reading(cache), reading(cache):  # two training runs read one cache at once
        with pytest.raises(DataError, match=rf"{cache} is in use by another prepare, or a train reading it"):
            prepare(synthetic_dir, cache, size=64, workers=1, progress=False, force=True)
    assert images.read_bytes() == before  # a memory map of it would have read zeros
    with open_cache_folder(cache).lock("a test"):  # as while `prepare` writes it
        assert cli.main(["train", "--data", str(synthetic_dir), "--cache", str(cache), "--out", str(tmp_path / "run"),
                         "--epochs", "1", "--max-batches", "1", "--device", "cpu", "--quiet"]) == 1
    assert f"{cache} is in use by prepare, which is writing it" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


from unprivileged import as_user, start_as_user, user_folder  # noqa: E402,F401  (user_folder is a fixture)

STUDENT_READING = """
import sys, time
from skinlib.storage.cache import reading
with reading(sys.argv[1]):
    print("reading", flush=True)
    time.sleep(60)
"""


def test_a_student_trains_from_a_cache_an_instructor_shares_read_only(synthetic_dir, user_folder):
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="skinlib-instructor-"))
    try:
        shutil.copytree(synthetic_dir, shared / "data")
        prepare(shared / "data", shared / "cache", workers=1, progress=False)
        assert (shared / "cache" / LOCK).is_file()  # prepare locked it: the file a reader's lock opens
        for path in [shared, *shared.rglob("*")]:  # the instructor's, readable by all, writable by none
            path.chmod(0o555 if path.is_dir() else 0o444)
        before = {p: p.stat().st_mtime_ns for p in (shared / "cache").iterdir()}
        result = as_user(["-m", "skinlib", "train", "--data", shared / "data", "--cache", shared / "cache",
                          "--out", user_folder / "run", "--model", "simplecnn", "--epochs", "1", "--max-batches", "1",
                          "--device", "cpu", "--quiet"], user_folder, timeout=300)
        after = {p: p.stat().st_mtime_ns for p in (shared / "cache").iterdir()}
        student = start_as_user(["-c", STUDENT_READING, shared / "cache"], user_folder)
        try:  # the student's read lock holds: the instructor's prepare is refused meanwhile
            assert student.stdout.readline().strip() == "reading", student.stderr.read()
            with pytest.raises(DataError, match=rf"{shared / 'cache'} is in use by a test"):
                with cache_module.open_cache_folder(shared / "cache").lock("a test"):
                    pass
        finally:
            student.kill()
            student.wait()
    finally:
        for path in [shared, *shared.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(shared)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert (user_folder / "run" / "metrics.json").is_file()
    assert after == before  # the shared cache is read, never written
