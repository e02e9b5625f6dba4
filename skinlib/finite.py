"""A training loss that is NaN or infinite stops the run, naming the epoch and the batch.

Checking `loss.item()` every batch would make the CPU wait for the GPU at every step. Instead
`FiniteWatch` keeps, on the device, the number of the first batch whose loss was not finite and
that loss; `check()` reads them once, at the end of the epoch, where the loop syncs anyway. The
epoch's checkpoint is then never written: the last good one stays.
"""
from __future__ import annotations

import torch


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite; `epoch` and `batch` (1-based) say where."""

    def __init__(self, batch: int, value: float, epoch: int | None = None):
        super().__init__(batch, value, epoch)
        self.batch, self.value, self.epoch = batch, value, epoch

    def __str__(self) -> str:
        where = f"epoch {self.epoch}, " if self.epoch is not None else ""
        return f"the training loss became {self.value} at {where}batch {self.batch}"


class FiniteWatch:
    """The first non-finite loss of an epoch, noted without a device sync per batch."""

    def __init__(self, device: torch.device):
        self.first = torch.full((), -1, dtype=torch.long, device=device)
        self.value = torch.zeros((), device=device)
        self.batches = 0

    def update(self, loss: torch.Tensor) -> None:
        self.batches += 1
        new = (self.first < 0) & ~torch.isfinite(loss)
        self.first = torch.where(new, torch.full_like(self.first, self.batches), self.first)
        self.value = torch.where(new, loss.float(), self.value)

    def check(self) -> None:
        """Raise NonFiniteLoss if a batch's loss was not finite (one sync)."""
        batch = int(self.first.item())
        if batch >= 0:
            raise NonFiniteLoss(batch, float(self.value.item()))
