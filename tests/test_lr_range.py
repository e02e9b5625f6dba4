"""The learning-rate range test: geometric rates, the model put back, divergence stops it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from skinlib import checks
from skinlib.lr_range import lr_range_test, plot_lr_range, suggest_lr


def _loader(n_batches=4):
    torch.manual_seed(0)
    return [(torch.randn(8, 3, 8, 8), torch.randint(0, 8, (8,))) for _ in range(n_batches)]


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 8))


def test_rates_are_geometric_from_start_to_end_and_the_model_is_put_back():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = lr_range_test(model, _loader(), "cpu", start=1e-5, end=1e-2, steps=10)  # cycles the 4 batches
    assert np.allclose(result["lr"], np.geomspace(1e-5, 1e-2, 10))
    assert len(result["loss"]) == 10 and all(np.isfinite(result["loss"]))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights and BN statistics


def test_the_first_smoothed_loss_is_the_first_batchs_loss():
    model, loader = _model(), _loader(1)
    model.train()
    with torch.no_grad():
        first = nn.functional.cross_entropy(model(loader[0][0]), loader[0][1]).item()
    assert lr_range_test(model, loader, "cpu", steps=1)["loss"][0] == pytest.approx(first, rel=1e-5)


def test_a_diverging_loss_stops_the_test_early():
    result = lr_range_test(_model(), _loader(), "cpu", start=1e-3, end=1e6, steps=60)
    assert len(result["lr"]) < 60


def test_the_suggestion_is_a_tenth_of_the_rate_of_the_lowest_loss():
    result = {"lr": [1e-4, 1e-3, 1e-2, 1e-1], "loss": [2.0, 1.5, 1.2, 3.0]}
    assert suggest_lr(result) == pytest.approx(1e-3)
    fig = plot_lr_range(result, suggest_lr(result))
    assert fig.axes[0].get_xscale() == "log"


def test_skinlibs_suggestion_passes_its_check(capsys):
    assert checks.check_lr_suggestion(suggest_lr) is True
    assert "✓ suggested learning rate: a tenth of the rate of the lowest loss" in capsys.readouterr().out
