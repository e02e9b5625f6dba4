"""Training with several processes (torchrun's environment, gloo on the CPU) equals one process.

Processes are started the way torchrun starts them: the same command, each with RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1 and MASTER_PORT in its environment. They run
this file as a script (`worker` at the bottom). With no batch normalisation and no dropout,
two processes with batch B take exactly the steps of one process with batch 2B: the same
images, gradients averaged over the same images, up to float rounding.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from skinlib import distributed  # skinlib.engine imports torchvision: seconds, so imported where needed
from skinlib.storage.checkpoint import load_checkpoint
from skinlib.sampling import SeededItems, ShuffleWithSeeds, make_generator, seed_everything

CPU = torch.device("cpu")
SEED = 3
WORLD = 2


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


# ---------------------------------------------------------------- two processes
class Images(Dataset):
    """Random uint8 images (SYNTHETIC noise) with labels."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8, generator=g)
        self.y = torch.arange(n) % 8

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        return self.x[index], self.y[index]


N_TRAIN, N_VAL, BATCH = 8, 5, 2  # per process; one process takes WORLD * BATCH
LR = 7e-4
# Adam's step is lr * m / (sqrt(v) + eps). With its default eps (1e-8), a weight whose gradient
# is about 1e-8 moves by up to lr on float rounding alone, so two equal trainings can differ there
# by a large fraction of lr (seen: 2e-4 on one of SimpleCNN's 108 M weights). With eps = 1e-4 the
# step is a smooth function of the gradient (it amplifies rounding at most lr / eps = 7 times),
# and the weights of two equal trainings agree to rounding everywhere.
ADAM_EPS = 1e-4


def simplecnn_epoch(batch: int, train_sampler, val_sampler) -> dict:
    """One epoch of SimpleCNN (Adam, clipping, as the course trains; Adam's eps: ADAM_EPS), then an
    evaluation."""
    from skinlib import engine
    from skinlib.models import SimpleCNN

    seed_everything(SEED)
    model = distributed.wrap(SimpleCNN())
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=1.5e-4, eps=ADAM_EPS)
    train = engine.train_one_epoch(model, DataLoader(SeededItems(Images(N_TRAIN, 0)), batch_size=batch,
                                                     sampler=train_sampler),
                                   optimizer, CPU, grad_clip=0.1, options=engine.LoopOptions(progress=False))
    val = engine.evaluate(model, DataLoader(Images(N_VAL, 1), batch_size=batch, sampler=val_sampler),
                          CPU, options=engine.LoopOptions(progress=False), return_probs=True)
    return {"weights": distributed.unwrap(model).state_dict(),
            **{f"{part}_{key}": result[key] for part, result in (("train", train), ("val", val))
               for key in ("loss", "images")},
            "train_confusion": train["confusion"].matrix, "val_confusion": val["confusion"].matrix,
            "val_probs": val["probs"], "val_targets": val["targets"]}


def assert_same_weights(two: dict, one: dict) -> None:
    """Equal up to rounding, for runs through the command line (Adam with its default eps).

    There a weight whose gradient is nearly zero can move by a large part of the learning rate on
    rounding alone (see ADAM_EPS): every weight within a fiftieth of LR, and all but about one in
    100,000 within 1e-6.
    """
    loose = total = 0
    for name, tensor in one.items():
        difference = (two[name] - tensor).abs()
        assert difference.max() <= LR / 50, name
        loose, total = loose + int((difference > 1e-6).sum()), total + tensor.numel()
    assert loose <= 1e-5 * total + 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], tmp_path: Path, *, die_at_epoch: int | None = None,
           folders: list[Path] | None = None, timeout: float = 300) -> list[tuple[int, str]]:
    """Run this file as `WORLD` processes in torchrun's environment; (exit status, stderr) of each.

    `folders`: each process's working folder (default: this one)."""
    port, procs = free_port(), []
    for rank in range(WORLD):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": str(WORLD), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        if die_at_epoch is not None and rank == 1:
            env["TEST_DIE_AT_EPOCH"] = str(die_at_epoch)
        err = open(tmp_path / f"stderr-{rank}-{port}.txt", "w+")
        procs.append((subprocess.Popen([sys.executable, __file__, *args], env=env,
                                       cwd=folders[rank] if folders else None,
                                       stdout=subprocess.DEVNULL, stderr=err), err))
    results = []
    for proc, err in procs:
        status = proc.wait(timeout=timeout)
        err.seek(0)
        results.append((status, err.read()))
        err.close()
    return results


