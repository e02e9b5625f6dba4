"""The training and evaluation loops, GPU-aware.

`train_one_epoch` is the training loop of notebook 02, step for step: zero the gradients,
forward, cross-entropy, backward, clip, optimizer step, scheduler step, argmax, confusion
matrix. What it adds is what a GPU needs: mixed precision (one code path, switched by
`amp_dtype`), channels_last memory layout and asynchronous host-to-device copies.

The device is chosen once (`device.select_device`) and passed to every function. `fit` uses
the model, loaders, optimizer and scheduler it is given and never re-initialises any of them.

Reproducible data: give the training DataLoader's sampler a `torch.Generator` (see
`sampling.make_generator`); `fit` reseeds it from `(seed, epoch)` before every epoch, so
epoch 7 sees the same batches whether the run went straight through or was resumed.
With `sampling.ShuffleWithSeeds` (what `loaders.make_loaders` uses) the same generator also
seeds every image's augmentation, so resuming is exact (bit for bit) on the CPU with or
without worker processes. CUDA kernels are not bitwise deterministic.
"""
from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from skinlib.checkpoint import save_checkpoint
from skinlib.data import IMAGENET_MEAN, IMAGENET_STD
from skinlib.device import autocast_dtype, make_scaler
from skinlib.finite import FiniteWatch, NonFiniteLoss
from skinlib.metrics import ConfusionMatrix, accuracy, balanced_accuracy
from skinlib.resume import resume_training, training_state
from skinlib.sampling import set_loader_epoch

HISTORY_KEYS = ("epoch", "train_loss", "train_accuracy", "train_balanced_accuracy", "val_loss",
                "val_accuracy", "val_balanced_accuracy", "lr", "seconds", "images_per_s")


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
        scaler = make_scaler(device, None)
    model.train()
    cm = None
    loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per batch
    images_seen = 0
    lr = optimizer.param_groups[0]["lr"]
    start = time.perf_counter()
    watch = FiniteWatch(device)
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
        watch.update(loss.detach())
    watch.check()
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


# ---------------------------------------------------------------------------- fit


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable,
        optimizer: torch.optim.Optimizer, device: torch.device, *, epochs: int,
        scheduler: Any = None, grad_clip: float | None = None, amp: bool = True,
        channels_last: bool = True, checkpoint_path: str | os.PathLike | None = None,
        resume: bool = False, config: Any = None, seed: int | None = None,
        progress: bool = True, verbose: bool = True, max_batches: int | None = None,
        on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
        checkpoint_extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Train for `epochs` epochs, evaluating after each; return the history (one dict per epoch).

    The model should already be on `device`; the optimizer and scheduler are used as given.
    `amp` turns on mixed precision where the device supports it (see `autocast_dtype`),
    `channels_last` the NHWC layout on CUDA (ignored elsewhere). With `checkpoint_path` a
    checkpoint is written after every epoch; with `resume=True` training continues from it
    (weights, optimizer, scheduler, scaler, random states, history), or starts at epoch 1 if
    it does not exist yet. `seed` (default: `config.seed`) reseeds the training loader's
    generator every epoch so the data order survives a resume. `progress` shows tqdm bars,
    `verbose` prints one summary line per epoch. `on_epoch_end(row)` is called after each
    epoch's checkpoint is written; `checkpoint_extra` is stored in every checkpoint. A loss
    that is not finite raises `finite.NonFiniteLoss` before that epoch's checkpoint.
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
            history = resume_training(checkpoint_path, model, optimizer, scheduler, scaler, config)
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
        except NonFiniteLoss as err:
            err.epoch = epoch
            raise
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
            save_checkpoint(checkpoint_path, {**training_state(
                model, optimizer, scheduler, scaler, history, config, num_classes), **(checkpoint_extra or {})})
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
