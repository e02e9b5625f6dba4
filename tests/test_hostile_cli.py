"""The command line against a hostile user: every bad invocation ends as one line.

Each case sets up a bad input (a file where a folder belongs, user files under the names the
kit uses, a cache of other data, a checkpoint of another run, an option that cannot work ...),
runs `skinlib.cli.main` in this process and checks what the user sees: exit status 1 (2 for a
usage error), exactly one line on stderr, starting `error: ` and naming the file, row, option
or address at fault, and no traceback. Cases that plant user files also check that those files
are untouched. data/README.md, section 7, lists what each case shows.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import torch

from skinlib import cli
from skinlib.data import GROUND_TRUTH_CSV, IMAGES_DIR, METADATA_CSV
from skinlib.storage.folders import claim_folder
from skinlib.models import build_model
from unprivileged import as_user, give_to_user, user_folder  # noqa: F401 (user_folder: a fixture)

# The smallest settings that train: SimpleCNN from scratch, one batch of 8 per epoch, on the CPU.
QUICK = ["--model", "simplecnn", "--no-pretrained", "--epochs", "1", "--batch-size", "8",
         "--max-batches", "1", "--workers", "0", "--quiet", "--device", "cpu", "--no-amp"]


@dataclass
class Kit:
    """What the cases start from: a dataset, its prepared cache and one finished run."""

    data: Path
    cache: Path
    run: Path
    tmp: Path

    def copy_data(self, name: str = "copy") -> Path:
        return Path(shutil.copytree(self.data, self.tmp / name))

    def train(self, *extra, data: Path | None = None, out: Path | None = None) -> list:
        return ["train", "--data", data or self.data, "--out", out or self.tmp / "run", *QUICK, *extra]


def tiny_network(name, num_classes, **_):
    """A stand-in for the named network: these cases test the command line, not the network,
    and SimpleCNN's 108 M weights would make every checkpoint 1.3 GB to write."""
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 8, stride=8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(4, num_classes))


@pytest.fixture(scope="module")
def kit(synthetic_dir, synthetic_cache, tmp_path_factory) -> Kit:
    """The session's synthetic set and its cache (which no case writes into), and a run on them."""
    root = tmp_path_factory.mktemp("hostile")
    run = root / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("skinlib.train.build_model", tiny_network)
        assert run_cli(["train", "--data", synthetic_dir, "--cache", synthetic_cache, "--out", run, *QUICK])[0] == 0
    return Kit(synthetic_dir, synthetic_cache, run, root)


@pytest.fixture
def hostile(kit, tmp_path, monkeypatch) -> Kit:
    """The module's kit, with a fresh folder for each case's own files."""
    monkeypatch.setattr("skinlib.train.build_model", tiny_network)
    hostile = Kit(kit.data, kit.cache, kit.run, tmp_path)
    hostile.patch = monkeypatch
    return hostile


def run_cli(argv: list) -> tuple[int, str, str]:
    """`main(argv)` with stdout and stderr captured; warnings printed to stderr as a user sees them."""
    out, err = _Capture(), _Capture()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: \
            sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
        try:
            status = cli.main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse ends a usage error this way
            status = exit_.code
    return status, out.getvalue(), err.getvalue()


class _Capture:
    def __init__(self):
        self.parts = []

    def write(self, text):
        self.parts.append(text)
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False

    def getvalue(self):
        return "".join(self.parts)


# ---------------------------------------------------------------- the cases
@dataclass
class Case:
    """`make(kit)` sets up the bad input and returns (argv, text the error must contain, check),
    where `check()` (or None) asserts afterwards that nothing of the user's was lost."""

    make: Callable
    status: int = 1


CASES: dict[str, Case] = {}


def case(status: int = 1):
    def add(make):
        CASES[make.__name__] = Case(make, status)
        return make
    return add


def link_copy(source: Path, target: Path) -> Path:
    """A copy of `source` whose large files (checkpoints, images) are hard links: cheap, and
    safe as long as a case replaces such a file rather than writing into it."""
    def copy(src, dst):
        if os.path.getsize(src) > 1 << 20:
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)
    return Path(shutil.copytree(source, target, copy_function=copy))


def planted(folder: Path, *names: str) -> Callable[[], None]:
    """Write user files under `names` in `folder`; return a check that they are unchanged."""
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"the user's own {name}")

    def unchanged():
        for name in names:
            assert (folder / name).read_text() == f"the user's own {name}", f"{name} was touched"
    return unchanged


# -- nothing the kit did not write is touched
@case()
def prepare_into_a_folder_holding_the_users_cache_like_files(k):
    folder = k.tmp / "mine"
    check = planted(folder, "index-mine.csv", "images-0000000000000000.npy", "progress-0.npy")
    return ["prepare", "--data", k.data, "--cache", folder, "--quiet"], str(folder), check


@case()
def train_into_a_folder_holding_the_users_config_and_metrics(k):
    folder = k.tmp / "mine"
    check = planted(folder, "config.json", "metrics.json")
    return k.train(out=folder), str(folder), check


