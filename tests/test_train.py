"""DataLoader defaults (skinlib.loaders) and the pieces of a whole run (skinlib.train)."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd
import pytest
import torch

from skinlib import loaders
from skinlib.config import TrainConfig
from skinlib.data import CLASSES, DataError, ISICDataset, eval_transform, load_index, open_image, read_ground_truth
from skinlib.engine import to_device_batch
from skinlib.loaders import make_loaders
from skinlib.sampling import ShuffleWithSeeds
from skinlib.splits import grouped_split, save_split
from skinlib.metrics import json_safe
from skinlib.storage.folders import KitFolder
from skinlib.train import _frame_and_split, stratified_sample


@pytest.fixture(scope="module")
def sample_frame(real_sample_dir) -> pd.DataFrame:
    return load_index(real_sample_dir)


@pytest.fixture(scope="module")
def sample_split(sample_frame) -> pd.Series:
    return grouped_split(sample_frame, seed=0)


def config_for(data, out, **changes) -> TrainConfig:
    return TrainConfig(data=str(data), out=str(out), model="simplecnn", pretrained=False, **changes)


# ---------------------------------------------------------------- loaders
def test_loaders_default_to_one_worker_per_available_cpu(sample_frame, sample_split, tmp_path):
    built = make_loaders(sample_frame, sample_split, config_for("d", tmp_path, batch_size=4))
    expected = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                   loaders.MAX_WORKERS)
    for loader in built.values():
        assert loader.num_workers == expected
        assert loader.persistent_workers is True
        assert loader.prefetch_factor == loaders.PREFETCH_FACTOR
        assert loader.pin_memory == torch.cuda.is_available()


def test_zero_workers_loads_in_the_main_process(sample_frame, sample_split, tmp_path):
    built = make_loaders(sample_frame, sample_split, config_for("d", tmp_path, num_workers=0))
    for loader in built.values():
        assert loader.num_workers == 0
        assert loader.persistent_workers is False
        assert loader.prefetch_factor is None


def test_pinned_memory_follows_the_device(sample_frame, sample_split, tmp_path):
    config = config_for("d", tmp_path, num_workers=0)
    assert make_loaders(sample_frame, sample_split, config, device="cpu")["train"].pin_memory is False


def test_loaders_hold_each_split_with_train_shuffled_and_eval_in_order(sample_frame, sample_split, tmp_path):
    built = make_loaders(sample_frame, sample_split, config_for("d", tmp_path, num_workers=0))
    for name, loader in built.items():
        assert len(loader.dataset) == int((sample_split == name).sum())
    assert isinstance(built["train"].sampler, ShuffleWithSeeds)
    assert sorted(index for index, _ in built["train"].sampler) == list(range(len(built["train"].dataset)))
    assert isinstance(built["val"].sampler, torch.utils.data.SequentialSampler)
    assert isinstance(built["test"].sampler, torch.utils.data.SequentialSampler)


@pytest.mark.parametrize("n_train, batch, drop", [(49, 16, True), (48, 16, False), (50, 16, False), (47, 4, False)])
def test_train_drops_the_last_batch_only_when_it_would_hold_one_image(n_train, batch, drop, tmp_path):
    frame = pd.DataFrame({"image": [f"i{k}" for k in range(n_train + 2)], "label": 0,
                          "path": "unused.jpg", "group": [f"g{k}" for k in range(n_train + 2)]})
    split = pd.Series(["train"] * n_train + ["val", "test"], index=frame.index)
    built = make_loaders(frame, split, config_for("d", tmp_path, batch_size=batch, num_workers=0))
    assert built["train"].drop_last is drop
    assert built["val"].drop_last is False and built["test"].drop_last is False


def test_eval_images_are_the_eval_transform_of_the_jpeg(sample_frame, sample_split, tmp_path):
    built = make_loaders(sample_frame, sample_split, config_for("d", tmp_path, num_workers=0))
    test_rows = sample_frame[sample_split == "test"]
    image, label = built["test"].dataset[0]
    reference = eval_transform(224)(open_image(test_rows["path"].iloc[0]))
    # uint8, normalised on the device like every batch: the eval transform's floats
    assert image.dtype == torch.uint8
    normalised, _ = to_device_batch(image[None], torch.tensor([label]), torch.device("cpu"))
    assert torch.allclose(normalised[0], reference, atol=1e-5)
    assert label == test_rows["label"].iloc[0]


def test_train_images_are_augmented_224_crops(sample_frame, sample_split, tmp_path):
    dataset = make_loaders(sample_frame, sample_split, config_for("d", tmp_path, num_workers=0))["train"].dataset.dataset
    assert isinstance(dataset, ISICDataset)
    torch.manual_seed(0)
    first, _ = dataset[0]
    second, _ = dataset[0]
    assert first.shape == (3, 224, 224) and first.dtype == torch.uint8  # normalised on the device
    assert not torch.equal(first, second)  # a new random view each time


def test_training_order_is_reproducible_from_the_seed(sample_frame, sample_split, tmp_path):
    def order(seed):
        loader = make_loaders(sample_frame, sample_split, config_for("d", tmp_path, num_workers=0, seed=seed))["train"]
        return list(loader.sampler)

    assert order(3) == order(3)
    assert order(3) != order(4)


@pytest.mark.parametrize("use_cache", [False, True], ids=["jpeg", "cache"])
def test_augmented_batches_do_not_depend_on_the_number_of_workers(sample_frame, sample_split, real_sample_dir,
                                                                  tmp_path, use_cache):
    cache = None
    if use_cache:
        from skinlib.storage.prepare import prepare

        cache = str(tmp_path / "cache")
        prepare(real_sample_dir, cache, progress=False)

    def epoch(workers):
        config = config_for("d", tmp_path, num_workers=workers, batch_size=8, cache=cache)
        return [images for images, _ in make_loaders(sample_frame, sample_split, config)["train"]]

    alone, with_workers = epoch(0), epoch(2)
    assert len(alone) == len(with_workers)
    for a, b in zip(alone, with_workers):
        assert torch.equal(a, b)


def test_an_item_with_a_seed_is_replayed_and_one_without_is_drawn_afresh(sample_frame, sample_split, tmp_path):
    dataset = make_loaders(sample_frame, sample_split, config_for("d", tmp_path, num_workers=0))["train"].dataset
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first, _ = dataset[(0, 1234)]
    assert torch.equal(torch.get_rng_state(), before)  # the caller's generator is left alone
    assert torch.equal(first, dataset[(0, 1234)][0])
    assert not torch.equal(first, dataset[(0, 1235)][0])


def test_a_split_not_aligned_with_the_frame_is_refused(sample_frame, sample_split, tmp_path):
    with pytest.raises(ValueError, match="same index"):
        make_loaders(sample_frame, sample_split.iloc[1:], config_for("d", tmp_path, num_workers=0))


# ---------------------------------------------------------------- --limit
def test_stratified_sample_keeps_every_class_share_of_the_real_labels(real_csv_dir):
    labels = read_ground_truth(real_csv_dir / "ISIC_2019_Training_GroundTruth.csv")
    frame = labels.assign(path="", group=labels["image"])
    sample = stratified_sample(frame, 1000, seed=0)
    assert len(sample) == 1000 and sample["image"].is_unique
    expected = frame["label"].value_counts() * 1000 / len(frame)
    got = sample["label"].value_counts()
    for label in range(len(CLASSES)):
        assert abs(got.get(label, 0) - expected[label]) <= 1, CLASSES[label]


def test_stratified_sample_depends_on_the_seed_only(sample_frame):
    a = stratified_sample(sample_frame, 30, seed=1)
    assert a["image"].tolist() == stratified_sample(sample_frame, 30, seed=1)["image"].tolist()
    assert set(a["image"]) != set(stratified_sample(sample_frame, 30, seed=2)["image"])
    assert set(a["image"]) <= set(sample_frame["image"])


def test_a_limit_at_or_above_the_dataset_size_keeps_everything(sample_frame):
    assert len(stratified_sample(sample_frame, 500, seed=0)) == len(sample_frame)


# ---------------------------------------------------------------- split.csv
def test_a_fresh_run_saves_the_grouped_split(real_sample_dir, tmp_path):
    config = config_for(real_sample_dir, tmp_path, limit=40, seed=5)
    frame, split = _frame_and_split(config, KitFolder(tmp_path, "run"), reuse=False)
    saved = pd.read_csv(tmp_path / "split.csv")
    assert len(frame) == 40 and sorted(saved["image"]) == sorted(frame["image"])
    assert dict(zip(saved["image"], saved["split"])) == dict(zip(frame["image"], split))


def test_a_limit_above_the_number_of_images_uses_them_all_and_says_so(real_sample_dir, tmp_path, capsys):
    config = config_for(real_sample_dir, tmp_path, limit=1000)
    frame, _ = _frame_and_split(config, KitFolder(tmp_path, "run"), reuse=False)
    assert len(frame) == 70
    assert f"note: limit 1000 is more than the 70 images of {real_sample_dir}; all 70 are used" in capsys.readouterr().out


def test_a_resumed_run_reuses_the_saved_split_as_it_is(real_sample_dir, sample_frame, tmp_path):
    # A hand-made assignment that no seed of grouped_split would draw: it must come back unchanged.
    chosen = sample_frame.iloc[::2]
    hand = pd.Series((["train", "val", "test"] * 12)[: len(chosen)], index=chosen.index, name="split")
    save_split(chosen, hand, tmp_path / "split.csv")
    config = config_for(real_sample_dir, tmp_path, seed=0)
    frame, split = _frame_and_split(config, KitFolder(tmp_path, "run"), reuse=True)
    assert frame["image"].tolist() == chosen["image"].tolist()
    assert split.tolist() == hand.tolist()


def test_a_saved_split_naming_images_the_data_lacks_is_refused(real_sample_dir, sample_frame, tmp_path):
    path = tmp_path / "split.csv"
    save_split(sample_frame, grouped_split(sample_frame, seed=0), path)
    text = path.read_text().replace(sample_frame["image"].iloc[3], "ISIC_9999999", 1)
    path.write_text(text)
    with pytest.raises(DataError, match="ISIC_9999999"):
        _frame_and_split(config_for(real_sample_dir, tmp_path), KitFolder(tmp_path, "run"), reuse=True)


# ---------------------------------------------------------------- metrics.json
def test_json_safe_writes_undefined_numbers_as_null():
    record = json_safe({"auc": [0.5, math.nan], "n": np.int64(3), "t": torch.tensor(0.25), "x": (1, math.inf)})
    assert record == {"auc": [0.5, None], "n": 3, "t": 0.25, "x": [1, None]}
    json.dumps(record, allow_nan=False)


def test_run_hands_the_given_train_augment_to_the_run(real_sample_dir, tmp_path, monkeypatch):
    # `_run(config, folder, resume)` without the augmentation once made every run fail (a missing argument)
    from skinlib import train
    seen = {}
    monkeypatch.setattr(train, "_run", lambda config, folder, resume, augment: seen.update(augment=augment) or {})
    marker = object()
    train.run(config_for(real_sample_dir, tmp_path / "run"), train_augment=marker)
    assert seen["augment"] is marker
