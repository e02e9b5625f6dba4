"""Training on several GPUs or machines: torchrun and DistributedDataParallel, kept out of the loop.

    torchrun --nproc_per_node=4 -m skinlib train --data DATA --cache CACHE --out RUN

torchrun starts one process per GPU and tells each its place in the environment (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). `torchrun_session` reads it, joins the
processes into one group (NCCL between GPUs, gloo on CPUs) and leaves it at the end. Without
torchrun every function here is a no-op, so a plain run is exactly what it always was.

What changes under torchrun, and where:
- `wrap`: the model becomes a DistributedDataParallel, which averages the gradients of all
  processes in `backward()`; the loop in `engine` is unchanged.
- `train_sampler` / `eval_sampler`: each process reads its own share of every epoch. Every
  process draws the same order and augmentation seeds (`sampling.ShuffleWithSeeds`, reseeded
  from (seed, epoch)) and keeps every WORLD_SIZE-th pair, so a resumed run replays its epochs
  exactly, and a step of N processes with batch B sees the same images as one process with
  batch N x B. `--batch-size` is per process, as in torchvision's reference scripts.
- `sum_across_processes`: the confusion matrix, loss sum and image count of an epoch are added
  over all processes before any metric is computed, so the metrics are those of all images.
- `is_main_process`: only process 0 writes files (split, checkpoints, metrics, figures);
  the others' standard output is silenced (their epoch lines would repeat process 0's). Every process starts from the same seed and draws the same random
  numbers, so process 0's checkpoint resumes every process.
- A process whose torchrun dies (even by SIGKILL) ends with it (Linux's PR_SET_PDEATHSIG), as
  `prepare`'s decoding processes do.
- A process that dies (a crash, an out-of-memory kill, a lost machine) makes the others' next
  gradient exchange fail; they end with one `PeerLost` line, and the last checkpoint, written
  atomically after every complete epoch, resumes the run with `--resume`.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from skinlib.device import die_with_parent
from skinlib.errors import SkinlibError
from skinlib.sampling import ShuffleWithSeeds

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
CHECKPOINT = "checkpoint.pt"  # the file train.run writes in a run folder


class DistributedError(SkinlibError, RuntimeError):
    """A torchrun run cannot start or go on; the message says why and what to do."""


class PeerLost(DistributedError):
    """Another process of the run stopped, so this one cannot go on."""


@dataclass(frozen=True)
class Launch:
    """This process's place in a torchrun launch."""

    rank: int  # 0 .. world_size - 1, over all machines
    world_size: int  # processes in the run
    local_rank: int  # index of the process on its machine: its GPU


def launched() -> Launch | None:
    """The launch torchrun describes in the environment, or None when it did not start us."""
    values = {name: os.environ.get(name) for name in ENV_VARS}
    if all(value is None for value in values.values()):
        return None
    missing = [name for name, value in values.items() if value is None]
    if missing:
        raise DistributedError(
            f"{', '.join(missing)} unset while {', '.join(n for n in ENV_VARS if n not in missing)} "
            f"is set: start distributed runs with torchrun, which sets all of {', '.join(ENV_VARS)}")
    try:
        launch = Launch(**{name.lower(): int(value) for name, value in values.items()})
    except ValueError:
        raise DistributedError(f"{', '.join(f'{k}={v}' for k, v in values.items())}: "
                               f"each must be an integer") from None
    if not 0 <= launch.rank < launch.world_size:
        raise DistributedError(f"RANK={launch.rank} is not in 0..WORLD_SIZE-1 ({launch.world_size})")
    return launch