@case()
def synth_into_a_folder_of_the_users(k):
    check = planted(k.tmp / "mine", "thesis.docx")
    return ["synth", k.tmp / "mine", "--n", "80"], str(k.tmp / "mine"), check


@case()
def download_into_a_folder_of_the_users(k):
    check = planted(k.tmp / "mine", "holiday.jpg", ".extracting/mine.txt")
    return ["download", k.tmp / "mine", "--base-url", "http://127.0.0.1:9/", "--no-progress"], \
        str(k.tmp / "mine"), check


@case()
def demo_into_a_folder_of_the_users(k):
    check = planted(k.tmp / "mine", "run/config.json")
    return ["demo", "--out", k.tmp / "mine", "--quiet"], str(k.tmp / "mine"), check


@case()
def prepare_into_the_dataset_folder_itself(k):
    data = k.copy_data()
    return ["prepare", "--data", data, "--cache", data, "--quiet"], str(data), None


@case()
def prepare_into_a_run_folder(k):
    return ["prepare", "--data", k.data, "--cache", k.run, "--quiet"], "not a cache folder", None


# -- nothing stale is used silently
@case()
def train_on_other_data_with_a_cache_of_this_data(k):
    other = k.copy_data("other")
    return k.train("--cache", k.cache, data=other), str(k.cache), None


@case()
def train_with_a_cache_after_an_image_was_replaced(k):
    data = k.copy_data()
    cache = k.tmp / "cache"
    assert run_cli(["prepare", "--data", data, "--cache", cache, "--quiet", "--workers", "1"])[0] == 0
    images = sorted((data / IMAGES_DIR).glob("*.jpg"))
    shutil.copyfile(images[1], images[0])
    return k.train("--cache", cache, data=data), images[0].name, None


@case()
def train_with_a_cache_after_an_image_was_removed_from_the_data(k):
    data = k.copy_data()
    cache = k.tmp / "cache"
    assert run_cli(["prepare", "--data", data, "--cache", cache, "--quiet", "--workers", "1"])[0] == 0
    truth = pd.read_csv(data / GROUND_TRUTH_CSV, dtype=str)
    for name in (GROUND_TRUTH_CSV, METADATA_CSV):
        pd.read_csv(data / name, dtype=str).iloc[1:].to_csv(data / name, index=False)
    (data / IMAGES_DIR / f"{truth['image'][0]}.jpg").unlink()
    return k.train("--cache", cache, data=data), "1 removed", None


@case()
def resume_a_run_on_another_dataset(k):
    run = link_copy(k.run, k.tmp / "run")
    other = k.copy_data("other")
    truth = pd.read_csv(other / GROUND_TRUTH_CSV)
    truth.iloc[:, 1:] = truth.iloc[::-1, 1:].to_numpy()  # the same images, other labels
    truth.to_csv(other / GROUND_TRUTH_CSV, index=False)
    return k.train("--resume", data=other, out=run), "other data", None


@case()
def resume_with_a_split_that_is_not_the_checkpoints(k):
    run = link_copy(k.run, k.tmp / "run")
    split = pd.read_csv(run / "split.csv")
    split["split"] = split["split"].sample(frac=1, random_state=1).to_numpy()
    split.to_csv(run / "split.csv", index=False)
    return k.train("--resume", "--cache", k.cache, out=run), "split.csv", None


@case()
def resume_on_a_split_left_by_a_failed_run_with_other_settings(k):
    run = link_copy(k.run, k.tmp / "run")
    (run / "checkpoint.pt").unlink()
    return k.train("--resume", "--limit", "100", out=run), "split.csv", None


@case()
def resume_with_other_pretrained_settings(k):
    run = link_copy(k.run, k.tmp / "run")
    argv = [a for a in k.train("--resume", "--cache", k.cache, out=run) if a != "--no-pretrained"]
    return argv, "pretrained", None


@case()
def a_second_run_into_a_run_folder_in_use(k):
    run = k.tmp / "run"
    holder = contextlib.ExitStack()
    holder.enter_context(claim_folder(run, "run").lock("a run"))
    k.hold = holder  # released when the case ends
    return k.train(out=run), "in use", None


@case()
def train_again_into_a_finished_run_without_resume(k):
    return k.train(out=k.run), str(k.run), None


# -- settings that cannot work are refused before training
@case()
def limit_too_small_to_split(k):
    return k.train("--limit", "5"), "--limit", None


@case()
def batch_size_larger_than_the_training_split(k):
    argv = k.train("--limit", "40")
    argv[argv.index("--batch-size") + 1] = "500"
    return argv, "--batch-size", None


@case()
def cache_smaller_than_the_crop(k):
    cache = k.tmp / "small"
    assert run_cli(["prepare", "--data", k.data, "--cache", cache, "--size", "64", "--quiet",
                    "--workers", "1"])[0] == 0
    return k.train("--cache", cache), str(cache), None


@case(status=2)
def device_gpu(k):
    return k.train("--device", "gpu"), "--device", None


@case(status=2)
def device_cuda_with_a_bad_index(k):
    return k.train("--device", "cuda:x"), "--device", None


@case()
def device_cuda_on_a_machine_without_one(k):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return k.train("--device", "cuda"), "cuda", None


