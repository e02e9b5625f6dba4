"""`python -m skinlib predict` on the real sample images, with a model trained here through the CLI."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

from skinlib import cli
from skinlib.data import CLASSES, IMAGES_DIR, eval_transform, load_index, open_image
from skinlib.export import data_fingerprint, load_model
from skinlib.splits import load_split

pytestmark = pytest.mark.slow  # every test here uses a trained model


@pytest.fixture(scope="module")
def run(real_sample_dir, tmp_path_factory):
    """A one-batch SimpleCNN run on the 70 real sample images; it writes RUN/model.pt."""
    out = tmp_path_factory.mktemp("predict") / "run"
    rc = cli.main(["train", "--data", str(real_sample_dir), "--out", str(out), "--model", "simplecnn",
                   "--no-pretrained", "--epochs", "1", "--batch-size", "4", "--max-batches", "1",
                   "--workers", "0", "--quiet"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def images(real_sample_dir):
    return sorted((real_sample_dir / IMAGES_DIR).glob("*.jpg"))


def reference_probs(model_file, paths) -> torch.Tensor:
    """Image by image, outside predict: the model file's weights, the eval transform, softmax."""
    model = load_model(model_file).model
    with torch.no_grad():
        return torch.cat([model(eval_transform()(open_image(p))[None]).softmax(1) for p in paths])


def one_line_error(err: str, *needles: str) -> None:
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def test_train_exports_the_model_with_its_runs_data_fingerprint(run, real_sample_dir):
    exported = load_model(run / "model.pt")
    assert exported.architecture == "simplecnn" and exported.classes == list(CLASSES)
    saved = load_split(run / "split.csv")
    frame = load_index(real_sample_dir).set_index("image").loc[saved["image"]].reset_index()
    assert exported.data["fingerprint"] == data_fingerprint(frame, pd.Series(saved["split"].to_numpy()))
    assert exported.data["images"] == 70 and exported.data["synthetic"] is False
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert exported.metrics == {"accuracy": test["accuracy"], "balanced_accuracy": test["balanced_accuracy"]}


def test_top_k_per_image_match_the_model_applied_by_hand(run, images, capsys):
    chosen = images[:2]
    assert cli.main(["predict", *map(str, chosen), "--model", str(run / "model.pt"), "--top-k", "2",
                     "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    reference = reference_probs(run / "model.pt", chosen)
    for line, path, probs in zip(lines, chosen, reference):
        values, indices = probs.topk(2)
        expected = f"{path}: " + "  ".join(f"{CLASSES[i]} {v:.3f}" for v, i in zip(values, indices))
        assert line == expected


def test_a_folder_goes_in_batches_to_a_csv_whose_probabilities_sum_to_one(run, images, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    images = images[::5]  # 14 of the 70 real images: 4 batches of up to 4
    for path in images:
        shutil.copy(path, folder)
    csv = tmp_path / "out" / "predictions.csv"
    assert cli.main(["predict", str(folder), "--model", str(run / "model.pt"), "--csv", str(csv),
                     "--batch-size", "4"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == f"wrote 14 rows to {csv}"
    assert [line.split(": ")[0] for line in captured.out.splitlines()[:-1]] == [str(folder / p.name) for p in images]
    assert "predict" in captured.err  # the progress bar
    table = pd.read_csv(csv)
    assert table["image"].tolist() == [str(folder / p.name) for p in images]
    probs = table[list(CLASSES)].to_numpy()
    assert abs(probs.sum(axis=1) - 1).max() < 1e-5
    assert (table["predicted"] == [CLASSES[k] for k in probs.argmax(axis=1)]).all()
    reference = reference_probs(run / "model.pt", images[::4])
    assert abs(probs[::4] - reference.numpy()).max() < 1e-5


def test_cam_writes_one_overlay_per_image_and_a_rerun_refreshes_them(run, images, tmp_path, capsys):
    out = tmp_path / "cams"
    argv = ["predict", *map(str, images[:1]), "--model", str(run / "model.pt"), "--cam", str(out), "--quiet"]
    assert cli.main(argv) == 0
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == [f"{images[0].stem}_gradcam.png"]
    assert all((out / name).read_bytes().startswith(b"\x89PNG") for name in written)
    assert cli.main(argv) == 0
    capsys.readouterr()


def test_cam_refuses_a_folder_it_did_not_write(run, images, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert cli.main(["predict", str(images[0]), "--model", str(run / "model.pt"), "--cam",
                     str(tmp_path / "mine"), "--quiet"]) == 1
    one_line_error(capsys.readouterr().err, "mine", "holds files skinlib did not write (notes.txt)")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_a_damaged_image_is_one_error_line_naming_it(run, images, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(images[0].read_bytes()[:3000])
    shutil.copy(images[1], tmp_path / "good.jpg")
    assert cli.main(["predict", str(tmp_path), "--model", str(run / "model.pt"), "--quiet"]) == 1
    one_line_error(capsys.readouterr().err, "broken.jpg")


@pytest.mark.parametrize("what", ["image", "model", "csv"])
def test_missing_inputs_and_an_existing_csv_are_one_error_line(run, images, tmp_path, capsys, what):
    argv = {"image": ["predict", str(tmp_path / "nope.jpg"), "--model", str(run / "model.pt")],
            "model": ["predict", str(images[0]), "--model", str(tmp_path / "nope.pt")],
            "csv": ["predict", str(images[0]), "--model", str(run / "model.pt"), "--csv", str(run / "split.csv")]}
    assert cli.main([*argv[what], "--quiet"]) == 1
    one_line_error(capsys.readouterr().err, {"image": "nope.jpg", "model": "nope.pt", "csv": "split.csv"}[what])