def is_active() -> bool:
    """True inside a torchrun run whose process group is set up."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


def is_main_process() -> bool:
    """True for the process that writes files and prints: process 0, or the only one."""
    return rank() == 0


# ---------------------------------------------------------------------------- the session


@contextlib.contextmanager
def torchrun_session(device: str | None = None, run_dir: str | os.PathLike | None = None):
    """Within the block, this process belongs to the torchrun run (nothing happens without torchrun).

    On CUDA each process uses the GPU numbered LOCAL_RANK on its machine (NCCL); elsewhere the
    processes talk over gloo. `device` is the `--device` option. With `run_dir`, a failed
    gradient exchange (another process died) becomes one PeerLost line naming the run's
    checkpoint. The group is left at the end.
    """
    launch = launched()
    if launch is None:
        yield None
        return
    # torchrun killed outright (kill -9, a Colab runtime that stops) must take its processes with
    # it: left running, they write checkpoints and hold the run's lock against `--resume`.
    die_with_parent(os.getppid())
    cuda = torch.device(device).type == "cuda" if device else torch.cuda.is_available()
    if cuda:
        if device and torch.device(device).index not in (None, launch.local_rank):
            raise DistributedError(
                f"--device {device}: under torchrun each process uses the GPU of its LOCAL_RANK "
                f"({launch.local_rank} here); give --device cuda or leave it out")
        if launch.local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"LOCAL_RANK={launch.local_rank} but this machine has {torch.cuda.device_count()} "
                f"GPU(s): start at most that many processes per machine (--nproc_per_node)")
        torch.cuda.set_device(launch.local_rank)  # "cuda" now means this process's GPU
    try:
        dist.init_process_group("nccl" if cuda else "gloo")
    except (RuntimeError, ValueError) as err:  # torchrun's own rendezvous makes this rare
        where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        raise DistributedError(f"process {launch.rank} could not join the run at {where} "
                               f"({' '.join(str(err).split())[:200]})") from err
    try:
        if run_dir is not None:
            _check_shared_folder(Path(run_dir))
        with contextlib.ExitStack() as stack:
            if launch.rank:  # its epoch lines would repeat process 0's; errors (stderr) stay
                stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
            yield launch
    except DistributedError:
        raise
    except RuntimeError as err:
        if run_dir is not None and is_peer_failure(err):
            raise PeerLost(lost_message(err, Path(run_dir))) from err
        raise
    finally:
        dist.destroy_process_group()


def main_refused_to_start(err: BaseException | None) -> bool:
    """Process 0 tells the others whether it could claim and lock the run folder (`err`: why not;
    the others pass None) and every process learns it: True when process 0 could not. Without
    it, the others would train on and end with a misleading "another process stopped" line."""
    if not is_active():
        return err is not None
    outcome = [None] * world_size()
    dist.all_gather_object(outcome, None if err is None else type(err).__name__)
    return outcome[0] is not None


def is_peer_failure(err: BaseException) -> bool:
    """Whether `err` is a collective operation that failed because another process is gone."""
    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = str(err)
    return any(marker in text for marker in ("gloo", "NCCL", "Connection reset by peer",
                                             "Connection closed by peer", "Broken pipe"))


def lost_message(err: BaseException, run_dir: Path) -> str:
    """The one line a surviving process ends with."""
    # gloo's message: "[.../pair.cc:545] Read error [127.0.0.1]:24492: Connection reset by peer. This is..."
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    reason = reason.split("] ", 1)[-1].split(". ", 1)[0]
    checkpoint = run_dir / CHECKPOINT
    if checkpoint.is_file():
        then = (f"{checkpoint} holds the last complete epoch: run the same command with --resume "
                f"to continue")
    else:
        then = f"no epoch was complete, so there is no checkpoint in {run_dir}: start the run again"
    return (f"process {rank()} of {world_size()}: another process of the run stopped ({reason}); "
            f"{then}")


def _check_shared_folder(run_dir: Path) -> None:
    """Every process must see the same run folder, else they would disagree on resuming."""
    seen = [None] * world_size()
    checkpoint = run_dir / CHECKPOINT
    mine = checkpoint.stat().st_size if checkpoint.is_file() else None
    dist.all_gather_object(seen, mine)
    if any(other != mine for other in seen):
        lacking = ", ".join(str(i) for i, other in enumerate(seen) if other is None)
        how = f"process(es) {lacking} do not find it" if lacking else "its size differs between processes"
        raise DistributedError(f"the processes do not see the same {checkpoint} ({how}): on several "
                               f"machines --out must be a folder they all share")


# ---------------------------------------------------------------------------- model


def wrap(model: nn.Module, *, channels_last: bool = False) -> nn.Module:
    """`model` as a DistributedDataParallel inside a torchrun run; `model` itself otherwise.

    The model must already be on this process's device. channels_last is set before wrapping:
    DDP lays its gradient buckets out like the parameters when it is built.
    """
    if not is_active():
        return model
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel (whose state_dict keys start with 'module.')."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ---------------------------------------------------------------------------- data


class ShuffleShard(ShuffleWithSeeds):
    """This process's share of `ShuffleWithSeeds(n, generator)`: pairs rank, rank + W, rank + 2W, ...

    Every process draws the whole order from an identically seeded generator and keeps its
    share; the order is padded with its first pairs to a multiple of W (as torch's
    DistributedSampler does) so every process runs the same number of steps.
    """

    def __init__(self, n: int, generator: torch.Generator, rank: int, world_size: int):
        super().__init__(n, generator)
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        pairs = list(super().__iter__())
        pairs += pairs[:len(self) * self.world_size - self.n]
        return iter(pairs[self.rank::self.world_size])


class EvalShard(Sampler[int]):
    """Indices rank, rank + W, rank + 2W, ... of n, in order (shares may differ by one image)."""

    def __init__(self, n: int, rank: int, world_size: int):
        if n < world_size:
            raise DistributedError(f"a split of {n} image(s) cannot be shared by {world_size} processes")
        self.n, self.rank, self.world_size = n, rank, world_size

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))


def train_sampler(n: int, generator: torch.Generator) -> ShuffleWithSeeds:
    """The training sampler: `ShuffleWithSeeds`, or this process's share of it under torchrun."""
    if not is_active():
        return ShuffleWithSeeds(n, generator)
    return ShuffleShard(n, generator, rank(), world_size())