@case(status=2)
def seed_too_large(k):
    return k.train("--seed", str(2 ** 70)), "seed", None


@case(status=2)
def seed_negative(k):
    return k.train("--seed", "-1"), "seed", None


@case(status=2)
def learning_rate_not_a_number(k):
    return k.train("--lr", "nan"), "lr", None


@case(status=2)
def learning_rate_zero(k):
    return k.train("--lr", "0"), "lr", None


@case(status=2)
def epochs_zero(k):
    return k.train("--epochs", "0"), "epochs", None


@case(status=2)
def workers_negative(k):
    return k.train("--workers", "-1"), "workers", None


@case(status=2)
def epochs_not_an_integer(k):
    return k.train("--epochs", "abc"), "--epochs", None


@case(status=2)
def model_unknown(k):
    return k.train("--model", "foo"), "--model", None


@case(status=2)
def train_without_out(k):
    return ["train", "--data", k.data], "--out", None


@case(status=2)
def weights_file_missing(k):
    return k.train("--weights", k.tmp / "none.pth"), "none.pth", None


@case(status=2)
def unknown_command(k):
    return ["frobnicate"], "frobnicate", None


@case(status=2)
def prepare_size_below_eight(k):
    return ["prepare", "--data", k.data, "--cache", k.tmp / "c", "--size", "4", "--quiet"], "--size", None


@case(status=2)
def prepare_workers_negative(k):
    return ["prepare", "--data", k.data, "--cache", k.tmp / "c", "--workers", "-1", "--quiet"], "--workers", None


@case(status=2)
def synth_too_few_images(k):
    return ["synth", k.tmp / "s", "--n", "5"], "--n", None


@case(status=2)
def predict_device_gpu(k):
    return ["predict", k.data, "--model", k.run / "model.pt", "--device", "gpu"], "--device", None


@case(status=2)
def predict_top_k_zero(k):
    return ["predict", k.data, "--model", k.run / "model.pt", "--top-k", "0"], "--top-k", None


@case(status=2)
def device_that_torch_names_but_nothing_trains_on(k):
    return k.train("--device", "meta"), "--device", None


@case(status=2)
def synth_seed_negative(k):
    return ["synth", k.tmp / "s", "--n", "80", "--seed", "-1"], "--seed", None


@case()
def out_written_as_tilde_name_of_no_user(k):  # `~runs` typed for `~/runs`: the shell leaves it as it is
    return ["synth", "~no-such-user-skinlib/runs", "--n", "80"], \
        "~no-such-user-skinlib/runs: there is no user 'no-such-user-skinlib' for ~no-such-user-skinlib to stand for", \
        None


@case(status=2)
def subset_seed_negative(k):
    return ["subset", k.data, k.tmp / "mirror", "--fraction", "0.5", "--seed", "-1"], \
        "argument --seed: must be at least 0, got -1", None


@case(status=2)
def subset_fraction_written_as_a_percentage(k):
    return ["subset", k.data, k.tmp / "mirror", "--fraction", "50%"], \
        "argument --fraction: '50%' is not a number", None


@case()
def subset_fraction_that_keeps_no_image(k):
    data = k.copy_data()
    k.patch.setattr("skinlib.acquire.subset.is_synthetic", lambda _: False)  # it stands for a download here

    def nothing_written():
        assert not (k.tmp / "mirror").exists()
    return ["subset", data, k.tmp / "mirror", "--fraction", "0.0001"], "--fraction 0.0001 keeps none", \
        nothing_written


@case()
def weights_file_that_is_not_weights(k):
    weights = k.tmp / "weights.pth"
    weights.write_text("not weights")
    k.patch.setattr("skinlib.train.build_model", build_model)  # the real one reads the file
    argv = [a for a in k.train("--weights", weights) if a != "--no-pretrained"]
    argv[argv.index("simplecnn")] = "resnet50"
    return argv, str(weights), None


# -- files and folders in the wrong place
@case()
def out_is_a_file(k):
    (k.tmp / "file").write_text("x")
    return k.train(out=k.tmp / "file"), str(k.tmp / "file"), None


@case()
def cache_is_a_file(k):
    (k.tmp / "file").write_text("x")
    return k.train("--cache", k.tmp / "file"), str(k.tmp / "file"), None


@case()
def prepare_cache_is_a_file(k):
    (k.tmp / "file").write_text("x")
    return ["prepare", "--data", k.data, "--cache", k.tmp / "file", "--quiet"], str(k.tmp / "file"), None


@case()
def out_below_a_file(k):
    (k.tmp / "file").write_text("x")
    return k.train(out=k.tmp / "file" / "run"), str(k.tmp / "file"), None


@case()
def synth_out_is_a_file(k):
    (k.tmp / "file").write_text("x")
    return ["synth", k.tmp / "file", "--n", "80"], str(k.tmp / "file"), None


@case()
def download_into_a_file(k):
    (k.tmp / "file").write_text("x")
    return ["download", k.tmp / "file", "--no-progress"], str(k.tmp / "file"), None


