"""The training and evaluation loops: `train_one_epoch`, `evaluate` and `fit`.

`train_one_epoch` is the training loop of notebook 02, step for step and with its names
(`criterion`, `outputs`, `labels`): zero the gradients, forward, loss, backward, (clip),
optimizer step, (scheduler step), argmax, confusion matrix. What it adds is what a GPU needs:
mixed precision (one code path, switched by `amp_dtype`), channels_last memory layout,
asynchronous host-to-device copies, and no wait for the GPU inside the loop.

`fit` repeats train-then-evaluate for a number of epochs with the model, loaders, optimizer
and scheduler it is given (it never builds or re-initialises any of them), and with a
`CheckpointPlan` it saves the run after every epoch and can resume it (see `resume`).
"""
from __future__ import annotations

import functools
import itertools
import os
import time
from typing import Any, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from skinlib import distributed
from skinlib.data import IMAGENET_MEAN, IMAGENET_STD
from skinlib.device import autocast_dtype, make_scaler
from skinlib.divergence import LossWatch, NonFiniteLoss
from skinlib.history import epoch_row, format_epoch
from skinlib.metrics import ConfusionMatrix, accuracy, balanced_accuracy
from skinlib.storage.resume import CheckpointPlan
from skinlib.sampling import set_loader_epoch


@functools.lru_cache(maxsize=8)
def _imagenet_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Shape (1, 3, 1, 1) so they broadcast over a batch; made once per device, not per batch.
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return mean, std


