"""Stopping a run whose loss turned NaN or infinite, at the batch where it happened.

A diverged run (most often a learning rate too high) produces a NaN or infinite loss, and every
step after it spoils the weights further. `LossWatch` notes, on the device, the first batch of
the epoch whose loss was not finite, and looks at that note only where looking costs nothing:

- on a CPU the loss is already in memory, so every batch is checked before its backward pass,
  and no optimizer step is ever taken on a non-finite loss;
- on a GPU reading a number waits for the GPU, so the note is read every `CHECK_EVERY` batches
  and at the end of the epoch; the error still names the first bad batch, and the run stops
  at the next check (the steps between spoil only weights that are thrown away: the
  checkpoint holds the last finished epoch);
- under torchrun every process reads the note at the same batches and they agree on the
  earliest bad batch of any of them (one collective), so all stop together.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from skinlib import distributed
from skinlib.errors import SkinlibError

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