@case()
def demo_out_is_a_file(k):
    (k.tmp / "file").write_text("x")
    return ["demo", "--out", k.tmp / "file", "--quiet"], str(k.tmp / "file"), None


@case()
def data_is_the_images_folder(k):
    return k.train(data=k.data / IMAGES_DIR), IMAGES_DIR, None


@case()
def data_folder_missing(k):
    return ["prepare", "--data", k.tmp / "nowhere", "--cache", k.tmp / "c", "--quiet"], "nowhere", None


@case(status=2)
def skinlib_data_pointing_nowhere(k):
    os.environ["SKINLIB_DATA"] = str(k.tmp / "nowhere")  # removed by the test after the case
    return ["train", "--out", k.tmp / "run", *QUICK], "SKINLIB_DATA", None


# -- bad CSVs and images
@case()
def ground_truth_with_a_header_only(k):
    data = k.copy_data()
    for name in (GROUND_TRUTH_CSV, METADATA_CSV):
        (data / name).write_text((data / name).read_text().splitlines()[0] + "\n")
    return k.train(data=data), GROUND_TRUTH_CSV, None


@case()
def ground_truth_that_cannot_be_read(k):
    data = k.copy_data()
    (data / GROUND_TRUTH_CSV).unlink()
    (data / GROUND_TRUTH_CSV).mkdir()  # reading it fails like a file without read permission
    return k.train(data=data), GROUND_TRUTH_CSV, None


@case()
def ground_truth_separated_by_semicolons(k):
    data = k.copy_data()
    path = data / GROUND_TRUTH_CSV
    path.write_text(path.read_text().replace(",", ";"))
    return k.train(data=data), "';'", None


@case()
def ground_truth_in_utf16(k):
    data = k.copy_data()
    path = data / GROUND_TRUTH_CSV
    path.write_text(path.read_text().replace(",", "\t"), encoding="utf-16")  # Excel's "Unicode text"
    return k.train(data=data), "UTF-16", None


@case()
def metadata_in_latin1(k):
    data = k.copy_data()
    path = data / METADATA_CSV
    path.write_bytes(path.read_text().replace("female", "f\u00e9male").encode("latin-1"))
    return k.train(data=data), f"{METADATA_CSV}: metadata CSV is not UTF-8", None


@case()
def image_with_an_upper_case_suffix(k):
    data = k.copy_data()
    image = sorted((data / IMAGES_DIR).glob("*.jpg"))[0]
    image.rename(image.with_suffix(".JPG"))
    return k.train(data=data), image.with_suffix(".JPG").name, None


@case()
def truncated_image_met_while_preparing(k):
    data = k.copy_data()
    image = sorted((data / IMAGES_DIR).glob("*.jpg"))[3]
    image.write_bytes(image.read_bytes()[:300])
    return ["prepare", "--data", data, "--cache", k.tmp / "c", "--quiet", "--workers", "1"], image.name, None


@case()
def images_folder_that_cannot_be_listed(k):
    data = k.copy_data()
    shutil.rmtree(data / IMAGES_DIR)
    (data / IMAGES_DIR).symlink_to(data / "nowhere")
    return k.train(data=data), IMAGES_DIR, None


# -- damaged kit files
@case()
def damaged_cache_index(k):
    cache = link_copy(k.cache, k.tmp / "cache")
    index = next(cache.glob("index-*.csv"))
    index.write_text('row,image\n1,"unterminated\n')
    return k.train("--cache", cache), index.name, None


@case()
def damaged_cache_manifest(k):
    cache = link_copy(k.cache, k.tmp / "cache")
    (cache / "manifest.json").write_text("{half")
    return k.train("--cache", cache), "manifest.json", None


@case()
def truncated_checkpoint(k):
    run = link_copy(k.run, k.tmp / "run")
    checkpoint = run / "checkpoint.pt"
    head = checkpoint.read_bytes()[:1000]
    checkpoint.unlink()  # a hard link to the module's checkpoint: never write through it
    checkpoint.write_bytes(head)
    return k.train("--resume", "--cache", k.cache, out=run), "checkpoint.pt", None


def resume_with_a_folder_of_the_users_as(k, name: str, named: str):
    """A finished run whose kit file `name` the user replaced by a folder of theirs, resumed."""
    run = link_copy(k.run, k.tmp / "run")
    (run / name).unlink()
    check = planted(run, f"{name}/mine.txt")
    return k.train("--resume", "--cache", k.cache, out=run), named, check


@case()
def kit_file_replaced_by_a_folder_of_the_users(k):
    return resume_with_a_folder_of_the_users_as(k, "metrics.json", "metrics.json: Is a directory")


@case()
def folder_marker_that_is_json_but_not_a_marker(k):
    folder = k.tmp / "mine"
    check = planted(folder, "thesis.docx")
    (folder / "skinlib-folder.json").write_text("[]")
    return ["prepare", "--data", k.data, "--cache", folder, "--quiet"], "skinlib-folder.json", check


@case()
def checkpoint_that_is_a_folder(k):
    return resume_with_a_folder_of_the_users_as(k, "checkpoint.pt", "checkpoint.pt is a folder")


