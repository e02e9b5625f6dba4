"""The course's optimizer and learning-rate schedule, built from a `TrainConfig`."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


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
