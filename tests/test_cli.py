"""The command line, run in-process through skinlib.cli.main(argv)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from skinlib import cli, models
from skinlib.storage.checkpoint import load_checkpoint
from skinlib.config import TrainConfig
from skinlib.data import CLASSES, GROUND_TRUTH_CSV, IMAGES_DIR, eval_transform, load_index, open_image
from skinlib.models import SimpleCNN
from skinlib.layout import is_synthetic

# Small and short: SimpleCNN has 109 M parameters, an Adam step costs ~0.3 s on a CPU core.
def quick(max_batches: int = 2, workers: int = 0) -> list[str]:
    return ["--model", "simplecnn", "--no-pretrained", "--batch-size", "4",
            "--max-batches", str(max_batches), "--workers", str(workers), "--quiet"]


QUICK = quick()


def copy_dataset(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    return dest


# ---------------------------------------------------------------- check
def test_check_on_the_real_sample_exits_0_and_prints_the_class_counts(real_sample_dir, capsys):
    assert cli.main(["check", str(real_sample_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    truth = pd.read_csv(real_sample_dir / GROUND_TRUTH_CSV)
    for name in CLASSES:
        count = int(truth[name].sum())
        assert any(line.split()[:2] == [name, str(count)] for line in out.splitlines()), name
    assert "images: 70" in out


def test_check_on_a_folder_with_a_missing_image_exits_1_naming_it(real_sample_dir, tmp_path, capsys):
    data = copy_dataset(real_sample_dir, tmp_path / "data")
    victim = sorted((data / IMAGES_DIR).glob("*.jpg"))[5]
    victim.unlink()
    assert cli.main(["check", str(data), "--quiet"]) == 1
    assert victim.stem in capsys.readouterr().out


def test_check_on_a_folder_without_csvs_exits_1(tmp_path, capsys):
    (tmp_path / IMAGES_DIR).mkdir()
    assert cli.main(["check", str(tmp_path), "--quiet"]) == 1
    assert GROUND_TRUTH_CSV in capsys.readouterr().out


# ---------------------------------------------------------------- synth
def test_synth_writes_a_synthetic_dataset(tmp_path):
    assert cli.main(["synth", str(tmp_path / "syn"), "--n", "40", "--seed", "3"]) == 0
    assert is_synthetic(tmp_path / "syn")
    assert len(load_index(tmp_path / "syn")) == 40


def test_synth_with_too_few_images_is_a_usage_error(tmp_path, capsys):
    rc, err = run_cli(["synth", str(tmp_path / "syn"), "--n", "10"], capsys)
    assert rc == 2
    assert_one_line_error(err, "n must be at least")


# ---------------------------------------------------------------- train
@pytest.fixture(scope="module")
def finished_run(real_sample_dir, tmp_path_factory) -> Path:
    """A two-epoch SimpleCNN run on the 70 real sample images, made through the CLI."""
    run = tmp_path_factory.mktemp("runs") / "run"
    rc = cli.main(["train", "--data", str(real_sample_dir), "--epochs", "2", "--out", str(run), *QUICK])
    assert rc == 0
    return run


@pytest.mark.slow
def test_train_writes_every_output_file(finished_run):
    for name in ("metrics.json", "config.json", "split.csv", "checkpoint.pt", "curves.png", "confusion.png",
                 "model.pt"):
        assert (finished_run / name).is_file(), name
    for name in ("curves.png", "confusion.png"):
        data = (finished_run / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000


@pytest.mark.slow
def test_metrics_json_holds_the_run_and_its_test_results(finished_run, real_sample_dir):
    record = json.loads((finished_run / "metrics.json").read_text())
    assert TrainConfig.from_dict(record["config"]) == TrainConfig.from_dict(
        json.loads((finished_run / "config.json").read_text()))
    assert record["config"]["data"] == str(real_sample_dir) and record["config"]["epochs"] == 2
    assert [row["epoch"] for row in record["history"]] == [1, 2]
    assert all(isinstance(row["val_balanced_accuracy"], float) for row in record["history"])
    test = record["test"]
    for key in ("loss", "accuracy", "balanced_accuracy"):
        assert isinstance(test[key], float) and 0 <= test[key], key
    assert set(test["per_class"]) == set(CLASSES)
    assert set(test["per_class"]["MEL"]) == {"precision", "recall", "f1", "support"}
    assert set(test["roc_auc"]["per_class"]) == set(CLASSES)
    assert len(test["confusion_matrix"]) == 8 and all(len(row) == 8 for row in test["confusion_matrix"])
    assert record["classes"] == list(CLASSES)
    split = pd.read_csv(finished_run / "split.csv")
    assert record["split_sizes"] == split["split"].value_counts().reindex(["train", "val", "test"]).to_dict()
    assert record["device"].startswith("cpu")
    assert record["versions"]["torch"] == torch.__version__
    assert record["synthetic"] is False


@pytest.mark.slow
def test_split_csv_has_every_image_once_and_no_lesion_in_two_splits(finished_run, real_sample_dir):
    split = pd.read_csv(finished_run / "split.csv")
    index = load_index(real_sample_dir)
    assert sorted(split["image"]) == sorted(index["image"])
    assert split.groupby("group")["split"].nunique().max() == 1
    assert set(split["split"]) == {"train", "val", "test"}


@pytest.mark.slow
def test_reported_test_metrics_match_an_independent_evaluation_of_the_checkpoint(finished_run):
    # Reference: the checkpoint's weights applied image by image to the test split's JPEGs, in
    # split order (the test loader is not shuffled), scored by scikit-learn.
    record = json.loads((finished_run / "metrics.json").read_text())
    state = load_checkpoint(finished_run / "checkpoint.pt")
    assert state["epoch"] == 2
    model = SimpleCNN()
    model.load_state_dict(state["model"])
    model.eval()
    split = pd.read_csv(finished_run / "split.csv")
    index = load_index(record["config"]["data"]).set_index("image")
    test = split[split["split"] == "test"].head(record["test"]["n"])
    with torch.no_grad():
        images = torch.stack([eval_transform(224)(open_image(index.loc[i, "path"])) for i in test["image"]])
        preds = model(images).argmax(1).numpy()
    assert record["test"]["accuracy"] == pytest.approx(accuracy_score(test["label"], preds))
    assert record["test"]["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(test["label"], preds))


@pytest.mark.slow
def test_resume_on_a_finished_run_evaluates_without_training(finished_run, real_sample_dir, capsys):
    before = (finished_run / "checkpoint.pt").stat().st_mtime_ns, (finished_run / "split.csv").read_bytes()
    history = json.loads((finished_run / "metrics.json").read_text())["history"]
    rc = cli.main(["train", "--data", str(real_sample_dir), "--epochs", "2", "--out", str(finished_run),
                   "--resume", *QUICK])
    assert rc == 0
    out = capsys.readouterr().out
    assert "2 epoch(s) done" in out and "epoch 1/2" not in out
    assert ((finished_run / "checkpoint.pt").stat().st_mtime_ns, (finished_run / "split.csv").read_bytes()) == before
    assert json.loads((finished_run / "metrics.json").read_text())["history"] == history


@pytest.mark.slow
def test_train_refuses_to_overwrite_a_run_without_resume(finished_run, real_sample_dir, capsys):
    rc = cli.main(["train", "--data", str(real_sample_dir), "--epochs", "2", "--out", str(finished_run), *QUICK])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("error: ") and "--resume" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_limit_trains_on_a_stratified_subset(real_sample_dir, tmp_path):
    run = tmp_path / "run"
    rc = cli.main(["train", "--data", str(real_sample_dir), "--epochs", "1", "--limit", "35", "--out", str(run),
                   *quick(max_batches=1)])
    assert rc == 0
    split = pd.read_csv(run / "split.csv")
    assert len(split) == 35
    # every class keeps half its images (up to rounding)
    full = load_index(real_sample_dir)["label"].value_counts()
    assert (split["label"].value_counts().reindex(full.index) - full / 2).abs().max() <= 1
    assert json.loads((run / "metrics.json").read_text())["config"]["limit"] == 35


# ---------------------------------------------------------------- errors
def run_cli(argv, capsys) -> tuple[int, str]:
    rc = cli.main(argv)
    return rc, capsys.readouterr().err


def assert_one_line_error(err: str, *needles: str) -> None:
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


def test_train_on_a_broken_dataset_is_one_error_line(real_sample_dir, tmp_path, capsys):
    data = copy_dataset(real_sample_dir, tmp_path / "data")
    victim = sorted((data / IMAGES_DIR).glob("*.jpg"))[0]
    victim.unlink()
    rc, err = run_cli(["train", "--data", str(data), "--epochs", "1", "--out", str(tmp_path / "run"), *QUICK], capsys)
    assert rc == 1
    assert_one_line_error(err, victim.stem)


def test_an_unreadable_image_found_while_training_is_one_error_line(real_sample_dir, tmp_path, capsys):
    data = copy_dataset(real_sample_dir, tmp_path / "data")
    for path in (data / IMAGES_DIR).glob("*.jpg"):
        path.write_bytes(b"not a jpeg")  # every image, so whichever the loader reads first fails
    rc, err = run_cli(["train", "--data", str(data), "--epochs", "1", "--out", str(tmp_path / "run"),
                       *quick(workers=1)], capsys)
    assert rc == 1
    assert_one_line_error(err, ".jpg")


def test_unavailable_pretrained_weights_are_one_error_line(real_sample_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    # a closed local port: the download fails at once, as on a machine without network
    monkeypatch.setitem(models.WEIGHT_URLS, models.DEFAULT_WEIGHTS, "http://127.0.0.1:9/resnet50-0676ba61.pth")
    monkeypatch.setattr(models, "DOWNLOAD_BACKOFF", 0.0)  # the retries, without their waits
    rc, err = run_cli(["train", "--data", str(real_sample_dir), "--model", "resnet50", "--epochs", "1",
                       "--out", str(tmp_path / "run"), "--batch-size", "4", "--workers", "0", "--quiet"], capsys)
    assert rc == 1
    assert_one_line_error(err, "--no-pretrained", "--weights")


def test_a_corrupt_checkpoint_on_resume_is_one_error_line(real_sample_dir, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"\x00" * 100)
    rc, err = run_cli(["train", "--data", str(real_sample_dir), "--epochs", "1", "--out", str(run),
                       "--resume", *QUICK], capsys)
    assert rc == 1
    assert_one_line_error(err, "checkpoint.pt")


def test_a_corrupt_weights_file_is_one_error_line(real_sample_dir, tmp_path, capsys):
    weights = tmp_path / "resnet50.pth"
    weights.write_bytes(b"PK\x03\x04 cut short")
    rc, err = run_cli(["train", "--data", str(real_sample_dir), "--model", "resnet50", "--epochs", "1",
                       "--out", str(tmp_path / "run"), "--weights", str(weights), "--batch-size", "4",
                       "--max-batches", "1", "--workers", "0", "--quiet"], capsys)
    assert rc == 1
    assert_one_line_error(err, "resnet50.pth is not a readable PyTorch state_dict")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_is_one_error_line(real_sample_dir, tmp_path, capsys):
    rc, err = run_cli(["train", "--data", str(real_sample_dir), "--epochs", "1", "--out", str(tmp_path / "run"),
                       "--device", "cuda", *QUICK], capsys)
    assert rc == 1
    assert_one_line_error(err, "CUDA is not available", "Change runtime type")


def test_running_out_of_gpu_memory_is_one_line_naming_the_batch_size(tmp_path, monkeypatch, capsys):
    from skinlib import train

    def out_of_memory(config, resume=False):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.\n"
                                          "If reserved but unallocated memory is large try setting ...")

    monkeypatch.setattr(train, "run", out_of_memory)
    rc, err = run_cli(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--batch-size", "256"],
                      capsys)
    assert rc == 1
    assert_one_line_error(err, "batch size 256", "CUDA out of memory", "--batch-size, e.g. 128")


def test_a_diverged_run_is_one_line_naming_the_epoch_batch_and_learning_rate(tmp_path, monkeypatch, capsys):
    from skinlib import train
    from skinlib.engine import NonFiniteLoss

    def diverged(config, resume=False):
        raise NonFiniteLoss(epoch=2, batch=3, lr=0.7, history=[{"epoch": 1}])

    monkeypatch.setattr(train, "run", diverged)
    rc, err = run_cli(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run")], capsys)
    assert rc == 1
    assert_one_line_error(err, "epoch 2, batch 3", "learning rate (0.7)")


def kit_error_classes() -> list[type[Exception]]:
    """Every public exception class that a skinlib module defines (warnings are not errors)."""
    import importlib
    import inspect
    import pkgutil

    import skinlib

    classes = []
    for info in pkgutil.walk_packages(skinlib.__path__, "skinlib."):
        if info.name == "skinlib.__main__":  # importing it would run the command line
            continue
        module = importlib.import_module(info.name)
        classes += [value for name, value in vars(module).items()
                    if inspect.isclass(value) and issubclass(value, Exception)
                    and not issubclass(value, Warning) and value.__module__ == module.__name__ and not name.startswith("_")]
    return classes


def test_every_error_class_of_the_kit_derives_from_skinlib_error():
    from skinlib.distributed import DistributedError, PeerLost
    from skinlib.errors import SkinlibError
    from skinlib.storage.folders import FolderError

    classes = kit_error_classes()
    assert {FolderError, DistributedError, PeerLost, models.PretrainedWeightsUnavailable} <= set(classes)
    assert [c.__qualname__ for c in classes if not issubclass(c, SkinlibError)] == []


def test_the_command_line_reports_every_kit_error_as_one_line(tmp_path, monkeypatch, capsys):
    from skinlib import train

    for error_class in kit_error_classes():
        error = error_class.__new__(error_class)  # skips a custom __init__ (NonFiniteLoss's)
        Exception.__init__(error, f"{error_class.__name__} about {tmp_path / 'x.csv'}")

        def fails(config, resume=False):
            raise error

        monkeypatch.setattr(train, "run", fails)
        rc, err = run_cli(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run")], capsys)
        assert rc == 1, error_class
        assert_one_line_error(err, f"{error_class.__name__} about {tmp_path / 'x.csv'}")


def test_an_invalid_setting_is_a_usage_error(tmp_path, capsys):
    rc, err = run_cli(["train", "--data", str(tmp_path), "--epochs", "0", "--out", str(tmp_path / "run")], capsys)
    assert rc == 2
    assert_one_line_error(err, "epochs")


def test_a_missing_weights_file_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--out", str(tmp_path), "--weights", str(tmp_path / "nope.pth")])
    assert exit_info.value.code == 2
    assert "nope.pth is not a file" in capsys.readouterr().err


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "train" in capsys.readouterr().out


# ---------------------------------------------------------------- commands
def test_every_command_is_on_the_command_line():
    commands = cli.get_args_parser()._subparsers._group_actions[0].choices
    assert set(commands) == {"check", "synth", "train", "demo", "prepare", "download", "predict", "subset"}


# ---------------------------------------------------------------- demo
@pytest.mark.slow
def test_demo_runs_end_to_end_and_replaces_its_previous_run(tmp_path, monkeypatch, capsys):
    # The real demo trains for minutes; the same steps with 48 images and one batch per epoch.
    monkeypatch.setattr(cli, "DEMO_IMAGES", 48)
    monkeypatch.setitem(cli.DEMO_SETTINGS, "epochs", 1)
    monkeypatch.setitem(cli.DEMO_SETTINGS, "batch_size", 4)
    monkeypatch.setitem(cli.DEMO_SETTINGS, "max_batches", 1)
    monkeypatch.setitem(cli.DEMO_SETTINGS, "num_workers", 0)
    old_run = tmp_path / "demo" / "run"
    assert cli.main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    (old_run / "checkpoint.pt").write_bytes(b"an older run")  # replaced, not resumed
    capsys.readouterr()
    assert cli.main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"replacing the previous demo run in {old_run}" in out
    record = json.loads((old_run / "metrics.json").read_text())
    assert record["synthetic"] is True and record["config"]["model"] == "simplecnn"
    assert record["config"]["cache"] == str(tmp_path / "demo" / "cache")
    assert load_checkpoint(old_run / "checkpoint.pt")["epoch"] == 1
    assert "SYNTHETIC" in out and "balanced accuracy" in out and str(old_run) in out


def test_check_and_prepare_say_that_a_synthetic_set_is_synthetic(synthetic_dir, tmp_path, capsys):
    assert cli.main(["check", str(synthetic_dir), "--no-verify", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC data (skinlib synth)" in out and out.splitlines()[-1] == "  result: OK (SYNTHETIC data)"
    assert cli.main(["prepare", "--data", str(synthetic_dir), "--cache", str(tmp_path / "c"), "--quiet",
                 "--workers", "0"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out.splitlines()[-1]


def test_check_of_real_data_says_nothing_of_synthetic_data(real_sample_dir, capsys):
    assert cli.main(["check", str(real_sample_dir), "--no-verify", "--quiet"]) == 0
    assert "SYNTHETIC" not in capsys.readouterr().out


def test_check_piped_into_a_reader_that_has_gone_says_nothing_more(synthetic_dir):
    # `check DATA | head -3`: the reader closes the pipe; no "error: [Errno 32] Broken pipe".
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "skinlib", "check", str(synthetic_dir), "--no-verify",
                               "--quiet"], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.stderr == "" and done.returncode == 1


def test_an_output_that_cannot_encode_a_name_shows_a_replacement_not_a_traceback(tmp_path):
    # PYTHONIOENCODING=ascii stands for any such output (a Windows console, a C locale without UTF-8 mode).
    done = subprocess.run([sys.executable, "-m", "skinlib", "synth", str(tmp_path / "données"), "--n", "80"],
                          capture_output=True, env={**os.environ, "PYTHONIOENCODING": "ascii"}, timeout=120)
    assert done.returncode == 0 and done.stderr == b""
    assert done.stdout.decode("ascii").rstrip().endswith(f"images to {tmp_path}/donn?es")


def test_train_help_shows_the_defaults_of_the_recipe(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option, value in (("--epochs", 25), ("--batch-size", 64), ("--lr", "0.0007"), ("--seed", 0)):
        assert f"(default: {value})" in text.split(option, 2)[-1].split(" --", 1)[0], option