@case()
def damaged_folder_marker(k):
    run = link_copy(k.run, k.tmp / "run")
    (run / "skinlib-folder.json").write_text("{half")
    return k.train("--resume", "--cache", k.cache, out=run), "skinlib-folder.json", None


# -- addresses
@case()
def base_url_with_a_typo_in_its_scheme(k):
    return ["download", k.tmp / "d", "--base-url", "htps://example.org/isic/", "--no-progress"], \
        "htps://example.org/isic/", None


@case()
def base_url_that_does_not_parse(k):
    return ["download", k.tmp / "d", "--base-url", "http://[::1", "--no-progress"], "--base-url", None


@case()
def base_url_without_a_scheme(k):
    return ["download", k.tmp / "d", "--base-url", "example.org/isic", "--no-progress"], "--base-url", None


@case()
def base_url_empty(k):
    return ["download", k.tmp / "d", "--base-url", "", "--no-progress"], "--base-url", None


@case()
def base_url_where_nothing_listens(k):
    # The reason is the system's own short one, not the HTTP library's nested exception text.
    return ["download", k.tmp / "d", "--base-url", "http://127.0.0.1:9/", "--no-progress"], \
        "127.0.0.1:9/skinlib-mirror.json: cannot reach the server ([Errno 111] Connection refused)", None


@case()
def base_url_whose_host_has_no_address(k):
    # '.invalid' never resolves (RFC 2606): the resolver's own error, whether or not DNS is reachable.
    return ["download", k.tmp / "d", "--base-url", "http://isic.invalid/", "--no-progress"], \
        "isic.invalid/skinlib-mirror.json: cannot reach the server ([Errno -", None  # -2 or -3 offline


@case()
def learning_rate_that_diverges(k):
    # Adam moves every weight by about the learning rate: 1e30 overflows the next forward pass.
    argv = k.train("--cache", k.cache, "--epochs", "2", "--lr", "1e30")  # the later --epochs wins
    run = k.tmp / "run"

    def kept_what_finished():
        metrics = json.loads((run / "metrics.json").read_text())
        assert [row["epoch"] for row in metrics["history"]] == [1] and metrics["test"] is None
        assert "epoch 2, batch 1" in metrics["stopped"]
        assert torch.load(run / "checkpoint.pt", weights_only=True, mmap=True)["epoch"] == 1
    return argv, "at epoch 2, batch 1", kept_what_finished



class NaNFrom(torch.nn.Module):
    """`network`, whose outputs are NaN from its `bad`-th training forward pass on."""

    def __init__(self, network, bad):
        super().__init__()
        self.network, self.bad, self.passes = network, bad, 0

    def forward(self, x):
        self.passes += self.training
        out = self.network(x)
        return out * float("nan") if self.training and self.passes >= self.bad else out


@case()
def loss_that_turns_nan_at_a_known_batch(k):
    # Three batches per epoch: the 5th training pass is epoch 2, batch 2.
    k.patch.setattr("skinlib.train.build_model", lambda *a, **kw: NaNFrom(tiny_network(*a, **kw), 5))
    argv = k.train("--cache", k.cache, "--epochs", "3", "--max-batches", "3")
    run = k.tmp / "run"

    def stopped_there_keeping_epoch_1():
        metrics = json.loads((run / "metrics.json").read_text())
        assert [row["epoch"] for row in metrics["history"]] == [1] and metrics["test"] is None
        assert "epoch 2, batch 2:" in metrics["stopped"] and "learning rate" in metrics["stopped"]
        checkpoint = torch.load(run / "checkpoint.pt", weights_only=True, mmap=True)
        assert checkpoint["epoch"] == 1
        assert all(torch.isfinite(w).all() for w in checkpoint["model"].values())
        assert not (run / "model.pt").exists()
    return argv, "at epoch 2, batch 2: training diverged", stopped_there_keeping_epoch_1

# -- train, subset, check
@case()
def subset_of_a_synthetic_set(k):
    # A mirror says "ISIC 2019" in its manifest and licence, and a download of it carries no
    # SYNTHETIC.txt: a synthetic set is refused, so nothing made from it loses its label.
    def nothing_written():
        assert not (k.tmp / "mirror").exists()
    return ["subset", k.data, k.tmp / "mirror", "--fraction", "0.5"], "is a SYNTHETIC dataset", nothing_written


def resumes_to_the_end(k, run: Path, epochs: int):
    """A check that `--resume` finishes the interrupted run of `epochs` epochs."""
    def check():
        k.patch.undo()
        k.patch.setattr("skinlib.train.build_model", tiny_network)
        status, out, err = run_cli(k.train("--cache", k.cache, "--epochs", str(epochs), "--resume", out=run))
        assert status == 0, err
        assert torch.load(run / "checkpoint.pt", weights_only=True, mmap=True)["epoch"] == epochs
    return check


