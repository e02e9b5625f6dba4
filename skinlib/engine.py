"""The training and evaluation loops: `train_one_epoch`, `evaluate` and `fit`.

`train_one_epoch` is the training loop of notebook 02, step for step and with its names
(`criterion`, `outputs`, `labels`): zero the gradients, forward, loss, backward, (clip),
optimizer step, (scheduler step), argmax, confusion matrix. What it adds is what a GPU needs:
mixed precision (one code path, switched by `amp_dtype`), channels_last memory layout,
asynchronous host-to-device copies, and no per-batch read of the loss.

`fit` repeats train-then-evaluate for a number of epochs with the model, loaders, optimizer
and scheduler it is given (it never builds or re-initialises any of them), and with a
`CheckpointPlan` it saves the run after every epoch and can resume it (`storage.checkpoint`).
Below the loops: `LossWatch`, which stops a run at a NaN loss, and the history's rows.
"""
from __future__ import annotations

import functools
import itertools
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from skinlib import distributed
from skinlib.layout import IMAGENET_MEAN, IMAGENET_STD
from skinlib.device import autocast_dtype, make_scaler
from skinlib.errors import SkinlibError
from skinlib.metrics import ConfusionMatrix, accuracy, balanced_accuracy
from skinlib.sampling import set_loader_epoch

if TYPE_CHECKING:  # `fit` only calls the plan it is given: the loop does not load the storage wing
    from skinlib.storage.checkpoint import CheckpointPlan


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


def _batches(loader: Iterable, options: LoopOptions, desc: str):
    """Iterate `loader` (stopping after `options.max_batches`) behind a tqdm bar that vanishes when done."""
    max_batches, progress = options.max_batches, options.progress
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
@dataclass(frozen=True)
class LoopOptions:
    """How both loops run, apart from what they train: mixed precision (`amp_dtype`, None for
    float32), channels_last memory layout, tqdm bars, and `max_batches` (stop each pass after N
    batches: smoke runs). `fit` makes one per run and hands it to every epoch."""

    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    progress: bool = True
    max_batches: int | None = None


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                    device: torch.device, *, scheduler: Any = None, grad_clip: float | None = None,
                    scaler: torch.amp.GradScaler | None = None,
                    options: LoopOptions = LoopOptions()) -> dict[str, Any]:
    """Train `model` for one pass over `loader`; return the epoch's results.

    Returns a dict: loss (mean cross-entropy per image), accuracy, balanced_accuracy,
    confusion (a ConfusionMatrix), images, seconds, images_per_s, lr, lr_first and lr_peak (the
    learning rate of the last step, the first and the highest). `scheduler` is stepped after
    every batch (one-cycle). `grad_clip` clips each gradient element to [-grad_clip, grad_clip]
    (`clip_grad_value_`). With
    `options.amp_dtype=torch.float16` pass an enabled `scaler` (see `make_scaler`). Raises
    NonFiniteLoss, naming the first batch whose loss was NaN or infinite, and stops there: at
    that batch on a CPU, a few batches later on a GPU (`LossWatch`). `options` says how the loop
    runs (mixed precision, memory layout, progress bar, a batch limit).

    A little over 50 lines on purpose: the whole step, in notebook 02's order and names, reads
    in one piece beside the student's own loop.
    """
    device = torch.device(device)
    scaler = make_scaler(device, None) if scaler is None else scaler
    criterion = nn.CrossEntropyLoss()
    model.train()
    cm = None
    loss_sum = torch.zeros((), device=device)  # summed on the device: no wait per batch
    watch = LossWatch(device)  # stops the epoch at a NaN or infinite loss (LossWatch, below)
    images_seen, lr, start = 0, optimizer.param_groups[0]["lr"], time.perf_counter()
    first_lr, peak_lr = lr, lr  # the epoch's line shows them: a one-cycle epoch ends near 0
    amp_dtype = options.amp_dtype
    for batch, (images, labels) in enumerate(_batches(loader, options, "train")):
        images, labels = to_device_batch(images, labels, device, channels_last=options.channels_last)
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
             options: LoopOptions = LoopOptions(), return_probs: bool = False) -> dict[str, Any]:
    """Evaluate `model` on `loader` without gradients; return the results.

    Returns a dict: loss, accuracy, balanced_accuracy, confusion, images, seconds,
    images_per_s, and with `return_probs=True` also probs (N, C softmax, float32, CPU) and
    targets (the N labels, int64, CPU), in loader order, for ROC curves and AUC. The model's
    train/eval mode is restored afterwards. `options` as for `train_one_epoch`.
    """
    device = torch.device(device)
    criterion = nn.CrossEntropyLoss(reduction="sum")
    was_training = model.training
    model.eval()
    cm, loss_sum, images_seen = None, torch.zeros((), device=device), 0
    all_probs, all_labels, start = [], [], time.perf_counter()
    try:
        with torch.inference_mode():
            for images, labels in _batches(loader, options, "eval"):
                images, labels = to_device_batch(images, labels, device, channels_last=options.channels_last)
                with torch.autocast(device.type, dtype=options.amp_dtype, enabled=options.amp_dtype is not None):
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


