"""skinlib.distributed: what changes under torchrun, and that nothing changes without it."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from skinlib import distributed
from skinlib.sampling import ShuffleWithSeeds


# ---------------------------------------------------------------- without torchrun
def test_without_torchrun_nothing_is_distributed(monkeypatch):
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    assert distributed.launched() is None
    with distributed.torchrun_session("cpu") as launch:
        assert launch is None and not distributed.is_active()
        model = nn.Linear(2, 2)
        assert distributed.wrap(model) is model
        assert type(distributed.train_sampler(5, torch.Generator())) is ShuffleWithSeeds
        assert distributed.eval_sampler(5) is None
        loss = torch.tensor(3.0)
        assert distributed.sum_across_processes(loss, None, 7) == (loss, 7)
    assert distributed.is_main_process()


def test_a_partial_torchrun_environment_is_refused_naming_the_missing_variables(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(distributed.DistributedError, match="WORLD_SIZE, LOCAL_RANK unset"):
        distributed.launched()


def test_process_shares_cover_the_epoch_once_in_the_same_order_and_seeds():
    n, generator = 11, torch.Generator()
    whole = list(ShuffleWithSeeds(n, generator.manual_seed(5)))
    shares = [list(distributed.ShuffleShard(n, generator.manual_seed(5), r, 3)) for r in range(3)]
    assert [len(s) for s in shares] == [4, 4, 4]  # padded: every process takes the same steps
    # step k of the three processes together holds pairs 3k, 3k+1, 3k+2 of the whole order
    steps = [pair for k in range(4) for share in shares for pair in share[k:k + 1]]
    assert steps[:n] == whole and steps[n:] == whole[:1]


def test_evaluation_shares_cover_every_image_once():
    shares = [list(distributed.EvalShard(7, r, 2)) for r in range(2)]
    assert shares == [[0, 2, 4, 6], [1, 3, 5]]
    with pytest.raises(distributed.DistributedError, match="1 image"):
        distributed.EvalShard(1, 0, 2)