def eval_sampler(n: int) -> Sampler[int] | None:
    """None (the DataLoader reads in order), or this process's share under torchrun."""
    return EvalShard(n, rank(), world_size()) if is_active() else None


def local_world_size() -> int:
    """Processes torchrun started on this machine (they share its CPUs for loading)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if is_active() else 1


# ---------------------------------------------------------------------------- results


def sum_across_processes(loss_sum: torch.Tensor, confusion,
                         images: int) -> tuple[torch.Tensor, int]:
    """Add an epoch's sums over all processes, in one collective; unchanged without torchrun.

    Returns the total loss sum and image count; the `metrics.ConfusionMatrix` is summed in
    place (its flat counts, as `merge` adds them).
    """
    if not is_active():
        return loss_sum, images
    counts = confusion._counts
    packed = torch.cat([counts.double(), loss_sum.detach().double().reshape(1).to(counts.device),
                        torch.tensor([images], dtype=torch.float64, device=counts.device)])
    dist.all_reduce(packed)  # float64 holds counts up to 2**53 exactly
    counts.copy_(packed[:-2].round().to(counts.dtype))
    return packed[-2].to(loss_sum), int(packed[-1].round().item())


def gather_in_order(part: torch.Tensor) -> torch.Tensor:
    """Rows from every process's `EvalShard`, put back in the dataset's order (CPU tensors)."""
    if not is_active():
        return part
    parts = [None] * world_size()
    dist.all_gather_object(parts, part.cpu())
    whole = torch.empty((sum(len(p) for p in parts), *part.shape[1:]), dtype=part.dtype)
    for index, rows in enumerate(parts):
        whole[index::len(parts)] = rows
    return whole