def to_device_batch(images: torch.Tensor, labels: torch.Tensor, device: torch.device, *,
                    channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Move one batch to `device`, ready for the model.

    Float images (already normalised by the transforms) are moved as they are. uint8 images
    (N, 3, H, W), as the training augmentation and the prepared-image cache deliver them,
    cross the bus as bytes (4x less than float32) and are turned into normalised floats on
    the device: `(x / 255 - IMAGENET_MEAN) / IMAGENET_STD`.
    """
    non_blocking = device.type == "cuda"  # overlaps the copy with compute when memory is pinned
    images = images.to(device, non_blocking=non_blocking)
    labels = labels.to(device, non_blocking=non_blocking)
    if images.dtype == torch.uint8:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"uint8 images must have shape (N, 3, H, W), got {tuple(images.shape)}")
        mean, std = _imagenet_stats(device)
        images = images.float().div_(255).sub_(mean).div_(std)
    if channels_last and images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels


def _batches(loader: Iterable, max_batches: int | None, progress: bool, desc: str):
    """Iterate `loader` (stopping after `max_batches`) behind a tqdm bar that vanishes when done."""
    total = len(loader) if hasattr(loader, "__len__") else None
    if max_batches is not None:
        total = max_batches if total is None else min(total, max_batches)
    batches = loader if max_batches is None else itertools.islice(loader, max_batches)
    # islice, not a break: the bar then ends as complete and hides itself, instead of
    # staying on screen in red as an interrupted one (and no batch is loaded for nothing)
    bar = tqdm(batches, total=total, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    try:
        yield from bar
    finally:
        bar.close()


def _results(loss_sum: torch.Tensor, cm: ConfusionMatrix | None, images: int, start: float,
             what: str) -> dict[str, Any]:
    """The dict both loops return; `loss_sum.item()` is the one wait for the GPU per epoch."""
    if cm is None or images == 0:
        raise ValueError(f"the {what} loader yielded no batches")
    loss_sum, images = distributed.sum_across_processes(loss_sum, cm, images)  # torchrun: all processes
    loss = loss_sum.item() / images
    seconds = time.perf_counter() - start  # after the wait, so it counts the GPU's work
    return {"loss": loss, "accuracy": float(accuracy(cm)),
            "balanced_accuracy": float(balanced_accuracy(cm)), "confusion": cm,
            "images": images, "seconds": seconds,
            "images_per_s": images / seconds if seconds > 0 else 0.0}


# ---------------------------------------------------------------------------- loops


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                    device: torch.device, *, scheduler: Any = None, grad_clip: float | None = None,
                    scaler: torch.amp.GradScaler | None = None, amp_dtype: torch.dtype | None = None,
                    channels_last: bool = False, progress: bool = True,
                    max_batches: int | None = None) -> dict[str, Any]:
    """Train `model` for one pass over `loader`; return the epoch's results.

    Returns a dict: loss (mean cross-entropy per image), accuracy, balanced_accuracy,
    confusion (a ConfusionMatrix), images, seconds, images_per_s, lr, lr_first and lr_peak (the
    learning rate of the last step, the first and the highest). `scheduler` is stepped after
    every batch (one-cycle). `grad_clip` clips each gradient element to [-grad_clip, grad_clip]
    (`clip_grad_value_`). With
    `amp_dtype=torch.float16` pass an enabled `scaler` (see `make_scaler`). Raises
    NonFiniteLoss, naming the first batch whose loss was NaN or infinite, and stops there: at
    that batch on a CPU, a few batches later on a GPU (`skinlib.divergence`).

    A little over 50 lines on purpose: the whole step, in notebook 02's order and names, reads
    in one piece beside the student's own loop.
    """
    device = torch.device(device)
    scaler = make_scaler(device, None) if scaler is None else scaler
    criterion = nn.CrossEntropyLoss()
    model.train()
    cm = None
    loss_sum = torch.zeros((), device=device)  # summed on the device: no wait per batch
    watch = LossWatch(device)  # stops the epoch at a NaN or infinite loss (see skinlib.divergence)
    images_seen, lr, start = 0, optimizer.param_groups[0]["lr"], time.perf_counter()
    first_lr, peak_lr = lr, lr  # the epoch's line shows them: a one-cycle epoch ends near 0
    for batch, (images, labels) in enumerate(_batches(loader, max_batches, progress, "train")):
        images, labels = to_device_batch(images, labels, device, channels_last=channels_last)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(images)
            loss = criterion(outputs, labels)
        lr = optimizer.param_groups[0]["lr"]
        peak_lr = max(peak_lr, lr)
        watch.note(loss, batch, lr)
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_value_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        predictions = outputs.detach().argmax(dim=1)
        if cm is None:
            cm = ConfusionMatrix(outputs.shape[1])
        cm.update(predictions, labels)
        loss_sum += loss.detach().float() * labels.shape[0]
        images_seen += labels.shape[0]
    watch.finish()
    result = _results(loss_sum, cm, images_seen, start, "training")
    result.update(lr=lr, lr_first=first_lr, lr_peak=peak_lr)
    return result


def evaluate(model: nn.Module, loader: Iterable, device: torch.device, *,
             amp_dtype: torch.dtype | None = None, channels_last: bool = False,
             progress: bool = True, max_batches: int | None = None,
             return_probs: bool = False) -> dict[str, Any]:
    """Evaluate `model` on `loader` without gradients; return the results.

    Returns a dict: loss, accuracy, balanced_accuracy, confusion, images, seconds,
    images_per_s, and with `return_probs=True` also probs (N, C softmax, float32, CPU) and
    targets (the N labels, int64, CPU), in loader order, for ROC curves and AUC. The model's
    train/eval mode is restored afterwards.
    """
    device = torch.device(device)
    criterion = nn.CrossEntropyLoss(reduction="sum")
    was_training = model.training
    model.eval()
    cm, loss_sum, images_seen = None, torch.zeros((), device=device), 0
    all_probs, all_labels, start = [], [], time.perf_counter()
    try:
        with torch.inference_mode():
            for images, labels in _batches(loader, max_batches, progress, "eval"):
                images, labels = to_device_batch(images, labels, device, channels_last=channels_last)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    outputs = model(images)
                outputs = outputs.float()
                loss_sum += criterion(outputs, labels)
                if cm is None:
                    cm = ConfusionMatrix(outputs.shape[1])
                cm.update(outputs.argmax(dim=1), labels)
                images_seen += labels.shape[0]
                if return_probs:
                    all_probs.append(outputs.softmax(dim=1))
                    all_labels.append(labels)
            result = _results(loss_sum, cm, images_seen, start, "evaluation")
    finally:
        model.train(was_training)
    if return_probs:
        result["probs"] = distributed.gather_in_order(torch.cat(all_probs).cpu())
        result["targets"] = distributed.gather_in_order(torch.cat(all_labels).cpu())
    return result


# ---------------------------------------------------------------------------- fit


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable,
        optimizer: torch.optim.Optimizer, device: torch.device, *, epochs: int,
        scheduler: Any = None, config: Any = None, checkpoint: CheckpointPlan | None = None,
        max_batches: int | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Train for `epochs` epochs, evaluating on `val_loader` after each; return the history.

    The history has one dict per epoch (see `history.epoch_row`): epoch, train_loss,
    train_accuracy, train_balanced_accuracy, val_loss, val_accuracy, val_balanced_accuracy,
    lr (the last step's), lr_first, lr_peak, seconds, images_per_s. One summary line is printed
    per epoch; `progress` adds tqdm bars.

    The model should already be on `device`; the optimizer and scheduler (stepped after every
    batch) are used as given. `config` (a TrainConfig) brings gradient clipping, mixed
    precision, channels_last and the seed of the data order, and is saved in the checkpoint;
    without it there is no clipping, mixed precision and channels_last are on where the
    device supports them, and the data order is the loader's own. `checkpoint` (a
    CheckpointPlan) saves the run after every epoch and can continue it. A NaN or infinite
    loss raises NonFiniteLoss."""
    device = torch.device(device)
    amp_dtype = autocast_dtype(device) if getattr(config, "amp", True) else None
    scaler = make_scaler(device, amp_dtype)
    channels_last = getattr(config, "channels_last", True) and device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)  # same Parameter objects: optimizer unaffected
    history = checkpoint.start(model, optimizer, scheduler, scaler, config) if checkpoint else []
    options = dict(channels_last=channels_last, progress=progress, max_batches=max_batches,
                   amp_dtype=amp_dtype)
    for epoch in range(len(history) + 1, epochs + 1):
        if config is not None:
            set_loader_epoch(train_loader, config.seed, epoch)
        epoch_start = time.perf_counter()
        try:
            train = train_one_epoch(model, train_loader, optimizer, device, scheduler=scheduler,
                                    grad_clip=getattr(config, "grad_clip", None), scaler=scaler,
                                    **options)
            val = evaluate(model, val_loader, device, **options)
        except NonFiniteLoss as err:
            raise NonFiniteLoss(epoch, err.batch, err.lr, history) from None
        except KeyboardInterrupt:
            raise _interrupted(epoch, len(history), checkpoint) from None
        history.append(epoch_row(epoch, train, val, time.perf_counter() - epoch_start))
        if checkpoint is not None:
            try:
                checkpoint.save(model, optimizer, scheduler, scaler, history, config,
                                train["confusion"].num_classes)
            except KeyboardInterrupt:
                raise _interrupted(epoch, len(history) - 1, checkpoint, saving=True) from None
        print(format_epoch(history[-1], epochs))
    return history


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during `fit`: in which epoch, and what the checkpoint keeps (`describe`). Its
    message says how a notebook continues (resume=True); the command line says --resume."""

    def __init__(self, epoch: int, done: int, checkpoint: CheckpointPlan | None, saving: bool = False):
        self.epoch, self.done, self.saving = epoch, done, saving
        self.path = None if checkpoint is None else checkpoint.path
        sentence = self.describe("resuming (resume=True; --resume on the command line)")
        super().__init__(sentence[0].upper() + sentence[1:])  # a notebook shows it as a sentence

    def describe(self, resume: str) -> str:
        """When the run stopped, what is kept, and what `resume` does next (lower case: the command
        line puts it after "error: ")."""
        when = (f"while writing the checkpoint after epoch {self.epoch}" if self.saving
                else f"during epoch {self.epoch}")
        if self.path is None:
            return f"interrupted {when}: nothing is kept (no checkpoint was asked for)"
        if self.done == 0 or not os.path.exists(self.path):
            return (f"interrupted {when}: no epoch had finished, so no checkpoint was written yet; "
                    f"{resume} starts again at epoch 1 with the same split")
        kept = "the previous checkpoint is kept, " if self.saving else "the checkpoint "
        return f"interrupted {when}: {kept}{self.path} holds {self.done} epoch(s); {resume} continues from there"


def _interrupted(epoch: int, done: int, checkpoint: CheckpointPlan | None, saving: bool = False):
    """The TrainingInterrupted to raise, its sentence printed first (a notebook shows both)."""
    stop = TrainingInterrupted(epoch, done, checkpoint, saving)
    print(stop)
    return stop