@case(status=130)
def ctrl_c_while_the_checkpoint_is_written(k):
    # What torch does when Ctrl-C cuts torch.save short: its writer fails on closing the file.
    saves, real_save = [], torch.save

    def cut_short_the_second_time(state, f):
        saves.append(1)
        if len(saves) < 2:
            return real_save(state, f)
        f.write(b"PK half a checkpoint")
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1 vs 2") from None
    k.patch.setattr(torch, "save", cut_short_the_second_time)
    run = k.tmp / "run"
    return k.train("--cache", k.cache, "--epochs", "2"), \
        "interrupted while writing the checkpoint after epoch 2: the previous checkpoint is kept, " \
        f"{run / 'checkpoint.pt'} holds 1 epoch(s); running the same command with --resume continues", \
        resumes_to_the_end(k, run, 2)


@case(status=130)
def ctrl_c_before_the_first_checkpoint(k):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    k.patch.setattr("skinlib.engine.train_one_epoch", interrupted)
    return k.train("--cache", k.cache), "interrupted during epoch 1: no epoch had finished, so no checkpoint " \
        "was written yet; running the same command with --resume starts again at epoch 1", \
        resumes_to_the_end(k, k.tmp / "run", 1)


@case(status=130)
def ctrl_c_while_preparing(k):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    k.patch.setattr("skinlib.storage.prepare.load_resized", interrupted)
    cache = k.tmp / "cache"
    return ["prepare", "--data", k.data, "--cache", cache, "--quiet", "--workers", "0"], \
        f"interrupted; the images prepared so far are kept in {cache}; run the same command again", None


@case(status=2)
def weights_for_a_model_that_has_no_imagenet_weights(k):
    weights = k.tmp / "weights.pth"
    torch.save({}, weights)
    return k.train("--weights", weights), "--weights", None


@case(status=2)
def weights_with_no_pretrained(k):
    weights = k.tmp / "weights.pth"
    torch.save({}, weights)
    argv = k.train("--weights", weights)
    argv[argv.index("simplecnn")] = "resnet50"
    return argv, "--no-pretrained contradict", None


@case(status=2)
def train_workers_by_the_hundred_thousand(k):
    return k.train("--workers", "100000"), "argument --workers: 100000 is more than 4 per CPU", None


@case(status=2)
def prepare_workers_by_the_thousand(k):
    return ["prepare", "--data", k.data, "--cache", k.tmp / "c", "--workers", "1000", "--quiet"], \
        "argument --workers: 1000 is more than 4 per CPU", None


@case(status=2)
def limit_zero(k):
    return k.train("--limit", "0"), "--limit must be a positive integer, got 0", None


@case()
def train_on_a_data_folder_that_does_not_exist_leaves_no_run_folder(k):
    def no_folder_left():
        assert not (k.tmp / "run").exists()
    return k.train(data=k.tmp / "nodata"), str(k.tmp / "nodata"), no_folder_left


@case()
def limit_too_small_leaves_no_split_and_no_folder(k):
    def no_folder_left():
        assert not (k.tmp / "run").exists()
    return k.train("--limit", "5"), "--limit 5", no_folder_left


@case()
def limit_too_small_in_a_run_folder_of_the_kit_keeps_the_folder(k):
    run = k.tmp / "run"
    claim_folder(run, "run")

    def only_the_marker_left():
        assert sorted(p.name for p in run.iterdir()) == [".skinlib-lock", "skinlib-folder.json"]
    return k.train("--limit", "5"), "--limit 5", only_the_marker_left


@case()
def cache_manifest_whose_size_is_not_its_images(k):
    cache = link_copy(k.cache, k.tmp / "cache")
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["size"] = manifest["size"] // 2
    (cache / "manifest.json").write_text(json.dumps(manifest))
    return k.train("--cache", cache), f"size {manifest['size']} does not match", None


@case(status=2)  # as SKINLIB_DATA naming no folder: the setting is refused before any work
def skinlib_cache_naming_a_file(k):
    (k.tmp / "afile").write_text("mine")
    k.patch.setenv("SKINLIB_CACHE", str(k.tmp / "afile"))
    argv = [a for a in k.train() if a not in ("--data", str(k.data), k.data)]
    return argv, f"SKINLIB_CACHE={k.tmp / 'afile'}", None


@case()
def ground_truth_row_cut_short(k):
    data = k.copy_data()
    path = data / GROUND_TRUTH_CSV
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = ",".join(lines[3].split(",")[:5]) + "\n"  # data row 3: the image and 4 of 9 values
    path.write_text("".join(lines))
    return k.train(data=data), "row 3 (line 4, ", None


@case()
def images_unzipped_one_level_too_deep(k):
    data = k.copy_data()
    images = data / IMAGES_DIR
    os.rename(images, data / "tmp")
    images.mkdir()
    os.rename(data / "tmp", images / IMAGES_DIR)
    return k.train(data=data), "the images are one level too deep", None


@case()
def ground_truth_that_is_a_loop_of_links(k):
    data = k.copy_data()
    (data / GROUND_TRUTH_CSV).unlink()
    (data / GROUND_TRUTH_CSV).symlink_to("other.csv")
    (data / "other.csv").symlink_to(GROUND_TRUTH_CSV)
    return k.train(data=data), f"{GROUND_TRUTH_CSV}: a link that leads to no file", None


# -- predict
def predictable(k) -> Path:
    """The run's model file, loadable: its weights are those of `tiny_network`."""
    k.patch.setattr("skinlib.export.build_model", tiny_network)
    return k.run / "model.pt"