def fit(model: nn.Module, loaders: dict[str, Iterable], optimizer: torch.optim.Optimizer,
        device: torch.device, *, epochs: int, scheduler: Any = None, config: Any = None,
        checkpoint: CheckpointPlan | None = None) -> list[dict[str, Any]]:
    """Train for `epochs` epochs on `loaders["train"]`, evaluating on `loaders["val"]` after each;
    return the history.

    The history has one dict per epoch (see `epoch_row`): epoch, train_loss,
    train_accuracy, train_balanced_accuracy, val_loss, val_accuracy, val_balanced_accuracy,
    lr (the last step's), lr_first, lr_peak, seconds, images_per_s. One summary line is printed
    per epoch.

    The model should already be on `device`; the optimizer and scheduler (stepped after every
    batch) are used as given. `config` (a TrainConfig) brings the settings that travel with a
    run: gradient clipping, mixed precision, channels_last, progress bars, `max_batches` and
    the seed of the data order, and is saved in the checkpoint; without it there is no
    clipping, mixed precision and channels_last are on where the device supports them, every
    batch is used behind a progress bar, and the data order is the loader's own. `checkpoint`
    (a CheckpointPlan) saves the run after every epoch and can continue it. A NaN or infinite
    loss raises NonFiniteLoss."""
    device = torch.device(device)
    amp_dtype = autocast_dtype(device) if getattr(config, "amp", True) else None
    scaler = make_scaler(device, amp_dtype)
    options = LoopOptions(amp_dtype, getattr(config, "channels_last", True) and device.type == "cuda",
                          getattr(config, "progress", True), getattr(config, "max_batches", None))
    if options.channels_last:
        model.to(memory_format=torch.channels_last)  # same Parameter objects: optimizer unaffected
    history = checkpoint.start(model, optimizer, scheduler, scaler, config) if checkpoint else []
    for epoch in range(len(history) + 1, epochs + 1):
        if config is not None:
            set_loader_epoch(loaders["train"], config.seed, epoch)
        epoch_start = time.perf_counter()
        try:
            train = train_one_epoch(model, loaders["train"], optimizer, device, scheduler=scheduler,
                                    grad_clip=getattr(config, "grad_clip", None), scaler=scaler, options=options)
            val = evaluate(model, loaders["val"], device, options=options)
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


# ---------------------------------------------------------------------------- a NaN loss
# Stopping a run whose loss turned NaN or infinite, at the batch where it happened.
#
# A diverged run (most often a learning rate too high) produces a NaN or infinite loss, and every
# step after it spoils the weights further. `LossWatch` notes, on the device, the first batch of
# the epoch whose loss was not finite, and looks at that note only where looking costs nothing:
#
# - on a CPU the loss is already in memory, so every batch is checked before its backward pass,
#   and no optimizer step is ever taken on a non-finite loss;
# - on a GPU reading a number waits for the GPU, so the note is read every `CHECK_EVERY` batches
#   and at the end of the epoch; the error still names the first bad batch, and the run stops
#   at the next check (the steps between spoil only weights that are thrown away: the
#   checkpoint holds the last finished epoch);
# - under torchrun every process reads the note at the same batches and they agree on the
#   earliest bad batch of any of them (one collective), so all stop together.
CHECK_EVERY = 50  # batches between two looks at the note on a GPU or under torchrun


