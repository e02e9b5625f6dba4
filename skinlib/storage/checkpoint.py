"""Checkpoints: a file that survives a crash and refuses what it should not load, and the whole
state of a training run saved in it, so a resumed run continues exactly.

`save_checkpoint` writes to a temporary file in the same folder, flushes it to disk and only
then renames it over the old checkpoint (`os.replace` is atomic), so a crash or a full disk
while writing leaves the previous checkpoint intact. `read_weights` is the one reader of every
.pt file the kit opens: `torch.load(weights_only=True)`, so only tensors and plain containers
are read back, never arbitrary pickled objects (unpickling can run code).

`CheckpointPlan` is what `fit` is told about checkpoints: where to save the run after every
epoch, whether to continue from what is there, and what else to store with it.
`training_state` gathers what is saved (weights, optimizer, scheduler, scaler, every random
generator, the history and the config); `resume_training` checks that a checkpoint belongs to
this run and loads it back.
"""
from __future__ import annotations

import errno
import os
import pickle
import random
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from skinlib import distributed
from skinlib.errors import SkinlibError
from skinlib.storage.atomic import atomic_write


FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "epoch", "model", "optimizer", "history")


class CheckpointError(SkinlibError, RuntimeError):
    """A checkpoint cannot be written, read or used; the message names the file."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write `state` to `path` atomically; return the path.

    On failure the temporary file is removed, the previous checkpoint at `path` (if any) is
    untouched, and a CheckpointError says so.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return atomic_write(path, lambda f: torch.save(state, f))
    except Exception as exc:  # KeyboardInterrupt passes through unchanged
        if isinstance(exc.__context__, KeyboardInterrupt):  # torch's writer fails on a file Ctrl-C cut short
            raise exc.__context__ from None
        free = shutil.disk_usage(path.parent).free
        needed = _nbytes(state)
        if _is_no_space(exc) or ("write failed" in str(exc) and free < needed * 1.1):
            # torch's writer reports a full disk as "enforce fail at inline_container.cc ... file write failed"
            raise CheckpointError(
                f"could not write checkpoint {path}: the disk is full ({free / 1e6:,.0f} MB free in {path.parent}, "
                f"the checkpoint needs about {needed / 1e6:,.0f} MB); free some space, then run the same command "
                f"with --resume (the previous checkpoint, if any, is unchanged)") from None
        raise CheckpointError(
            f"could not write checkpoint {path}: {exc} "
            f"(the previous checkpoint, if any, is unchanged)") from exc


def _is_no_space(exc: BaseException | None) -> bool:
    """Whether `exc`, or an error it came from, is the system saying the disk is full."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _nbytes(state) -> int:
    """The bytes of the tensors in `state` (nested dicts and lists): about its size on disk."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(_nbytes(value) for value in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_nbytes(value) for value in state)
    return 0


def read_weights(path: str | os.PathLike, what: str, error: type[Exception], *, map_location: Any = "cpu",
                 mmap: bool = False) -> Any:
    """The one way the kit reads a .pt or .pth file: `torch.load(weights_only=True)`, which reads
    tensors and plain containers only. A file that holds a pickled object, or is cut short or
    corrupt, raises `error` naming it (`what` says what the file should have been)."""
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive whose directory comes last
        raise error(f"{path} is not a readable PyTorch {what}: cut short, or not a file torch.save wrote "
                    f"({Path(path).stat().st_size:,} bytes, no complete archive)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(
            f"{path} holds a pickled Python object and is refused: a {what} is loaded with "
            f"torch.load(weights_only=True), which only reads tensors and plain containers because "
            f"unpickling an arbitrary object can run arbitrary code ({detail})") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise error(f"{path} is not a readable PyTorch {what}: cut short or corrupt "
                    f"({' '.join(str(exc).split()) or type(exc).__name__})") from None


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (tensors and plain containers only)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file; move it away")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was cut short while written")
    if not zipfile.is_zipfile(path):
        # torch.save writes a zip archive whose directory sits at the very end of the file,
        # so a file cut short (a crash mid-copy, a partial upload) is missing it.
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({size:,} bytes, no complete archive): "
            f"it was probably cut short while being written or copied; use another copy or "
            f"train without resuming")
    state = read_weights(path, "checkpoint", CheckpointError, map_location=map_location)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a training checkpoint (it holds a {type(state).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a training checkpoint: missing {', '.join(missing)}")
    return state


def check_compatible(state: dict[str, Any], model: nn.Module, *, path: str | os.PathLike,
                     config: Any = None) -> None:
    """Raise CheckpointError unless `state` can be loaded into `model` (and resumes `config`).

    Checked before `load_state_dict` so the message can say what differs: the model name in
    the saved config, the parameter names (another architecture), or their shapes (usually
    another number of classes).
    """
    saved_config = state.get("config")
    if config is not None and saved_config is not None:
        saved_model, model_name = saved_config.get("model"), getattr(config, "model", None)
        if saved_model != model_name:
            raise CheckpointError(
                f"checkpoint {path} was trained with model {saved_model!r}, this run builds "
                f"{model_name!r}: another architecture cannot be resumed")

    saved, current = state["model"], model.state_dict()
    saved_arch = state.get("model_class", "?")
    missing = [k for k in current if k not in saved]
    unexpected = [k for k in saved if k not in current]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} comes from another architecture ({saved_arch}) than the model "
            f"({type(model).__name__}): {len(missing)} parameter(s) of the model are not in it"
            f"{_examples(missing)}, {len(unexpected)} of its parameter(s) are not in the model"
            f"{_examples(unexpected)}")

    mismatched = [(k, tuple(saved[k].shape), tuple(current[k].shape))
                  for k in current if tuple(saved[k].shape) != tuple(current[k].shape)]
    if mismatched:
        # The classifier comes last; name its weight matrix rather than its bias.
        matrices = [m for m in mismatched if len(m[1]) >= 2]
        key, saved_shape, model_shape = (matrices or mismatched)[-1]
        saved_classes = state.get("num_classes")
        if saved_classes is not None and saved_shape and saved_shape[0] == saved_classes \
                and model_shape and model_shape[0] != saved_classes \
                and saved_shape[1:] == model_shape[1:]:
            raise CheckpointError(
                f"checkpoint {path} was trained for {saved_classes} classes, the model has "
                f"{model_shape[0]} outputs ({key}: {saved_shape} in the checkpoint, "
                f"{model_shape} in the model): another number of classes cannot be resumed")
        listed = "; ".join(f"{k}: {s} in the checkpoint, {m} in the model" for k, s, m in mismatched[:3])
        more = f" and {len(mismatched) - 3} more" if len(mismatched) > 3 else ""
        raise CheckpointError(
            f"checkpoint {path} does not fit the model ({type(model).__name__}): "
            f"{len(mismatched)} parameter shape(s) differ: {listed}{more}")


def _examples(keys: list[str], n: int = 3) -> str:
    if not keys:
        return ""
    shown = ", ".join(keys[:n])
    return f" (e.g. {shown}{', ...' if len(keys) > n else ''})"


def capture_rng_state() -> dict[str, Any]:
    """The state of every random-number generator training touches, as tensors and lists.

    Stored this way (not numpy arrays or tuples of objects) so it loads under weights_only.
    """
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo `capture_rng_state`: put every generator back where it was."""
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state((
        np_state["bit_generator"],
        np_state["keys"].cpu().numpy().astype(np.uint32),
        np_state["pos"],
        np_state["has_gauss"],
        np_state["cached_gaussian"],
    ))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:  # resumed on a machine with another number of GPUs: seed what we can
            for index, s in enumerate(cuda_states[:torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, index)


# Config fields that change the course of training: a checkpoint is only resumed under the
# same values. Paths, device, worker count and display options may differ between sessions.
RESUME_MUST_MATCH = ("model", "epochs", "batch_size", "lr", "weight_decay", "grad_clip", "seed",
                     "limit", "image_size", "fractions", "max_batches")


@dataclass(frozen=True)
class CheckpointPlan:
    """`fit(..., checkpoint=CheckpointPlan(path, resume=True))`: save the run to `path` after
    every epoch and, with `resume`, continue from the checkpoint there (if there is one yet).
    `extra` (say, a record of the data) is stored in the checkpoint beside the run's state."""

    path: str | os.PathLike
    resume: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def start(self, model, optimizer, scheduler, scaler, config) -> list[dict[str, Any]]:
        """The history to continue from: the checkpoint's when resuming one, else none."""
        if not self.resume:
            return []
        if not os.path.exists(self.path):
            print(f"No checkpoint at {self.path} yet: starting at epoch 1")
            return []
        history = resume_training(self.path, model, optimizer, scheduler, scaler, config)
        print(f"Resuming from {self.path}: {len(history)} epoch(s) done")
        return history

    def save(self, model, optimizer, scheduler, scaler, history, config, num_classes) -> None:
        """Write the run after `len(history)` epochs (process 0 alone, under torchrun)."""
        if distributed.is_main_process():
            state = training_state(model, optimizer, scheduler, scaler, history, config, num_classes)
            save_checkpoint(self.path, {**state, **self.extra})


def training_state(model, optimizer, scheduler, scaler, history, config, num_classes) -> dict[str, Any]:
    """Everything `resume_training` needs to continue a run after `len(history)` epochs."""
    model = distributed.unwrap(model)  # under torchrun: the network inside DistributedDataParallel
    return {
        "format_version": FORMAT_VERSION,
        "epoch": len(history),
        "model_class": type(model).__name__,
        "num_classes": num_classes,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": _plain_state(scheduler.state_dict()) if scheduler is not None else None,
        "scaler": scaler.state_dict(),
        "rng": capture_rng_state(),
        "history": history,
        "config": config.to_dict() if config is not None else None,
        "processes": distributed.world_size(),  # each process reads its share of every epoch
    }


def _plain_state(state: dict[str, Any]) -> dict[str, Any]:
    """A scheduler's state without functions, which weights_only loading refuses.

    OneCycleLR of torch < 2.4 keeps its annealing function in its state; the constructor sets it
    again, so nothing is lost by leaving it out.
    """
    return {k: v for k, v in state.items() if not callable(v)}


def resume_training(path, model, optimizer, scheduler, scaler, config) -> list[dict[str, Any]]:
    """Load a checkpoint into the given objects; return its history.

    Refuses (CheckpointError) a checkpoint of another architecture or number of classes, of a
    run with other `RESUME_MUST_MATCH` settings, or saved with(out) a scheduler this run lacks (has).
    """
    model = distributed.unwrap(model)
    state = load_checkpoint(path, map_location="cpu")
    check_compatible(state, model, path=path, config=config)
    if state.get("processes", 1) != distributed.world_size():
        raise CheckpointError(f"checkpoint {path} was written by {state.get('processes', 1)} processes, "
                              f"this run has {distributed.world_size()}: resume with as many")
    saved_config = state.get("config")
    if config is not None and saved_config is not None:
        current = config.to_dict()
        differ = [f"{k}: {saved_config.get(k)!r} in the checkpoint, {current.get(k)!r} now"
                  for k in RESUME_MUST_MATCH if saved_config.get(k) != current.get(k)]
        if differ:
            raise CheckpointError(
                f"checkpoint {path} belongs to a run with other settings, so resuming would not "
                f"continue it ({'; '.join(differ)}); start a new run or restore the settings")
    if (scheduler is None) != (state.get("scheduler") is None):
        raise CheckpointError(
            f"checkpoint {path} was saved {'with' if state.get('scheduler') is not None else 'without'} "
            f"a learning-rate scheduler, this run has {'one' if scheduler is not None else 'none'}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler.is_enabled() and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])  # a disabled scaler saved {}: nothing to restore
    restore_rng_state(state["rng"])
    return list(state["history"])
