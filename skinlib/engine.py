"""GPU-aware training and evaluation loops.

`train_one_epoch` is the training loop of notebook 02, step for step: zero the gradients,
forward, cross-entropy, backward, clip, optimizer step, scheduler step, argmax, confusion
matrix. What it adds is what a GPU needs: mixed precision (one code path, switched by
`amp_dtype`), channels_last memory layout and asynchronous host-to-device copies.

The device is chosen once with `select_device` and passed to every function; nothing here
reads a global device. `fit` uses the model, loaders, optimizer and scheduler it is given
and never re-initialises any of them.

Reproducible data: give the training DataLoader's sampler a `torch.Generator` (see
`make_generator`); `fit` reseeds it from `(seed, epoch)` before every epoch, so epoch 7 sees
the same batches whether the run went straight through or was resumed from a checkpoint.
With `sampling.ShuffleWithSeeds` (what `loaders.make_loaders` uses) the same generator also
seeds every image's augmentation, so resuming is exact (bit for bit) on the CPU with or
without worker processes. CUDA kernels are not bitwise deterministic.
"""
from __future__ import annotations

import functools
import os
import random
import time
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from skinlib.checkpoint import (FORMAT_VERSION, CheckpointError, capture_rng_state,
                                check_compatible, load_checkpoint, restore_rng_state,
                                save_checkpoint)
from skinlib.data import IMAGENET_MEAN, IMAGENET_STD
from skinlib.metrics import ConfusionMatrix, accuracy, balanced_accuracy

HISTORY_KEYS = ("epoch", "train_loss", "train_accuracy", "train_balanced_accuracy", "val_loss",
                "val_accuracy", "val_balanced_accuracy", "lr", "seconds", "images_per_s")

# Config fields that change the course of training: a checkpoint is only resumed under the
# same values. Paths, device, worker count and display options may differ between sessions.
RESUME_MUST_MATCH = ("model", "epochs", "batch_size", "lr", "weight_decay", "grad_clip", "seed",
                     "limit", "image_size", "fractions", "max_batches")


# ---------------------------------------------------------------------------- device


class DeviceUnavailable(RuntimeError):
    """The device asked for does not exist on this machine."""


def select_device(name: str | None = None, *, announce: bool = True) -> torch.device:
    """The device to train on: `name` if given ("cuda", "cuda:1", "mps", "cpu"), else the best
    available (CUDA, then Apple MPS, then CPU). Prints one line saying which, unless told not to."""
    if name is None:
        if torch.cuda.is_available():
            device = torch.device("cuda")
        elif _mps_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
    else:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DeviceUnavailable(f"device {name!r} was asked for but CUDA is not available here "
                               f"(in Colab: Runtime > Change runtime type > GPU)")
        if device.type == "mps" and not _mps_available():
            raise DeviceUnavailable(f"device {name!r} was asked for but Apple MPS is not available here")
    if announce:
        print(f"Using device: {describe_device(device)}")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def describe_device(device: torch.device) -> str:
    """A one-line description, e.g. 'cuda (NVIDIA T4, compute capability 7.5, fp16 autocast)'."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        dtype = autocast_dtype(device)
        return (f"cuda ({torch.cuda.get_device_name(device)}, compute capability {major}.{minor}, "
                f"{_DTYPE_NAMES[dtype]} autocast)")
    if device.type == "mps":
        return "mps (Apple GPU, float32)"
    return f"cpu ({torch.get_num_threads()} threads, float32)"


_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "no"}


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype for `device`, or None for plain float32.

    bfloat16 on CUDA GPUs of compute capability 8.0 or newer (A100, L4, H100); float16 with a
    GradScaler on older ones (T4, V100). The capability is checked rather than
    `torch.cuda.is_bf16_supported()`, which answers True on a T4 where bf16 is emulated and slow.
    CPU and MPS train in float32.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def make_scaler(device: torch.device, amp_dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A GradScaler that is enabled only for float16 on CUDA (bf16 and float32 need no scaling).

    A disabled scaler passes everything through, so the training step has one code path.
    """
    device = torch.device(device)
    return _grad_scaler(device, enabled=device.type == "cuda" and amp_dtype == torch.float16)


def _grad_scaler(device: torch.device, enabled: bool):
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
        return torch.amp.GradScaler(device.type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)


# ---------------------------------------------------------------------------- seeding


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's (CPU and every GPU) random-number generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of the data order of `epoch` (1-based) in a run seeded with `seed`."""
    # SeedSequence mixes the two numbers so neighbouring (seed, epoch) pairs are unrelated.
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)
    return int(state[0]) >> 1  # 63 bits: torch.Generator.manual_seed takes a signed int64