class NonFiniteLoss(SkinlibError):
    """The training loss became NaN or infinite: the run diverged and cannot go on.

    Attributes: `epoch` (1-based; None when raised by `train_one_epoch` on its own), `batch`
    (1-based, the first batch of that epoch whose loss was not finite), `lr` (the learning
    rate of that batch) and `history` (the rows of the epochs finished before it, whose
    weights the checkpoint holds).
    """

    def __init__(self, epoch: int | None, batch: int, lr: float,
                 history: list[dict] | None = None):
        self.epoch, self.batch, self.lr = epoch, batch, lr
        self.history = list(history or [])
        where = f"epoch {epoch}, batch {batch}" if epoch is not None else f"batch {batch}"
        super().__init__(
            f"the training loss became NaN or infinite at {where}: training diverged, most "
            f"likely because the learning rate ({lr:.2g}) is too high; train again with a "
            f"lower learning rate (e.g. {lr / 10:.2g})")


class LossWatch:
    """The first non-finite loss of an epoch, noted on the device and read when it is cheap.

    Call `note(loss, batch, lr)` once per batch, before the backward pass, and `finish()` after
    the last batch; either raises NonFiniteLoss (without an epoch) when a bad batch is seen.
    `check_every` overrides how often the note is read (1: every batch).
    """

    def __init__(self, device: torch.device, check_every: int | None = None):
        if check_every is None:
            cheap = device.type == "cpu" and not distributed.is_active()
            check_every = 1 if cheap else CHECK_EVERY
        self.check_every = check_every
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.lrs: dict[int, float] = {}  # learning rate of each batch since the last look

    def note(self, loss: torch.Tensor, batch: int, lr: float) -> None:
        """Note batch `batch` (0-based) if its `loss` is the epoch's first non-finite one."""
        bad = (self.first_bad < 0) & ~torch.isfinite(loss.detach())
        self.first_bad = torch.where(bad, batch, self.first_bad)
        self.lrs[batch] = lr
        if (batch + 1) % self.check_every == 0:
            self._look()

    def finish(self) -> None:
        """Look at the note after the epoch's last batch."""
        self._look()

    def _look(self) -> None:
        first_bad = self.first_bad
        if distributed.is_active():  # the earliest bad batch of any process, or -1 on all of them
            never = torch.iinfo(torch.int64).max
            first_bad = torch.where(first_bad < 0, never, first_bad)
            dist.all_reduce(first_bad, op=dist.ReduceOp.MIN)
            first_bad = torch.where(first_bad == never, -1, first_bad)
        batch = int(first_bad.item())  # the one wait for the device, every `check_every` batches
        if batch >= 0:
            raise NonFiniteLoss(None, batch + 1, self.lrs[batch])
        self.lrs.clear()


# ---------------------------------------------------------------------------- the history
# One row per epoch (what metrics.json keeps) and the line printed for it.
def epoch_row(epoch: int, train: dict[str, Any], val: dict[str, Any], seconds: float) -> dict[str, Any]:
    """One epoch's row of the history, from `train_one_epoch`'s and `evaluate`'s results."""
    return {
        "epoch": epoch,
        "train_loss": train["loss"], "train_accuracy": train["accuracy"],
        "train_balanced_accuracy": train["balanced_accuracy"],
        "val_loss": val["loss"], "val_accuracy": val["accuracy"],
        "val_balanced_accuracy": val["balanced_accuracy"],
        "lr": train["lr"], "lr_first": train["lr_first"], "lr_peak": train["lr_peak"],
        "seconds": seconds, "images_per_s": train["images_per_s"],
    }


def format_epoch(row: dict[str, Any], epochs: int) -> str:
    """The one summary line printed per epoch."""
    width = len(str(epochs))
    return (f"epoch {row['epoch']:>{width}}/{epochs}  "
            f"train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f} "
            f"bal {row['train_balanced_accuracy']:.3f}  |  "
            f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.3f} "
            f"bal {row['val_balanced_accuracy']:.3f}  |  "
            f"{_rates(row)}  {row['seconds']:.0f}s  "
            f"{row['images_per_s']:.{0 if row['images_per_s'] >= 10 else 1}f} img/s")


def _rates(row: dict[str, Any]) -> str:
    """The epoch's learning rate: one value if it stayed the same, else first→last, and the peak
    when it rose and fell within the epoch (a one-epoch one-cycle run ends near 0)."""
    last = row["lr"]
    first, peak = row.get("lr_first", last), row.get("lr_peak", last)  # a history saved before they were kept
    if first == last == peak:
        return f"lr {last:.2e}"
    return f"lr {first:.2e}→{last:.2e}" + (f" (peak {peak:.2e})" if peak > max(first, last) else "")