def an_image(k) -> Path:
    return sorted((k.data / IMAGES_DIR).glob("*.jpg"))[0]


def edited_model(k, edit) -> Path:
    """A copy of the run's model file after `edit(state)`, as a user might hand-edit it."""
    state = torch.load(predictable(k), weights_only=True)
    edit(state)
    torch.save(state, k.tmp / "edited.pt")
    return k.tmp / "edited.pt"


@case()
def predict_cam_into_a_folder_holding_the_users_files_under_the_names_predict_uses(k):
    image = an_image(k)
    check = planted(k.tmp / "mine", "GRADCAM.txt", f"{image.stem}_gradcam.png", "thesis.docx")
    return ["predict", image, "--model", predictable(k), "--cam", k.tmp / "mine", "--quiet"], \
        str(k.tmp / "mine"), check


@case()
def predict_cam_into_its_own_folder_where_the_user_saved_a_file_under_an_overlays_name(k):
    image = an_image(k)
    claim_folder(k.tmp / "cams", "gradcam").record("other_gradcam.png")
    check = planted(k.tmp / "cams", f"{image.stem}_gradcam.png")
    return ["predict", image, "--model", predictable(k), "--cam", k.tmp / "cams", "--quiet"], \
        f"{image.stem}_gradcam.png is not an overlay skinlib wrote", check


@case()
def predict_cam_with_two_images_of_one_name_in_two_folders(k):
    for folder in ("d1", "d2"):
        (k.tmp / folder).mkdir()
        shutil.copy(an_image(k), k.tmp / folder / "x.jpg")
    return ["predict", k.tmp / "d1" / "x.jpg", k.tmp / "d2", "--model", predictable(k), "--cam",
            k.tmp / "cams", "--quiet"], f"{k.tmp / 'd1' / 'x.jpg'} and {k.tmp / 'd2' / 'x.jpg'}", None


@case()
def predict_with_a_model_whose_crop_is_zero(k):
    model = edited_model(k, lambda state: state["preprocessing"].update(crop=0))
    return ["predict", an_image(k), "--model", model, "--quiet"], "resize 256, crop 0 cannot be used", None


@case()
def predict_with_a_model_whose_crop_is_larger_than_its_resize(k):
    model = edited_model(k, lambda state: state["preprocessing"].update(crop=5000, resize=10))
    return ["predict", an_image(k), "--model", model, "--quiet"], "resize 10, crop 5000 cannot be used", None


@case()
def predict_with_a_simplecnn_whose_crop_is_not_224(k):
    model = edited_model(k, lambda state: state["preprocessing"].update(crop=200))

    def one_size_network(name, num_classes, **_):  # takes one image size only, as SimpleCNN does
        network = tiny_network(name, num_classes)
        network.input_size = (3, 224, 224)
        return network
    k.patch.setattr("skinlib.export.build_model", one_size_network)
    return ["predict", an_image(k), "--model", model, "--quiet"], "'simplecnn' takes 224x224 only", None


@case()
def predict_with_a_model_whose_preprocessing_is_not_a_dictionary(k):
    model = edited_model(k, lambda state: state.update(preprocessing="resize 256, crop 224"))
    return ["predict", an_image(k), "--model", model, "--quiet"], \
        "edited.pt: preprocessing does not hold what a skinlib model file holds there", None


@case()
def predict_with_a_model_whose_class_names_and_format_version_are_numbers(k):
    model = edited_model(k, lambda state: state.update(classes=list(range(8)), format_version="1"))
    return ["predict", an_image(k), "--model", model, "--quiet"], \
        "edited.pt: format_version, classes do not hold what a skinlib model file holds there", None


@case()
def predict_with_a_model_listing_seven_class_names(k):
    model = edited_model(k, lambda state: state["classes"].pop())
    return ["predict", an_image(k), "--model", model, "--quiet"], \
        "lists 7 class names but its weights give 8 outputs", None


@case()
def predict_with_a_run_folder_as_model(k):
    return ["predict", an_image(k), "--model", k.run, "--quiet"], \
        f"{k.run} is a folder: pass the model file in it, {k.run / 'model.pt'}", None


@case(status=2)
def predict_csv_with_an_empty_name(k):
    return ["predict", an_image(k), "--model", predictable(k), "--csv", "", "--quiet"], "--csv", None


@case()
def predict_a_device_file(k):
    return ["predict", "/dev/zero", "--model", predictable(k), "--quiet"], "/dev/zero: not a regular file", None


@case()
def predict_a_link_to_nothing(k):
    (k.tmp / "gone.jpg").symlink_to(k.tmp / "nowhere.jpg")
    return ["predict", k.tmp / "gone.jpg", "--model", predictable(k), "--quiet"], "gone.jpg: a link to nothing", None


@case()
def predict_a_floating_point_tiff(k):
    from PIL import Image
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32)).save(k.tmp / "float.tif")
    return ["predict", k.tmp / "float.tif", "--model", predictable(k), "--quiet"], "float.tif: an image of mode F", None


