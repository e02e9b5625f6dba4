"""The training and evaluation loops, device choice, mixed precision and the recipe.

Everything runs on the CPU with tiny models and TensorDatasets of synthetic numbers
(not images), so each test takes well under a second.
"""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import Normalize

from skinlib import device, engine, sampling
from skinlib.config import make_optimizer, make_scheduler
from skinlib.storage.checkpoint import CheckpointPlan, load_checkpoint
from skinlib.config import TrainConfig
from skinlib.layout import IMAGENET_MEAN, IMAGENET_STD
from skinlib.errors import SkinlibError
from skinlib.metrics import ConfusionMatrix

QUIET = engine.LoopOptions(progress=False)  # no tqdm bars in the tests
CPU = torch.device("cpu")


def blobs(n=96, num_classes=3, features=4, seed=0):
    """Synthetic separable data: one Gaussian blob per class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    centres = torch.randn(num_classes, features, generator=g) * 3
    x = centres[y] + torch.randn(n, features, generator=g) * 0.5
    return x, y


def loader(x, y, batch_size=16, shuffle=False, seed=0):
    generator = sampling.make_generator(seed) if shuffle else None
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle,
                      generator=generator, num_workers=0)


class TinyCNN(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1).flatten(1))


# ------------------------------------------------------------------ config


def test_config_defaults_are_the_resnet50_recipe():
    c = TrainConfig(data="d", out="o")
    assert (c.model, c.epochs, c.lr, c.weight_decay, c.grad_clip) == ("resnet50", 25, 7e-4, 1.5e-4, 0.1)
    assert c.fractions == (0.7, 0.15, 0.15) and isinstance(c.fractions, tuple)


def test_config_round_trips_through_json():
    c = TrainConfig(data="d", out="o", model="simplecnn", epochs=3, fractions=[0.8, 0.1, 0.1],
                    limit=50, grad_clip=None)
    back = TrainConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c and isinstance(back.fractions, tuple)


def test_config_rejects_unknown_keys_by_name():
    d = TrainConfig(data="d", out="o").to_dict() | {"learning_rate": 0.1}
    with pytest.raises(ValueError, match="unknown TrainConfig key.*learning_rate"):
        TrainConfig.from_dict(d)


def test_config_rejects_missing_required_keys():
    d = TrainConfig(data="d", out="o").to_dict()
    del d["out"]
    with pytest.raises(ValueError, match="missing required key.*out"):
        TrainConfig.from_dict(d)


@pytest.mark.parametrize("change, message", [
    ({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr"), ({"fractions": (0.5, 0.5, 0.5)}, "fractions"),
    ({"grad_clip": 0}, "grad_clip"), ({"batch_size": 2.5}, "batch_size"),
])
def test_config_rejects_bad_values(change, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(data="d", out="o", **change)


# ------------------------------------------------------------------ device and precision


def test_select_device_falls_back_to_cpu_and_announces_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert device.select_device() == CPU
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("Using device: cpu")


def test_select_device_refuses_cuda_when_absent(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        device.select_device("cuda", announce=False)


@pytest.mark.parametrize("capability, expected", [
    ((7, 5), torch.float16),   # T4: reports bf16 "supported" but only emulates it
    ((7, 0), torch.float16),   # V100
    ((8, 0), torch.bfloat16),  # A100
    ((9, 0), torch.bfloat16),  # H100
])
def test_autocast_dtype_follows_cuda_compute_capability(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert device.autocast_dtype(torch.device("cuda")) == expected


@pytest.mark.parametrize("name", ["cpu", "mps"])
def test_autocast_dtype_is_none_off_cuda(name):
    assert device.autocast_dtype(torch.device(name)) is None


def test_grad_scaler_is_disabled_on_cpu_and_for_bf16():
    assert not device.make_scaler(CPU, None).is_enabled()
    assert not device.make_scaler(CPU, torch.bfloat16).is_enabled()
    assert not device.make_scaler(torch.device("cuda"), torch.bfloat16).is_enabled()


# ------------------------------------------------------------------ batches


def test_uint8_batch_is_normalised_like_the_float_transform():
    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8, generator=g)
    expected = Normalize(IMAGENET_MEAN, IMAGENET_STD)(raw.float() / 255)
    images, targets = engine.to_device_batch(raw, torch.tensor([1, 2]), CPU)
    assert images.dtype == torch.float32
    torch.testing.assert_close(images, expected)
    assert torch.equal(targets, torch.tensor([1, 2]))


def test_float_batch_is_passed_through_unchanged():
    x = torch.randn(2, 3, 4, 4)
    images, _ = engine.to_device_batch(x, torch.tensor([0, 1]), CPU)
    assert torch.equal(images, x)


def test_channels_last_batch_has_nhwc_strides():
    images, _ = engine.to_device_batch(torch.randn(2, 3, 4, 4), torch.tensor([0, 1]), CPU,
                                       channels_last=True)
    assert images.is_contiguous(memory_format=torch.channels_last)


def test_uint8_batch_with_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        engine.to_device_batch(torch.zeros(2, 4, 4, 3, dtype=torch.uint8), torch.tensor([0, 1]), CPU)


# ------------------------------------------------------------------ training step


class RecordingSGD(torch.optim.SGD):
    """SGD that records the largest gradient element it is asked to step with."""

    def __init__(self, params, **kw):
        super().__init__(params, **kw)
        self.max_grad_at_step = []

    def step(self, closure=None):
        self.max_grad_at_step.append(max(p.grad.abs().max().item() for g in self.param_groups
                                         for p in g["params"]))
        return super().step(closure)


def test_one_training_step_is_the_hand_written_step_of_notebook_02():
    # The same step written out (zero_grad, forward, criterion, backward, clip, step, schedule)
    # must leave the same weights as train_one_epoch.
    x, y = blobs(n=16)
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    by_hand = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    result = engine.train_one_epoch(model, loader(x, y, batch_size=16), opt, CPU, scheduler=sched,
                                    grad_clip=0.05, options=QUIET)

    hand_opt = torch.optim.SGD(by_hand.parameters(), lr=0.5)
    hand_opt.zero_grad()
    outputs = by_hand(x)
    loss = nn.CrossEntropyLoss()(outputs, y)
    loss.backward()
    nn.utils.clip_grad_value_(by_hand.parameters(), 0.05)
    hand_opt.step()
    for mine, reference in zip(model.parameters(), by_hand.parameters()):
        torch.testing.assert_close(mine, reference)
    assert result["loss"] == pytest.approx(loss.item(), rel=1e-6)
    assert result["lr"] == 0.5 and opt.param_groups[0]["lr"] == 0.25  # stepped after the batch


def test_every_step_starts_from_fresh_gradients_as_the_hand_written_loop_does():
    # Three batches: a loop that forgot zero_grad would step the second and third batches with the
    # gradients of the earlier ones added in, and end with other weights.
    x, y = blobs(n=48)
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    by_hand = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    engine.train_one_epoch(model, loader(x, y, batch_size=16), opt, CPU, options=QUIET)

    hand_opt = torch.optim.SGD(by_hand.parameters(), lr=0.5, momentum=0.9)
    for images, labels in loader(x, y, batch_size=16):
        hand_opt.zero_grad()
        nn.CrossEntropyLoss()(by_hand(images), labels).backward()
        hand_opt.step()
    for mine, reference in zip(model.parameters(), by_hand.parameters()):
        torch.testing.assert_close(mine, reference)


def test_a_non_finite_loss_stops_training_naming_the_batch_and_the_learning_rate():
    x, y = blobs(n=48)
    x[20] = float("nan")  # the second batch of 16
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    with pytest.raises(engine.NonFiniteLoss, match=r"batch 2\b.*learning rate \(0\.3\)") as caught:
        engine.train_one_epoch(model, loader(x, y, batch_size=16), opt, CPU, options=QUIET)
    assert caught.value.batch == 2 and caught.value.epoch is None


class SpoilsAfter(torch.utils.data.Dataset):
    """Blobs whose images turn to NaN once `good` items have been served: a run that diverges."""

    def __init__(self, x, y, good):
        self.x, self.y, self.good, self.served = x, y, good, 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.served += 1
        return (self.x[i] if self.served <= self.good else torch.full_like(self.x[i], float("nan"))), self.y[i]


def test_fit_stops_on_a_non_finite_loss_keeping_the_finished_epochs(tmp_path):
    x, y = blobs(n=32)
    spoiled = DataLoader(SpoilsAfter(x, y, good=32 + 16 + 3), batch_size=16)  # epoch 2, batch 2
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(engine.NonFiniteLoss) as caught:
        engine.fit(model, {"train": spoiled, "val": loader(x, y)}, opt, CPU, epochs=3,
                   checkpoint=CheckpointPlan(tmp_path / "checkpoint.pt"))
    error = caught.value
    assert isinstance(error, SkinlibError) and "\n" not in str(error)
    assert (error.epoch, error.batch) == (2, 2) and "epoch 2, batch 2" in str(error)
    assert [row["epoch"] for row in error.history] == [1]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1  # the last good epoch


def test_gradients_are_clipped_before_the_optimizer_step():
    x, y = blobs(n=32)

    def largest_gradient_at_step(grad_clip):
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        opt = RecordingSGD(model.parameters(), lr=0.1)
        engine.train_one_epoch(model, loader(x * 100, y), opt, CPU, grad_clip=grad_clip, options=QUIET)
        return max(opt.max_grad_at_step)

    assert largest_gradient_at_step(None) > 0.01  # so the clip below has work to do
    assert largest_gradient_at_step(0.01) <= 0.01


def test_train_one_epoch_reports_loss_and_metrics_against_references():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = blobs(n=40)
    before = model.state_dict()
    before = {k: v.clone() for k, v in before.items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the model stays as it was
    result = engine.train_one_epoch(model, loader(x, y, batch_size=16), opt, CPU, options=QUIET)
    with torch.no_grad():
        logits = nn.functional.linear(x, before["weight"], before["bias"])
    preds = logits.argmax(1)
    assert result["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert result["accuracy"] == pytest.approx(accuracy_score(y, preds))
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, preds))
    assert isinstance(result["confusion"], ConfusionMatrix) and result["confusion"].total == 40
    assert result["images"] == 40 and result["lr"] == 0.0
    assert result["seconds"] > 0 and result["images_per_s"] > 0


def test_max_batches_stops_the_epoch_early():
    x, y = blobs(n=64)
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = engine.train_one_epoch(model, loader(x, y, batch_size=16), opt, CPU,
                                    options=engine.LoopOptions(progress=False, max_batches=2))
    assert result["images"] == 32
    assert engine.evaluate(model, loader(x, y, batch_size=16), CPU,
                           options=engine.LoopOptions(progress=False, max_batches=1))["images"] == 16


def test_empty_loader_is_an_error():
    model = nn.Linear(4, 3)
    empty = loader(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="no batches"):
        engine.evaluate(model, empty, CPU, options=QUIET)


# ------------------------------------------------------------------ evaluation


def test_evaluate_matches_a_direct_computation_and_returns_probs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()
    x, y = blobs(n=50)
    result = engine.evaluate(model, loader(x, y, batch_size=16), CPU, options=QUIET, return_probs=True)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert result["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    torch.testing.assert_close(result["probs"], logits.softmax(1))
    assert torch.equal(result["targets"], y)
    assert result["accuracy"] == pytest.approx(accuracy_score(y, logits.argmax(1)))
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, logits.argmax(1)))


def test_evaluate_restores_training_mode_and_keeps_no_graph():
    model = nn.Linear(4, 3)
    model.train()
    x, y = blobs(n=16)
    result = engine.evaluate(model, loader(x, y), CPU, options=QUIET, return_probs=True)
    assert model.training
    assert not result["probs"].requires_grad


# ------------------------------------------------------------------ fit and recipe


def test_fit_reduces_the_loss_on_a_learnable_problem(capsys):
    torch.manual_seed(0)
    x, y = blobs(n=120)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    config = TrainConfig(data="synthetic", out="o", epochs=5, lr=0.05, weight_decay=0.0)
    train_loader = loader(x, y, batch_size=16, shuffle=True)
    opt = make_optimizer(model, config)
    sched = make_scheduler(opt, config, steps_per_epoch=len(train_loader))
    history = engine.fit(model, {"train": train_loader, "val": loader(x, y, batch_size=32)}, opt, CPU,
                         epochs=config.epochs, scheduler=sched, config=config.replace(progress=False))
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 2
    assert history[-1]["val_accuracy"] > 0.9
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("epoch 1/5")  # one line per epoch


def test_fit_history_has_the_documented_keys_per_epoch():
    x, y = blobs(n=32)
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    history = engine.fit(model, {"train": loader(x, y), "val": loader(x, y)}, opt, CPU, epochs=2)
    assert [row["epoch"] for row in history] == [1, 2]
    for row in history:
        assert tuple(row) == ("epoch", "train_loss", "train_accuracy", "train_balanced_accuracy",
                              "val_loss", "val_accuracy", "val_balanced_accuracy", "lr", "lr_first", "lr_peak",
                              "seconds", "images_per_s")
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in row.values())
    json.dumps(history)  # goes into metrics.json as is


def test_fit_trains_the_given_model_in_place_without_reinitialising():
    x, y = blobs(n=32)
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.fill_(0.25)
    weight = model.weight
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    engine.fit(model, {"train": loader(x, y), "val": loader(x, y)}, opt, CPU, epochs=1)
    assert model.weight is weight and torch.all(model.weight == 0.25)


def test_fit_runs_a_convolutional_model_on_uint8_images():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.arange(12) % 3
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = engine.fit(model, {"train": loader(x, y, batch_size=4), "val": loader(x, y, batch_size=6)}, opt, CPU,
                         epochs=1)
    assert history[0]["train_loss"] > 0


def test_make_scheduler_is_one_cycle_peaking_at_the_config_lr():
    model = nn.Linear(4, 3)
    config = TrainConfig(data="d", out="o", epochs=4)
    opt = make_optimizer(model, config)
    assert isinstance(opt, torch.optim.Adam)
    assert opt.param_groups[0]["weight_decay"] == config.weight_decay
    sched = make_scheduler(opt, config, steps_per_epoch=10)
    assert isinstance(sched, torch.optim.lr_scheduler.OneCycleLR) and sched.total_steps == 40
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(config.lr) and lrs[0] < config.lr / 10 and lrs[-1] < lrs[0]


def test_make_optimizer_skips_frozen_parameters():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 3))
    model[0].requires_grad_(False)
    opt = make_optimizer(model, TrainConfig(data="d", out="o"))
    assert len(opt.param_groups[0]["params"]) == 2


# ------------------------------------------------------------------ data order


def test_epoch_generator_gives_a_reproducible_order_per_epoch():
    x, y = torch.arange(20).float().unsqueeze(1), torch.zeros(20, dtype=torch.long)
    dl = loader(x, y, batch_size=20, shuffle=True, seed=3)

    def order(epoch):
        sampling.set_loader_epoch(dl, seed=3, epoch=epoch)
        return next(iter(dl))[0].flatten().tolist()

    first_2, first_3 = order(2), order(3)
    assert order(2) == first_2 and order(3) == first_3 and first_2 != first_3


def test_set_loader_epoch_reseeds_a_sampler_with_its_own_generator():
    from torch.utils.data import RandomSampler

    data = TensorDataset(torch.arange(20).float())
    dl = DataLoader(data, batch_size=20, sampler=RandomSampler(data, generator=torch.Generator()))
    assert sampling.set_loader_epoch(dl, seed=0, epoch=1)
    first = next(iter(dl))[0].tolist()
    sampling.set_loader_epoch(dl, seed=0, epoch=1)
    assert next(iter(dl))[0].tolist() == first


def test_set_loader_epoch_reports_a_loader_it_cannot_reseed():
    assert not sampling.set_loader_epoch(loader(*blobs(n=8)), seed=0, epoch=1)


def test_gradients_are_unscaled_before_clipping_when_a_scaler_is_enabled():
    # CPU GradScaler (torch >= 2.3) runs the same code path as float16 on CUDA.
    x, y = blobs(n=32)
    model = nn.Linear(4, 3)
    opt = RecordingSGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, enabled=True)
    result = engine.train_one_epoch(model, loader(x * 100, y), opt, CPU, grad_clip=0.01, scaler=scaler,
                                    options=engine.LoopOptions(torch.bfloat16, progress=False))
    # Clipping scaled gradients would leave them 65536 times smaller than the clip value.
    assert max(opt.max_grad_at_step) == pytest.approx(0.01)
    assert math.isfinite(result["loss"])


def test_config_refuses_the_fractions_the_split_refuses():
    from skinlib.splits import check_fractions

    for fractions in [(0.0, 0.5, 0.5), (0.5, 0.6, -0.1), (0.7, 0.2, 0.2)]:
        with pytest.raises(ValueError) as split_error:
            check_fractions(fractions)
        with pytest.raises(ValueError, match="fractions") as config_error:
            TrainConfig(data="d", out="o", fractions=fractions)
        assert str(split_error.value) in str(config_error.value)


def test_the_epoch_line_gives_the_epochs_learning_rates_not_only_the_last():
    # A one-epoch one-cycle run climbs to its peak and falls to almost 0: its last rate alone would
    # read as if it had trained at 3e-9.
    x, y = blobs(n=160)
    model = nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=7e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=7e-4, total_steps=10)
    reference = torch.optim.lr_scheduler.OneCycleLR(
        torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=7e-4), max_lr=7e-4, total_steps=10)
    used = []
    for _ in range(10):
        used.append(reference.get_last_lr()[0])
        reference.optimizer.step()
        reference.step()
    train = engine.train_one_epoch(model, loader(x, y, batch_size=16), opt, CPU, scheduler=sched, options=QUIET)
    assert (train["lr_first"], train["lr_peak"], train["lr"]) == pytest.approx((used[0], max(used), used[-1]))
    row = engine.epoch_row(1, train, dict(train), seconds=3.0)
    assert f"lr {used[0]:.2e}→{used[-1]:.2e} (peak {max(used):.2e})" in engine.format_epoch(row, 1)

    constant = engine.train_one_epoch(model, loader(x, y, batch_size=16), torch.optim.SGD(model.parameters(), lr=1e-4),
                                      CPU, options=QUIET)
    assert "|  lr 1.00e-04  3s" in engine.format_epoch(engine.epoch_row(1, constant, constant, seconds=3.0), 1)
    saved_before = {key: value for key, value in row.items() if key not in ("lr_first", "lr_peak")}
    assert f"|  lr {used[-1]:.2e}  3s" in engine.format_epoch(saved_before, 1)  # a history saved by an older kit
