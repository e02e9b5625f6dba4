"""Checkpoints: atomic writes, safe loading, clear refusals."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from skinlib.storage.checkpoint import (CheckpointError, capture_rng_state, check_compatible,
                                load_checkpoint, restore_rng_state, save_checkpoint)
from skinlib.config import TrainConfig


def make_state(model: nn.Module, epoch: int = 1, num_classes: int = 3, config=None) -> dict:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, model.in_features)).sum().backward()
    optimizer.step()  # so the optimizer has state (exp_avg, step) to save
    return {
        "format_version": 1, "epoch": epoch, "model_class": type(model).__name__,
        "num_classes": num_classes, "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "scheduler": None, "scaler": {},
        "rng": capture_rng_state(), "history": [{"epoch": epoch, "val_loss": 0.5}],
        "config": (config or TrainConfig(data="d", out="o")).to_dict(),
    }


def assert_same(a, b):
    """Recursive equality with torch.equal for tensors."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def test_checkpoint_round_trip_keeps_every_tensor_and_value(tmp_path):
    state = make_state(nn.Linear(4, 3))
    path = save_checkpoint(tmp_path / "run" / "checkpoint.pt", state)
    assert_same(load_checkpoint(path), state)
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]  # no temporary left


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint(tmp_path / "c.pt", make_state(nn.Linear(4, 3)))
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    old = make_state(nn.Linear(4, 3), epoch=1)
    save_checkpoint(path, old)
    real_save = torch.save

    def save_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.seek(0)
        f.truncate(1000)  # some bytes are on disk, then the "disk" fails
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*checkpoint\.pt.*No space"):
        save_checkpoint(path, make_state(nn.Linear(4, 3), epoch=2))
    monkeypatch.undo()
    assert_same(load_checkpoint(path), old)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_interrupt_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, make_state(nn.Linear(4, 3), epoch=1))

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, make_state(nn.Linear(4, 3), epoch=2))
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_ctrl_c_that_torchs_writer_turns_into_an_error_is_still_an_interrupt(tmp_path, monkeypatch):
    # torch.save cut short by Ctrl-C fails on closing the archive: a RuntimeError whose context
    # is the KeyboardInterrupt. It is the user's Ctrl-C, not a write error.
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, make_state(nn.Linear(4, 3), epoch=1))

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1 vs 2") from None

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, make_state(nn.Linear(4, 3), epoch=2))
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1


def test_truncated_checkpoint_is_reported_with_its_name(tmp_path):
    path = save_checkpoint(tmp_path / "cut.pt", make_state(nn.Linear(4, 3)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt is truncated"):
        load_checkpoint(path)


def test_empty_checkpoint_is_reported(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt is empty"):
        load_checkpoint(tmp_path / "empty.pt")


def test_missing_checkpoint_is_reported(tmp_path):
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*absent\.pt"):
        load_checkpoint(tmp_path / "absent.pt")


class Payload:
    """An arbitrary class: unpickling it would import and run code of the file's choosing."""

    def __init__(self):
        self.note = "not a tensor"


def test_pickled_object_is_refused_under_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    state = make_state(nn.Linear(4, 3))
    state["extra"] = Payload()
    torch.save(state, path)  # a plain torch.save can hold any object
    with pytest.raises(CheckpointError, match=r"evil\.pt holds a pickled Python object and is "
                                              r"refused.*weights_only=True.*arbitrary code"):
        load_checkpoint(path)


def test_file_that_is_not_a_training_checkpoint_is_reported(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match=r"weights\.pt is not a training checkpoint"):
        load_checkpoint(tmp_path / "weights.pt")


def test_checkpoint_of_another_architecture_is_refused_naming_the_difference(tmp_path):
    state = make_state(nn.Linear(4, 3))
    other = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(CheckpointError, match=r"run\.pt comes from another architecture \(Linear\) "
                                              r"than the model \(Sequential\).*0\.weight"):
        check_compatible(state, other, path="run.pt")


def test_checkpoint_with_another_number_of_classes_is_refused_naming_both(tmp_path):
    state = make_state(nn.Linear(4, 8), num_classes=8)
    with pytest.raises(CheckpointError, match=r"run\.pt was trained for 8 classes, the model has 5 "
                                              r"outputs \(weight: \(8, 4\)"):
        check_compatible(state, nn.Linear(4, 5), path="run.pt")


def test_checkpoint_with_another_model_name_in_its_config_is_refused():
    state = make_state(nn.Linear(4, 3), config=TrainConfig(data="d", out="o", model="simplecnn"))
    with pytest.raises(CheckpointError, match=r"trained with model 'simplecnn', this run builds 'resnet50'"):
        check_compatible(state, nn.Linear(4, 3), path="run.pt",
                         config=TrainConfig(data="d", out="o", model="resnet50"))


def test_compatible_checkpoint_passes_the_check():
    check_compatible(make_state(nn.Linear(4, 3)), nn.Linear(4, 3), path="run.pt",
                     config=TrainConfig(data="elsewhere", out="o"))
