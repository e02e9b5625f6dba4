"""The training recipe: one typed object, and the optimizer and schedule built from it.

A `TrainConfig` is saved inside every checkpoint and every `metrics.json`, so a run can be
reproduced from its own files: `TrainConfig.from_dict(json.load(f)["config"])`.

The defaults are the course's ResNet-50 recipe: Adam (learning rate 7e-4, weight decay 1.5e-4),
gradient clipping at 0.1, a one-cycle learning-rate schedule stepped after every batch, 25 epochs.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from skinlib.splits import check_fractions


@dataclass
class TrainConfig:
    """Everything that decides what a training run does.

    `data` is the dataset folder (ISIC 2019 layout), `out` the folder the run writes to.
    Fields left at None are chosen at run time: `num_workers` from the CPU count, `device`
    by `device.select_device`. `limit` keeps N images drawn stratified by class with `seed`,
    before the split (quick experiments); `max_batches` stops every epoch after N batches
    (smoke tests); `cache` is the folder of prepared images written by
    `python -m skinlib prepare`.
    """

    data: str
    out: str
    model: str = "resnet50"
    epochs: int = 25
    batch_size: int = 64
    lr: float = 7e-4
    weight_decay: float = 1.5e-4
    grad_clip: float | None = 0.1
    pretrained: bool | None = None
    weights_path: str | None = None
    seed: int = 0
    limit: int | None = None
    image_size: int = 224
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    num_workers: int | None = None
    amp: bool = True
    channels_last: bool = True
    device: str | None = None
    cache: str | None = None
    progress: bool = True
    max_batches: int | None = None

    def __post_init__(self) -> None:
        # Paths are stored as strings so the config is plain JSON.
        for name in ("data", "out", "weights_path", "cache"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))
        self.fractions = tuple(float(f) for f in self.fractions)
        self._validate()

    def _validate(self) -> None:
        problems = []
        for name in ("epochs", "batch_size", "image_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        for name in ("limit", "max_batches"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                problems.append(f"{name} must be a positive integer or None, got {value!r}")
        if self.num_workers is not None and (not _is_int(self.num_workers) or self.num_workers < 0):
            problems.append(f"num_workers must be >= 0 or None, got {self.num_workers!r}")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**63:  # torch takes a signed 64-bit seed
            problems.append(f"seed must be an integer from 0 to 2**63 - 1, got {self.seed!r}")
        if not _is_number(self.lr) or self.lr <= 0:
            problems.append(f"lr must be > 0, got {self.lr!r}")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and (not _is_number(self.grad_clip) or self.grad_clip <= 0):
            problems.append(f"grad_clip must be > 0 or None, got {self.grad_clip!r}")
        try:
            check_fractions(self.fractions)  # the split's own rule, so a config never passes what it refuses
        except ValueError as err:
            problems.append(str(err))
        if self.pretrained is not None and not isinstance(self.pretrained, bool):
            problems.append(f"pretrained must be true, false or null, got {self.pretrained!r}")
        for name in ("amp", "channels_last", "progress"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (fractions become a list)."""
        d = dataclasses.asdict(self)
        d["fractions"] = list(self.fractions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Rebuild a config from `to_dict()` output (for example read back from JSON).

        Unknown keys are an error rather than being ignored: a key this version does not know
        means the file was written by another version and the run would not be reproduced.
        """
        if not isinstance(d, dict):
            raise TypeError(f"TrainConfig.from_dict needs a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown TrainConfig key(s): {', '.join(unknown)} "
                f"(known keys: {', '.join(sorted(known))})")
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.name not in d and f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING)
        if missing:
            raise ValueError(f"TrainConfig is missing required key(s): {', '.join(missing)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated like a new config)."""
        return dataclasses.replace(self, **changes)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