def make_generator(seed: int, epoch: int = 1) -> torch.Generator:
    """A CPU generator for `DataLoader(generator=...)`, seeded for `epoch`.

    Pass it to the training DataLoader; `fit` (or `set_loader_epoch`) reseeds it every epoch.
    """
    return torch.Generator().manual_seed(epoch_seed(seed, epoch))


def set_loader_epoch(loader: Iterable, seed: int, epoch: int) -> bool:
    """Reseed `loader`'s shuffling for `epoch`; return False if it has nothing to reseed.

    Reseeds the DataLoader's and its samplers' generators (RandomSampler draws from the
    DataLoader's, ShuffleWithSeeds from its own) and calls `sampler.set_epoch` when the sampler
    has one (DistributedSampler and friends).
    """
    samplers = [getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)]
    generators = {id(g): g for g in [getattr(loader, "generator", None)]
                  + [getattr(s, "generator", None) for s in samplers]
                  if isinstance(g, torch.Generator)}
    for generator in generators.values():
        generator.manual_seed(epoch_seed(seed, epoch))
    with_set_epoch = [s for s in samplers if hasattr(s, "set_epoch")]
    for sampler in with_set_epoch:
        sampler.set_epoch(epoch)
    return bool(generators or with_set_epoch)


# ---------------------------------------------------------------------------- batches


@functools.lru_cache(maxsize=8)
def _imagenet_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Shape (1, 3, 1, 1) so they broadcast over a batch; made once per device, not per batch.
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return mean, std


def to_device_batch(images: torch.Tensor, targets: torch.Tensor, device: torch.device, *,
                    channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Move one batch to `device`, ready for the model.

    Float images (already normalised by the transforms) are moved as they are. uint8 images
    (N, 3, H, W), as the prepared-image cache delivers them, cross the bus as bytes (4x less
    than float32) and are turned into normalised floats on the device:
    `(x / 255 - IMAGENET_MEAN) / IMAGENET_STD`.
    """
    non_blocking = device.type == "cuda"  # overlaps the copy with compute when memory is pinned
    images = images.to(device, non_blocking=non_blocking)
    targets = targets.to(device, non_blocking=non_blocking)
    if images.dtype == torch.uint8:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"uint8 images must have shape (N, 3, H, W), got {tuple(images.shape)}")
        mean, std = _imagenet_stats(device)
        images = images.float().div_(255).sub_(mean).div_(std)
    if channels_last and images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets


def _batches(loader: Iterable, max_batches: int | None, progress: bool, desc: str):
    """Iterate `loader` (stopping after `max_batches`) behind a tqdm bar that vanishes when done."""
    total = len(loader) if hasattr(loader, "__len__") else None
    if max_batches is not None:
        total = max_batches if total is None else min(total, max_batches)
    bar = tqdm(loader, total=total, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    try:
        for index, batch in enumerate(bar):
            if max_batches is not None and index >= max_batches:
                break
            yield batch
    finally:
        bar.close()


def _results(loss_sum: torch.Tensor | None, cm: ConfusionMatrix | None, images: int,
             seconds: float, what: str) -> dict[str, Any]:
    if cm is None or images == 0:
        raise ValueError(f"the {what} loader yielded no batches")
    loss = loss_sum.item() / images  # GPU sync point: once per epoch, never per batch
    return {"loss": loss, "accuracy": float(accuracy(cm)),
            "balanced_accuracy": float(balanced_accuracy(cm)), "confusion": cm,
            "images": images, "seconds": seconds, "images_per_s": images / seconds if seconds else 0.0}


# ---------------------------------------------------------------------------- loops


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                    device: torch.device, *, scheduler: Any = None, grad_clip: float | None = None,
                    scaler: torch.amp.GradScaler | None = None, amp_dtype: torch.dtype | None = None,
                    channels_last: bool = False, progress: bool = True,
                    max_batches: int | None = None) -> dict[str, Any]:
    """Train `model` for one pass over `loader`; return the epoch's results.

    Returns a dict: loss (mean cross-entropy per image), accuracy, balanced_accuracy,
    confusion (a ConfusionMatrix), images, seconds, images_per_s, lr (the learning rate of
    the last step). `scheduler` is stepped after every batch (one-cycle). `grad_clip` clips
    each gradient element to [-grad_clip, grad_clip] (`clip_grad_value_`). With
    `amp_dtype=torch.float16` pass an enabled `scaler` (see `make_scaler`).
    """
    device = torch.device(device)
    if scaler is None:
        scaler = _grad_scaler(device, enabled=False)
    model.train()
    cm = None
    loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per batch
    images_seen = 0
    lr = optimizer.param_groups[0]["lr"]
    start = time.perf_counter()
    for images, targets in _batches(loader, max_batches, progress, "train"):
        images, targets = to_device_batch(images, targets, device, channels_last=channels_last)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)
            loss = F.cross_entropy(logits, targets)
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_value_(model.parameters(), grad_clip)
        lr = optimizer.param_groups[0]["lr"]
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        preds = logits.detach().argmax(dim=1)
        if cm is None:
            cm = ConfusionMatrix(logits.shape[1])
        cm.update(preds, targets)
        loss_sum += loss.detach().float() * targets.shape[0]
        images_seen += targets.shape[0]
    result = _results(loss_sum, cm, images_seen, 0.0, "training")
    result["seconds"] = seconds = time.perf_counter() - start  # after the sync in _results
    result["images_per_s"] = images_seen / seconds if seconds > 0 else 0.0
    result["lr"] = lr
    return result


def evaluate(model: nn.Module, loader: Iterable, device: torch.device, *,
             amp_dtype: torch.dtype | None = None, channels_last: bool = False,
             progress: bool = True, max_batches: int | None = None,
             return_probs: bool = False) -> dict[str, Any]:
    """Evaluate `model` on `loader` without gradients; return the results.

    Returns a dict: loss, accuracy, balanced_accuracy, confusion, images, seconds,
    images_per_s, and with `return_probs=True` also probs (N, C softmax, float32, CPU) and
    targets (N, int64, CPU), in loader order, for ROC curves and AUC. The model's train/eval
    mode is restored afterwards.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    cm = None
    loss_sum = torch.zeros((), device=device)
    images_seen = 0
    all_probs, all_targets = [], []
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            for images, targets in _batches(loader, max_batches, progress, "eval"):
                images, targets = to_device_batch(images, targets, device,
                                                  channels_last=channels_last)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = model(images)
                logits = logits.float()
                loss_sum += F.cross_entropy(logits, targets, reduction="sum")
                if cm is None:
                    cm = ConfusionMatrix(logits.shape[1])
                cm.update(logits.argmax(dim=1), targets)
                images_seen += targets.shape[0]
                if return_probs:
                    all_probs.append(logits.softmax(dim=1))
                    all_targets.append(targets)
            result = _results(loss_sum, cm, images_seen, 0.0, "evaluation")
    finally:
        model.train(was_training)
    result["seconds"] = seconds = time.perf_counter() - start
    result["images_per_s"] = images_seen / seconds if seconds > 0 else 0.0
    if return_probs:
        result["probs"] = torch.cat(all_probs).cpu()
        result["targets"] = torch.cat(all_targets).cpu()
    return result


# ---------------------------------------------------------------------------- recipe


def make_optimizer(model: nn.Module, config: Any) -> torch.optim.Adam:
    """Adam over the trainable parameters, with the config's learning rate and weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: Any,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """One-cycle schedule peaking at `config.lr`, over `config.epochs * steps_per_epoch` steps.

    `steps_per_epoch` is the number of batches `train_one_epoch` will run per epoch:
    `len(train_loader)`, or `min(len(train_loader), max_batches)` in smoke mode.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr,
                                               total_steps=config.epochs * steps_per_epoch)


