"""Saving and restoring the whole state of a training run, so a resumed run continues exactly.

`CheckpointPlan` is what `fit` is told about checkpoints: where to save the run after every
epoch, whether to continue from what is there, and what else to store with it.
`training_state` gathers what is saved (weights, optimizer, scheduler, scaler, every random
generator, the history and the config); `resume_training` checks that a checkpoint belongs to
this run and loads it back. Writing and reading the file is `checkpoint.py`'s job.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from skinlib import distributed
from skinlib.storage.checkpoint import (FORMAT_VERSION, CheckpointError, capture_rng_state,
                                check_compatible, load_checkpoint, restore_rng_state,
                                save_checkpoint)

# Config fields that change the course of training: a checkpoint is only resumed under the
# same values. Paths, device, worker count and display options may differ between sessions.
RESUME_MUST_MATCH = ("model", "epochs", "batch_size", "lr", "weight_decay", "grad_clip", "seed",
                     "limit", "image_size", "fractions", "max_batches")


@dataclass(frozen=True)
class CheckpointPlan:
    """`fit(..., checkpoint=CheckpointPlan(path, resume=True))`: save the run to `path` after
    every epoch and, with `resume`, continue from the checkpoint there (if there is one yet).
    `extra` (say, a record of the data) is stored in the checkpoint beside the run's state."""

    path: str | os.PathLike
    resume: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def start(self, model, optimizer, scheduler, scaler, config) -> list[dict[str, Any]]:
        """The history to continue from: the checkpoint's when resuming one, else none."""
        if not self.resume:
            return []
        if not os.path.exists(self.path):
            print(f"No checkpoint at {self.path} yet: starting at epoch 1")
            return []
        history = resume_training(self.path, model, optimizer, scheduler, scaler, config)
        print(f"Resuming from {self.path}: {len(history)} epoch(s) done")
        return history

    def save(self, model, optimizer, scheduler, scaler, history, config, num_classes) -> None:
        """Write the run after `len(history)` epochs (process 0 alone, under torchrun)."""
        if distributed.is_main_process():
            state = training_state(model, optimizer, scheduler, scaler, history, config, num_classes)
            save_checkpoint(self.path, {**state, **self.extra})


def training_state(model, optimizer, scheduler, scaler, history, config, num_classes) -> dict[str, Any]:
    """Everything `resume_training` needs to continue a run after `len(history)` epochs."""
    model = distributed.unwrap(model)  # under torchrun: the network inside DistributedDataParallel
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
        "processes": distributed.world_size(),  # each process reads its share of every epoch
    }


def _plain_state(state: dict[str, Any]) -> dict[str, Any]:
    """A scheduler's state without functions, which weights_only loading refuses.

    OneCycleLR of torch < 2.4 keeps its annealing function in its state; the constructor sets it
    again, so nothing is lost by leaving it out.
    """
    return {k: v for k, v in state.items() if not callable(v)}


def resume_training(path, model, optimizer, scheduler, scaler, config) -> list[dict[str, Any]]:
    """Load a checkpoint into the given objects; return its history.

    Refuses (CheckpointError) a checkpoint of another architecture or number of classes, of a
    run with other `RESUME_MUST_MATCH` settings, or saved with(out) a scheduler this run lacks (has).
    """
    model = distributed.unwrap(model)
    state = load_checkpoint(path, map_location="cpu")
    check_compatible(state, model, path=path, config=config)
    if state.get("processes", 1) != distributed.world_size():
        raise CheckpointError(f"checkpoint {path} was written by {state.get('processes', 1)} processes, "
                              f"this run has {distributed.world_size()}: resume with as many")
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
