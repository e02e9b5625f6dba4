"""A model trained in smoke mode says so in its model.pt, and a full run does not use it."""
from __future__ import annotations

import pandas as pd
import torch

from skinlib.export import data_fingerprint, export_model, load_model
from skinlib.course import find_saved
from skinlib.models import build_model

FRAME = pd.DataFrame({"image": [f"i{k}" for k in range(8)], "label": list(range(8))})
SPLIT = pd.Series(["train"] * 4 + ["val"] * 2 + ["test"] * 2)


def _export(path, smoke):
    model = build_model("simplecnn", pretrained=False)
    return export_model(path, model, "simplecnn", data={"fingerprint": data_fingerprint(FRAME, SPLIT)}, smoke=smoke)


def test_model_file_records_smoke_mode(tmp_path):
    assert load_model(_export(tmp_path / "a" / "model.pt", smoke=True)).smoke is True
    assert load_model(_export(tmp_path / "b" / "model.pt", smoke=False)).smoke is False


def test_a_file_written_before_smoke_was_recorded_reads_as_not_smoke(tmp_path):
    path = _export(tmp_path / "model.pt", smoke=True)
    state = torch.load(path, weights_only=True)
    del state["smoke"]
    torch.save(state, path)
    assert load_model(path).smoke is False


def test_a_full_run_passes_over_a_smoke_model_saying_so(tmp_path, capsys):
    _export(tmp_path / "smoke" / "model.pt", smoke=True)
    _export(tmp_path / "full" / "model.pt", smoke=False)
    fingerprint = data_fingerprint(FRAME, SPLIT)
    found = find_saved([tmp_path / "smoke", tmp_path / "full"], fingerprint, smoke=False)
    assert found.path == str(tmp_path / "full" / "model.pt")
    assert f"{tmp_path / 'smoke' / 'model.pt'} was trained in SMOKE mode (a few batches): not used in a full run" \
        in capsys.readouterr().out
    assert find_saved([tmp_path / "smoke"], fingerprint, smoke=False) is None


def test_a_smoke_run_uses_a_smoke_model_and_labels_it(tmp_path, capsys):
    _export(tmp_path / "smoke" / "model.pt", smoke=True)
    found = find_saved([tmp_path / "smoke"], data_fingerprint(FRAME, SPLIT), smoke=True)
    assert found.smoke and "trained on this data and split in SMOKE mode" in capsys.readouterr().out


def test_train_records_a_run_cut_to_a_few_batches_as_smoke(synthetic_dir, tmp_path):
    from skinlib.config import TrainConfig
    from skinlib.train import run

    config = TrainConfig(data=str(synthetic_dir), out=str(tmp_path / "run"), model="simplecnn", epochs=1,
                         batch_size=2, max_batches=1, pretrained=False, num_workers=0, progress=False)
    run(config)
    assert load_model(tmp_path / "run" / "model.pt").smoke is True
