"""An interrupted run, resumed from its checkpoint, ends exactly where an uninterrupted one does.

On the CPU with a fixed seed, "exactly" means torch.equal on every weight and optimizer
tensor and equal metrics in every epoch. The toy data are synthetic numbers; the dataset adds
noise from torch, NumPy and Python's random module (as augmentations do), and the model has
dropout, so every random-number generator the checkpoint restores is exercised.

The last test does the same through the whole job (`train.run`) on the real sample images, with
two worker processes and random augmentation, reading JPEGs or the prepared cache.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import signal

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from skinlib import engine, sampling
from skinlib.config import make_optimizer, make_scheduler
from skinlib.storage.checkpoint import CheckpointError, CheckpointPlan, load_checkpoint
from skinlib.config import TrainConfig

CPU = torch.device("cpu")
SEED = 7
EPOCHS = 4
TIMING_KEYS = ("seconds", "images_per_s")


class NoisyBlobs(Dataset):
    """Synthetic 3-class blobs with per-item random noise; `hook(i)` runs before each item."""

    def __init__(self, n=96):
        g = torch.Generator().manual_seed(0)
        self.y = torch.arange(n) % 3
        self.x = torch.randn(3, 4, generator=g)[self.y] * 2 + torch.randn(n, 4, generator=g)
        self.hook = None
        self.items_served = 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.items_served += 1
        if self.hook is not None:
            self.hook(self.items_served)
        noise = 0.1 * torch.randn(4) + float(np.random.normal(0, 0.1)) + random.uniform(-0.1, 0.1)
        return self.x[i] + noise, self.y[i]


def build(checkpoint_path, **config_changes):
    """What a fresh process does: seed, build the model, loaders, optimizer and scheduler."""
    settings = dict(model="toy", epochs=EPOCHS, batch_size=8, lr=0.02, weight_decay=1e-4, seed=SEED)
    config = TrainConfig(data="synthetic", out=str(checkpoint_path.parent),
                         **(settings | config_changes))
    sampling.seed_everything(config.seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    dataset = NoisyBlobs()
    train_loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True,
                              generator=sampling.make_generator(config.seed), num_workers=0)
    g = torch.Generator().manual_seed(1)
    val_loader = DataLoader(TensorDataset(torch.randn(30, 4, generator=g), torch.arange(30) % 3),
                            batch_size=16)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch=len(train_loader))
    return dict(config=config, model=model, dataset=dataset, train_loader=train_loader,
                val_loader=val_loader, optimizer=optimizer, scheduler=scheduler)


def run(parts, checkpoint_path, resume=False):
    return engine.fit(parts["model"], {"train": parts["train_loader"], "val": parts["val_loader"]},
                      parts["optimizer"], CPU, epochs=parts["config"].epochs,
                      scheduler=parts["scheduler"], checkpoint=CheckpointPlan(checkpoint_path, resume),
                      config=parts["config"].replace(progress=False))


def without_timing(history):
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


def assert_tensors_equal(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_tensors_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_tensors_equal(x, y)
    else:
        assert a == b


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    path = tmp_path_factory.mktemp("reference") / "checkpoint.pt"
    parts = build(path)
    history = run(parts, path)
    return parts, history


def crash(items_served):
    if items_served == 2 * 96 + 40:  # in the middle of epoch 3
        raise RuntimeError("simulated crash")


def ctrl_c(items_served):
    if items_served == 2 * 96 + 40:
        os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl+C


@pytest.mark.parametrize("hook, error", [(crash, RuntimeError), (ctrl_c, KeyboardInterrupt)],
                         ids=["exception", "sigint"])
def test_resumed_run_ends_exactly_like_the_uninterrupted_one(tmp_path, reference, hook, error,
                                                             sigint_raises_keyboard_interrupt):
    ref_parts, ref_history = reference
    path = tmp_path / "checkpoint.pt"
    interrupted = build(path)
    interrupted["dataset"].hook = hook
    with pytest.raises(error):
        run(interrupted, path)
    assert load_checkpoint(path)["epoch"] == 2  # the last complete epoch

    resumed = build(path)  # a new process: fresh objects, all overwritten from the checkpoint
    history = run(resumed, path, resume=True)

    assert without_timing(history) == without_timing(ref_history)
    assert_tensors_equal(resumed["model"].state_dict(), ref_parts["model"].state_dict())
    assert_tensors_equal(resumed["optimizer"].state_dict(), ref_parts["optimizer"].state_dict())
    assert resumed["scheduler"].state_dict() == ref_parts["scheduler"].state_dict()
    assert load_checkpoint(path)["epoch"] == EPOCHS


def test_resume_of_a_finished_run_trains_nothing(tmp_path, reference):
    ref_parts, ref_history = reference
    path = tmp_path / "checkpoint.pt"
    run(build(path), path)
    again = build(path)
    again["dataset"].hook = crash  # would fire if a single item were loaded
    history = run(again, path, resume=True)
    assert again["dataset"].items_served == 0
    assert without_timing(history) == without_timing(ref_history)
    assert_tensors_equal(again["model"].state_dict(), ref_parts["model"].state_dict())


def test_resume_without_a_checkpoint_starts_at_epoch_one(tmp_path, reference):
    _, ref_history = reference
    path = tmp_path / "not-yet.pt"
    history = run(build(path), path, resume=True)
    assert without_timing(history) == without_timing(ref_history)


@pytest.fixture(scope="module")
def interrupted_checkpoint(tmp_path_factory):
    """The checkpoint of a run stopped in its third epoch (two finished)."""
    path = tmp_path_factory.mktemp("interrupted") / "checkpoint.pt"
    first = build(path)
    first["dataset"].hook = crash
    with pytest.raises(RuntimeError):
        run(first, path)
    return path


# Each setting that changes the course of training, changed alone (the settings of `build`: lr 0.02,
# batch 8, weight decay 1e-4, no clipping, EPOCHS epochs, seed SEED).
OTHER_SETTINGS = [dict(lr=0.05), dict(batch_size=4), dict(grad_clip=1.0), dict(weight_decay=0.0),
                  dict(epochs=EPOCHS + 1), dict(seed=SEED + 1), dict(max_batches=3)]


@pytest.mark.parametrize("change", OTHER_SETTINGS, ids=lambda change: next(iter(change)))
def test_resume_under_other_settings_is_refused_naming_them(interrupted_checkpoint, tmp_path, change):
    (name, value), = change.items()
    path = tmp_path / "checkpoint.pt"
    shutil.copy(interrupted_checkpoint, path)
    saved = load_checkpoint(path)["config"][name]
    with pytest.raises(CheckpointError, match=rf"checkpoint\.pt belongs to a run with other settings.*"
                                              rf"{name}: {re.escape(repr(saved))} in the checkpoint, "
                                              rf"{re.escape(repr(value))} now"):
        run(build(path, **change), path, resume=True)
    assert load_checkpoint(path)["epoch"] == 2  # refused before anything was trained or saved


def test_resume_into_a_model_with_another_number_of_classes_is_refused(tmp_path, reference):
    path = tmp_path / "checkpoint.pt"
    first = build(path)
    first["dataset"].hook = crash
    with pytest.raises(RuntimeError):
        run(first, path)
    other = build(path)
    other["model"][3] = nn.Linear(16, 5)
    with pytest.raises(CheckpointError, match=r"trained for 3 classes, the model has 5 outputs"):
        run(other, path, resume=True)


# ---------------------------------------------------------------- the whole job, on real images
class TinyNet(nn.Module):
    """Small enough that a three-epoch job on the real sample takes seconds."""

    def __init__(self, num_classes=8):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def tiny(num_classes=8, pretrained=False, weights_path=None):
    return TinyNet(num_classes)


def without_run_timing(record):
    """metrics.json without what depends on the clock."""
    record = dict(record)
    record["history"] = without_timing(record["history"])
    return {k: v for k, v in record.items() if k not in ("model", "created", "seconds", "machine", "config")}


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.parametrize("use_cache", [False, True], ids=["jpeg", "cache"])
def test_an_interrupted_training_job_resumes_to_the_same_weights_and_metrics(
        real_sample_dir, tmp_path, monkeypatch, use_cache):
    """train.run with two worker processes and random augmentation: interrupted in the middle of
    epoch 3 (Ctrl+C), then resumed as `train --resume` does, it ends like an uninterrupted run."""
    from skinlib import models, train
    from skinlib.storage.prepare import prepare

    monkeypatch.setitem(models.MODELS, "tiny", models.Network(tiny, TinyNet, "features", imagenet_weights=False,
                                                                      title="TinyNet"))
    cache = None
    if use_cache:
        cache = str(tmp_path / "cache")
        prepare(real_sample_dir, cache, progress=False)

    def config(out):
        return TrainConfig(data=str(real_sample_dir), out=str(tmp_path / out), model="tiny", epochs=3,
                           batch_size=8, lr=3e-3, pretrained=False, num_workers=2, cache=cache,
                           progress=False, seed=SEED)

    batches = []  # every batch the training and validation loops move to the device
    real_to_device = engine.to_device_batch

    def counting(*args, **kwargs):
        batches.append(1)
        return real_to_device(*args, **kwargs)

    monkeypatch.setattr(engine, "to_device_batch", counting)
    reference = train.run(config("reference"))
    per_epoch = len(batches) // 3

    def interrupting(*args, **kwargs):
        batches.append(1)
        if len(batches) == 2 * per_epoch + 2:  # the second training batch of epoch 3
            raise KeyboardInterrupt
        return real_to_device(*args, **kwargs)

    batches.clear()
    monkeypatch.setattr(engine, "to_device_batch", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train.run(config("interrupted"))
    assert load_checkpoint(tmp_path / "interrupted" / "checkpoint.pt")["epoch"] == 2

    monkeypatch.setattr(engine, "to_device_batch", real_to_device)
    resumed = train.run(config("interrupted"), resume=True)

    assert without_run_timing(resumed) == without_run_timing(reference)
    assert_tensors_equal(resumed["model"].state_dict(), reference["model"].state_dict())