@pytest.mark.slow
def test_two_processes_train_simplecnn_like_one_with_the_combined_batch(tmp_path):
    statuses = launch(["simplecnn", str(tmp_path / "ddp.pt")], tmp_path)
    assert [s for s, _ in statuses] == [0, 0], statuses
    two = torch.load(tmp_path / "ddp.pt", weights_only=True)
    torch.set_num_threads(1)
    one = simplecnn_epoch(WORLD * BATCH, ShuffleWithSeeds(N_TRAIN, make_generator(SEED)), None)

    # Every weight to rounding (the largest difference measured is 1.1e-6, fc3.weight); another
    # image order or a gradient not averaged over both processes moves weights by about LR.
    for name, weight in one["weights"].items():
        assert (two["weights"][name] - weight).abs().max() <= 1e-5, name
    # metrics over all images: counts exactly, losses to float rounding
    for key in ("train_images", "val_images"):
        assert two[key] == one[key] == {"train_images": N_TRAIN, "val_images": N_VAL}[key]
    assert torch.equal(two["train_confusion"], one["train_confusion"])
    assert torch.equal(two["val_confusion"], one["val_confusion"])
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)
    assert torch.equal(two["val_targets"], one["val_targets"])  # gathered back in loader order
    torch.testing.assert_close(two["val_probs"], one["val_probs"], rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- the command line
class TinyNet(nn.Module):
    """A stand-in for ResNet-50 that trains in milliseconds: no batch norm, no dropout."""

    def __init__(self, num_classes=8, **_):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def train_args(data: Path, out: Path, batch: int, *more: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--model", "resnet50", "--limit", "48",
            "--epochs", "2", "--batch-size", str(batch), "--max-batches", "3", "--workers", "0",
            "--device", "cpu", "--seed", str(SEED), "--quiet", *more]


@pytest.mark.slow
def test_a_dead_process_ends_the_run_in_one_line_and_the_resumed_run_equals_one_process(
        synthetic_dir, tmp_path, monkeypatch, capsys):
    run = tmp_path / "two"
    statuses = launch(["cli", *train_args(synthetic_dir, run, BATCH)], tmp_path, die_at_epoch=2)
    (status0, err0), (status1, _) = statuses
    assert status1 == -signal.SIGKILL
    assert status0 == 1
    lines = [line for line in err0.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: process 0 of 2: another process of the run "
                                                   "stopped"), err0
    assert f"{run / 'checkpoint.pt'} holds the last complete epoch" in lines[0]
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1

    from skinlib import cli, models

    monkeypatch.setitem(models.MODELS, "resnet50", dataclasses.replace(models.MODELS["resnet50"], build=TinyNet))
    assert cli.main(train_args(synthetic_dir, run, BATCH, "--resume")) == 1  # one process cannot
    assert "written by 2 processes, this run has 1" in capsys.readouterr().err

    statuses = launch(["cli", *train_args(synthetic_dir, run, BATCH, "--resume")], tmp_path)
    assert [s for s, _ in statuses] == [0, 0], statuses

    single = tmp_path / "one"  # one process, without torchrun, with the combined batch
    assert cli.main(train_args(synthetic_dir, single, WORLD * BATCH)) == 0
    two, one = (load_checkpoint(path / "checkpoint.pt") for path in (run, single))
    assert_same_weights(two["model"], one["model"])
    metrics = [json.loads((path / "metrics.json").read_text()) for path in (run, single)]
    assert metrics[0]["test"]["confusion_matrix"] == metrics[1]["test"]["confusion_matrix"]
    assert metrics[0]["split_sizes"] == metrics[1]["split_sizes"]
    assert metrics[0]["test"]["accuracy"] == metrics[1]["test"]["accuracy"]
    assert [r["val_accuracy"] for r in metrics[0]["history"]] == [r["val_accuracy"] for r in metrics[1]["history"]]


@pytest.mark.slow  # two processes import the command line: tens of seconds on a busy 2-core machine
def test_a_second_torchrun_into_a_run_folder_in_use_ends_in_one_line(synthetic_dir, tmp_path):
    """Process 0 cannot lock the folder (another run holds it) and says so; the other processes
    stop with it, adding nothing (not a misleading "another process of the run stopped")."""
    from skinlib.storage.folders import claim_folder

    run = tmp_path / "busy"
    with claim_folder(run, "run").lock("another run"):
        statuses = launch(["cli", *train_args(synthetic_dir, run, BATCH)], tmp_path, timeout=120)
    (status0, err0), (status1, err1) = statuses
    assert (status0, status1) == (1, 1), statuses
    lines = [line for line in err0.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0] == (f"error: {run} is in use by another run (it holds .skinlib-lock); "
                                            f"wait for it to finish, or choose another folder"), err0
    assert err1.strip() == "", err1


@pytest.mark.slow
def test_processes_that_do_not_share_the_run_folder_stop_before_training(tmp_path):
    """As on two machines whose --out is a local folder: only one of them holds the checkpoint.
    (Each process enters the session `train` runs in; skinlib.cli is not imported, to save time.)"""
    first, second = tmp_path / "machine-0", tmp_path / "machine-1"
    (first / "run").mkdir(parents=True)
    second.mkdir()
    (first / "run" / "checkpoint.pt").write_bytes(b"from an earlier run")
    statuses = launch(["session", "run"], tmp_path, folders=[first, second])
    for status, err in statuses:
        assert status == 1, err
        assert ("DistributedError: the processes do not see the same run/checkpoint.pt "
                "(process(es) 1 do not find it)") in err
    assert not (second / "run").exists()


# ---------------------------------------------------------------- what each process runs
def worker(argv: list[str]) -> int:
    torch.set_num_threads(1)
    if argv[0] == "session":
        with distributed.torchrun_session("cpu", run_dir=argv[1]):
            return 0
    if argv[0] == "simplecnn":
        with distributed.torchrun_session("cpu"):
            result = simplecnn_epoch(BATCH, distributed.train_sampler(N_TRAIN, make_generator(SEED)),
                                     distributed.eval_sampler(N_VAL))
            if distributed.is_main_process():
                torch.save(result, argv[1])
        return 0
    from skinlib import cli, engine, models

    models.MODELS["resnet50"] = dataclasses.replace(models.MODELS["resnet50"], build=TinyNet)
    die_at = os.environ.get("TEST_DIE_AT_EPOCH")
    if die_at:  # this process is killed as it starts that epoch, as by the out-of-memory killer
        real, epochs = engine.train_one_epoch, []

        def dying(*args, **kwargs):
            epochs.append(1)
            if len(epochs) == int(die_at):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        engine.train_one_epoch = dying
    return cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1:]))