# ---------------------------------------------------------------- the test
def test_there_are_at_least_40_bad_invocations():
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_invocation_ends_as_one_error_line(hostile, name, monkeypatch):
    monkeypatch.delenv("SKINLIB_DATA", raising=False)
    argv, named, check = CASES[name].make(hostile)
    try:
        status, _, err = run_cli(argv)
    finally:
        os.environ.pop("SKINLIB_DATA", None)
        if hasattr(hostile, "hold"):
            hostile.hold.close()
    lines = err.splitlines()
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert named in lines[0]
    assert status == CASES[name].status
    if check is not None:
        check()


# ---------------------------------------------------------------- permissions, as a user who is not root
# Run in a process of their own as that user (see tests/unprivileged.py): every case but the
# last through `cli.main`, the last as `python -m skinlib` itself, so what reaches the
# terminal is seen as it is, with no traceback.
PERMISSION_DRIVER = """
import contextlib, io, json, runpy, sys
from skinlib import cli
cases = json.loads(sys.argv[1])
seen = {}
for name, argv, _ in cases[:-1]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = cli.main(argv)
        except SystemExit as exit_:
            status = exit_.code
    seen[name] = [status, err.getvalue()]
print(json.dumps(seen), flush=True)
sys.argv = ["skinlib", *cases[-1][1]]
runpy.run_module("skinlib", run_name="__main__")
"""


def permission_cases(home: Path, data: Path) -> list[tuple[str, list[str], str]]:
    """(name, argv, what the error line must name), after making the files it needs."""
    read_only = home / "read-only"
    read_only.mkdir(mode=0o555)
    image = sorted((data / IMAGES_DIR).glob("*.jpg"))[2]
    image.chmod(0o000)
    cannot_read = home / "cannot-read"
    shutil.copytree(data, cannot_read, ignore=shutil.ignore_patterns(image.name))
    (cannot_read / METADATA_CSV).chmod(0o000)
    train = ["train", "--data", str(data), *QUICK]
    return [
        ("prepare_into_a_read_only_cache", ["prepare", "--data", str(data), "--cache", str(read_only / "c"),
                                            "--quiet"], str(read_only)),
        ("prepare_with_an_image_it_cannot_read", ["prepare", "--data", str(data), "--cache", str(home / "c"),
                                                  "--quiet", "--workers", "2"], f"{image.name}: image cannot be read"),
        ("train_with_a_metadata_csv_it_cannot_read", [*train, "--data", str(cannot_read), "--out",
                                                      str(home / "r")], METADATA_CSV),
        ("synth_into_a_read_only_folder", ["synth", str(read_only), "--n", "80"], str(read_only)),
        ("train_into_a_read_only_out", [*train, "--out", str(read_only)], str(read_only)),  # python -m skinlib
    ]


def test_permission_refusals_as_a_user_who_is_not_root(kit, user_folder):
    data = Path(shutil.copytree(kit.data, user_folder / "data"))
    give_to_user(data)
    cases = permission_cases(user_folder, data)
    done = as_user(["-c", PERMISSION_DRIVER, json.dumps(cases)], user_folder, timeout=300)
    seen = json.loads(done.stdout.splitlines()[0])
    seen[cases[-1][0]] = [done.returncode, done.stderr]
    for name, _, named in cases:
        status, err = seen[name]
        lines = err.splitlines()
        assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), (name, err)
        assert named in lines[0] and status == 1, (name, err)
    assert "Permission denied" in seen["train_into_a_read_only_out"][1]
    assert not any((user_folder / "read-only").iterdir())  # nothing was written where it may not be


# ---------------------------------------------------------------- files of the user's in the kit's folders
def test_prepare_deletes_only_the_cache_files_it_recorded(kit, tmp_path):
    cache = tmp_path / "cache"
    assert run_cli(["prepare", "--data", kit.data, "--cache", cache, "--quiet", "--workers", "1"])[0] == 0
    unchanged = planted(cache, "index-0123456789abcdef.csv", "images-0123456789abcdef.npy", "notes.txt")
    data = Path(shutil.copytree(kit.data, tmp_path / "data"))
    for name in (GROUND_TRUTH_CSV, METADATA_CSV):  # other data: the old key's files are stale
        pd.read_csv(data / name, dtype=str).iloc[1:].to_csv(data / name, index=False)
    status, _, err = run_cli(["prepare", "--data", data, "--cache", cache, "--quiet", "--workers", "1"])
    assert status == 0, err
    unchanged()
    assert len(list(cache.glob("images-*.npy"))) == 2  # the user's and the new one; the old is gone


def test_synth_again_replaces_its_own_set_and_keeps_the_users_files(tmp_path):
    out = tmp_path / "synthetic"
    assert run_cli(["synth", out, "--n", "48", "--seed", "1"])[0] == 0
    unchanged = planted(out, "my-notes/notes.txt", f"{IMAGES_DIR}/my-photo.jpg")
    status, _, err = run_cli(["synth", out, "--n", "48", "--seed", "2"])
    assert status == 0, err
    unchanged()
    assert len(list((out / IMAGES_DIR).glob("ISIC_*.jpg"))) == 48