# ---------------------------------------------------------------------------- fit


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable,
        optimizer: torch.optim.Optimizer, device: torch.device, *, epochs: int,
        scheduler: Any = None, grad_clip: float | None = None, amp: bool = True,
        channels_last: bool = True, checkpoint_path: str | os.PathLike | None = None,
        resume: bool = False, config: Any = None, seed: int | None = None,
        progress: bool = True, verbose: bool = True, max_batches: int | None = None,
        on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Train for `epochs` epochs, evaluating after each; return the history (one dict per epoch).

    The model should already be on `device`; the optimizer and scheduler are used as given.
    `amp` turns on mixed precision where the device supports it (see `autocast_dtype`),
    `channels_last` the NHWC layout on CUDA (ignored elsewhere). With `checkpoint_path` a
    checkpoint is written after every epoch; with `resume=True` training continues from it
    (weights, optimizer, scheduler, scaler, random states, history), or starts at epoch 1 if
    it does not exist yet. `seed` (default: `config.seed`) reseeds the training loader's
    generator every epoch so the data order survives a resume. `progress` shows tqdm bars,
    `verbose` prints one summary line per epoch. `on_epoch_end(row)` is called after each
    epoch's checkpoint is written.
    """
    device = torch.device(device)
    if seed is None and config is not None:
        seed = config.seed
    amp_dtype = autocast_dtype(device) if amp else None
    scaler = make_scaler(device, amp_dtype)
    channels_last = channels_last and device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)  # same Parameter objects: optimizer unaffected

    history: list[dict[str, Any]] = []
    start_epoch = 1
    if resume:
        if checkpoint_path is None:
            raise ValueError("resume=True needs a checkpoint_path")
        if os.path.exists(checkpoint_path):
            history = _resume(checkpoint_path, model, optimizer, scheduler, scaler, config)
            start_epoch = len(history) + 1
            if verbose:
                print(f"Resuming from {checkpoint_path}: {len(history)} epoch(s) done")
        elif verbose:
            print(f"No checkpoint at {checkpoint_path} yet: starting at epoch 1")

    num_classes = None
    for epoch in range(start_epoch, epochs + 1):
        if seed is not None:
            set_loader_epoch(train_loader, seed, epoch)
        try:
            epoch_start = time.perf_counter()
            train = train_one_epoch(model, train_loader, optimizer, device, scheduler=scheduler,
                                    grad_clip=grad_clip, scaler=scaler, amp_dtype=amp_dtype,
                                    channels_last=channels_last, progress=progress,
                                    max_batches=max_batches)
            val = evaluate(model, val_loader, device, amp_dtype=amp_dtype,
                           channels_last=channels_last, progress=progress,
                           max_batches=max_batches)
        except KeyboardInterrupt:
            if verbose:
                saved = (f"the checkpoint {checkpoint_path} holds {len(history)} epoch(s); "
                         f"resume=True continues from there" if checkpoint_path else "no checkpoint")
                print(f"Interrupted during epoch {epoch}: {saved}")
            raise
        num_classes = train["confusion"].num_classes
        row = {
            "epoch": epoch,
            "train_loss": train["loss"], "train_accuracy": train["accuracy"],
            "train_balanced_accuracy": train["balanced_accuracy"],
            "val_loss": val["loss"], "val_accuracy": val["accuracy"],
            "val_balanced_accuracy": val["balanced_accuracy"],
            "lr": train["lr"], "seconds": time.perf_counter() - epoch_start,
            "images_per_s": train["images_per_s"],
        }
        history.append(row)
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, _checkpoint_state(
                model, optimizer, scheduler, scaler, history, config, num_classes))
        if verbose:
            print(format_epoch(row, epochs))
        if on_epoch_end is not None:
            on_epoch_end(row)
    return history


def format_epoch(row: dict[str, Any], epochs: int) -> str:
    """The one summary line printed per epoch."""
    width = len(str(epochs))
    return (f"epoch {row['epoch']:>{width}}/{epochs}  "
            f"train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f} "
            f"bal {row['train_balanced_accuracy']:.3f}  |  "
            f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.3f} "
            f"bal {row['val_balanced_accuracy']:.3f}  |  "
            f"lr {row['lr']:.2e}  {row['seconds']:.0f}s  {row['images_per_s']:.0f} img/s")


def _checkpoint_state(model, optimizer, scheduler, scaler, history, config, num_classes):
    return {
        "format_version": FORMAT_VERSION,
        "epoch": len(history),
        "model_class": type(model).__name__,
        "num_classes": num_classes,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": _plain_state(scheduler.state_dict()) if scheduler is not None else None,
        "scaler": scaler.state_dict(),
        "rng": capture_rng_state(),
        "history": history,
        "config": config.to_dict() if config is not None else None,
    }


def _plain_state(state: dict[str, Any]) -> dict[str, Any]:
    """A scheduler's state without functions, which weights_only loading refuses.

    OneCycleLR of torch < 2.4 keeps its annealing function in its state; the constructor sets it
    again, so nothing is lost by leaving it out.
    """
    return {k: v for k, v in state.items() if not callable(v)}


def _resume(path, model, optimizer, scheduler, scaler, config) -> list[dict[str, Any]]:
    """Load a checkpoint into the given objects; return its history."""
    state = load_checkpoint(path, map_location="cpu")
    check_compatible(state, model, path=path, config=config)
    saved_config = state.get("config")
    if config is not None and saved_config is not None:
        current = config.to_dict()
        differ = [f"{k}: {saved_config.get(k)!r} in the checkpoint, {current.get(k)!r} now"
                  for k in RESUME_MUST_MATCH if saved_config.get(k) != current.get(k)]
        if differ:
            raise CheckpointError(
                f"checkpoint {path} belongs to a run with other settings, so resuming would not "
                f"continue it ({'; '.join(differ)}); start a new run or restore the settings")
    if (scheduler is None) != (state.get("scheduler") is None):
        raise CheckpointError(
            f"checkpoint {path} was saved {'with' if state.get('scheduler') is not None else 'without'} "
            f"a learning-rate scheduler, this run has {'one' if scheduler is not None else 'none'}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler.is_enabled() and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])  # a disabled scaler saved {}: nothing to restore
    restore_rng_state(state["rng"])
    return list(state["history"])
