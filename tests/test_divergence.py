"""A NaN or infinite loss stops training at the batch where it appeared, without a GPU wait per step."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from skinlib import engine
from skinlib.engine import LossWatch, NonFiniteLoss

CPU = torch.device("cpu")


class Served(Dataset):
    """Eight-by-eight batches of random features; batch `bad` (1-based) holds a NaN. Counts the items served."""

    def __init__(self, batches: int, bad: int | None, size: int = 8):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(batches * size, 4, generator=g), torch.arange(batches * size) % 3
        if bad is not None:
            self.x[(bad - 1) * size] = float("nan")
        self.served = 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.served += 1
        return self.x[i], self.y[i]


def test_on_a_cpu_training_stops_at_the_first_bad_batch_before_its_optimizer_step():
    data = Served(batches=6, bad=3)
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    with pytest.raises(NonFiniteLoss, match=r"at batch 3: .*learning rate \(0\.3\)") as caught:
        engine.train_one_epoch(model, DataLoader(data, batch_size=8), opt, CPU,
                               options=engine.LoopOptions(progress=False))
    assert (caught.value.batch, caught.value.epoch) == (3, None)
    assert data.served == 3 * 8  # batches 4 to 6 were never loaded

    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.3)  # the two good batches, by hand
    for i in range(2):
        ref_opt.zero_grad()
        nn.CrossEntropyLoss()(reference(data.x[i * 8:(i + 1) * 8]), data.y[i * 8:(i + 1) * 8]).backward()
        ref_opt.step()
    for mine, expected in zip(model.parameters(), reference.parameters()):
        assert torch.isfinite(mine).all()
        torch.testing.assert_close(mine, expected)  # no step was taken on the NaN loss


def test_looked_at_every_few_batches_the_note_still_names_the_first_bad_batch_and_its_learning_rate():
    watch = LossWatch(CPU, check_every=4)  # how a GPU run reads it, with 4 for 50
    finite, nan, inf = torch.tensor(2.0), torch.tensor(math.nan), torch.tensor(math.inf)
    for batch, (loss, lr) in enumerate([(finite, 1.0), (finite, 0.9), (finite, 0.8), (finite, 0.7),
                                        (finite, 0.6), (inf, 0.5), (nan, 0.4)]):
        watch.note(loss, batch, lr)  # batches 1-4 are looked at after batch 4: all finite
    with pytest.raises(NonFiniteLoss, match=r"at batch 6: .*learning rate \(0\.5\)") as caught:
        watch.note(finite, 7, 0.3)  # the second look, after batch 8
    assert caught.value.batch == 6


def test_a_bad_batch_after_the_last_look_is_caught_at_the_end_of_the_epoch():
    watch = LossWatch(CPU, check_every=4)
    watch.note(torch.tensor(1.0), 0, 0.1)
    watch.note(torch.tensor(math.nan), 1, 0.1)  # no look yet
    with pytest.raises(NonFiniteLoss, match="at batch 2:"):
        watch.finish()


def test_off_the_cpu_the_note_is_read_only_every_few_batches():
    # A tensor on the "meta" device has no value: reading one (a GPU wait on CUDA) raises.
    meta = torch.device("meta")
    watch = LossWatch(meta)
    assert LossWatch(CPU).check_every == 1 and watch.check_every == engine.CHECK_EVERY > 1
    for batch in range(engine.CHECK_EVERY - 1):
        watch.note(torch.tensor(1.0, device=meta), batch, 0.1)  # never read
    with pytest.raises(RuntimeError, match="meta"):
        watch.note(torch.tensor(1.0, device=meta), engine.CHECK_EVERY - 1, 0.1)  # read here


def test_finite_losses_raise_nothing():
    watch = LossWatch(CPU, check_every=3)
    for batch in range(10):
        watch.note(torch.tensor(float(batch)), batch, 0.1)
    watch.finish()
