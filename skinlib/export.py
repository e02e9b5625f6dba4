"""A trained model as one file: what `predict`, notebook 04 and notebook 05 load.

RUN/model.pt holds, as tensors and plain Python values only (it loads with
`torch.load(weights_only=True)`, which never unpickles code):

    format, format_version   "skinlib-model", 1
    architecture             a name `models.build_model` knows ("simplecnn", "resnet50")
    classes                  class names in the order of the outputs
    state_dict               the weights, on the CPU
    preprocessing            resize, crop, mean, std: what an image goes through before the model
    data                     the run's data: fingerprint (SHA-256 of its images, labels and split),
                             images, synthetic, folder name
    metrics                  the run's test accuracy and balanced accuracy (when known)
    smoke                    True when trained in smoke mode (a few batches): such a model is for
                             checking that the cells run, and a full run refuses it
    skinlib_version          the version that wrote it

A checkpoint (checkpoint.pt) is for resuming training; this file is for using the model.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

import skinlib
from skinlib.storage.checkpoint import CheckpointError, read_weights
from skinlib.data import CLASSES, IMAGENET_MEAN, IMAGENET_STD, eval_transform
from skinlib.storage.atomic import atomic_write, remove_stale_temporaries
from skinlib.models import build_model
from skinlib.models import MODELS

FORMAT, FORMAT_VERSION = "skinlib-model", 1
MODEL_FILE = "model.pt"
REQUIRED = ("format", "format_version", "architecture", "classes", "state_dict", "preprocessing", "data")


class ModelFileError(CheckpointError):
    """A model file cannot be read or used; the message names the file."""


def data_fingerprint(frame: pd.DataFrame, split: pd.Series) -> str:
    """SHA-256 of the run's images, labels and split (one `image,label,split` line per image,
    sorted by image): equal fingerprints mean the same images, labelled and split the same way."""
    rows = pd.DataFrame({"image": frame["image"].to_numpy(), "label": frame["label"].to_numpy(),
                         "split": split.loc[frame.index].to_numpy()}).sort_values("image")
    text = "".join(f"{i},{label},{s}\n" for i, label, s in rows.itertuples(index=False))
    return hashlib.sha256(text.encode()).hexdigest()


def export_model(path: str | os.PathLike, model: nn.Module, architecture: str, *,
                 data: dict[str, Any], classes=CLASSES, crop: int = 224, resize: int = 256,
                 metrics: dict[str, float] | None = None, smoke: bool = False) -> Path:
    """Write `model` to `path` (atomically) in the format above; return the path.

    `data` describes the run's data: at least {"fingerprint": data_fingerprint(frame, split)}.
    `smoke` records that the model was trained in smoke mode, so that a full run can refuse it.
    """
    state = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "architecture": architecture,
        "classes": list(classes),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "preprocessing": {"resize": int(resize), "crop": int(crop),
                          "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "data": dict(data), "metrics": dict(metrics or {}), "smoke": bool(smoke), "skinlib_version": skinlib.__version__,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path, locked=False)  # a copy half-written by a process that was killed
    return atomic_write(path, lambda f: torch.save(state, f))


@dataclass
class ExportedModel:
    """A loaded model file: the network (eval mode) and what it needs to be used correctly."""

    model: nn.Module
    architecture: str
    classes: list[str]
    preprocessing: dict[str, Any]
    data: dict[str, Any]
    metrics: dict[str, float]
    path: str
    smoke: bool = False  # trained in smoke mode; files written before it was recorded read False

    def transform(self):
        """The evaluation transform the model was trained for (resize, centre crop, normalise)."""
        return eval_transform(self.preprocessing["crop"], self.preprocessing["resize"])

    @property
    def name(self) -> str:
        return f"{self.architecture} ({Path(self.path).name})"


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> ExportedModel:
    """Read a file written by `export_model`; every problem is a ModelFileError naming the file."""
    path = Path(path)
    state = _read(path)
    missing = [key for key in REQUIRED if key not in state]
    if state.get("format") != FORMAT or missing:
        raise ModelFileError(f"{path} is not a skinlib model file"
                             f"{' (missing ' + ', '.join(missing) + ')' if missing else ''}: "
                             f"`train` writes one as RUN/{MODEL_FILE}")
    _check_types(path, state)
    if state["format_version"] > FORMAT_VERSION:
        raise ModelFileError(f"{path} has format version {state['format_version']}, this skinlib "
                             f"reads up to {FORMAT_VERSION}: upgrade skinlib")
    pre = state["preprocessing"]
    if (tuple(pre["mean"]), tuple(pre["std"])) != (IMAGENET_MEAN, IMAGENET_STD):
        raise ModelFileError(f"{path} normalises with mean {pre['mean']} and std {pre['std']}; "
                             f"skinlib's transforms use ImageNet's")
    try:
        model = build_model(state["architecture"], num_classes=len(state["classes"]), pretrained=False)
    except (ValueError, RuntimeError) as err:
        raise ModelFileError(f"{path}: {err}") from None
    _check_fit(path, state, model)
    try:
        model.load_state_dict(state["state_dict"])
    except (ValueError, RuntimeError) as err:
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        raise ModelFileError(f"{path}: its weights do not fit {state['architecture']!r} "
                             f"({lines[1] if len(lines) > 1 else lines[0]})") from None
    return ExportedModel(model=model.to(device).eval(), architecture=state["architecture"],
                         classes=list(state["classes"]), preprocessing=dict(pre), data=dict(state["data"]),
                         metrics=dict(state.get("metrics", {})), path=str(path), smoke=state.get("smoke") is True)


def _check_types(path: Path, state: dict[str, Any]) -> None:
    """Refuse a (hand-edited) file whose fields have the wrong kind of value, before any is used."""
    pre, version = state["preprocessing"], state["format_version"]
    problems = {
        "format_version": not (isinstance(version, int) and not isinstance(version, bool)),
        "architecture": not isinstance(state["architecture"], str),
        "classes": not (isinstance(state["classes"], (list, tuple)) and state["classes"]
                        and all(isinstance(name, str) for name in state["classes"])),
        "state_dict": not isinstance(state["state_dict"], dict),
        "preprocessing": not (isinstance(pre, dict) and all(key in pre for key in ("resize", "crop", "mean", "std"))
                              and all(isinstance(pre[key], (list, tuple)) and len(pre[key]) == 3
                                      for key in ("mean", "std"))),
        "data": not isinstance(state["data"], dict),
        "metrics": not isinstance(state.get("metrics", {}), dict),
    }
    wrong = [key for key, bad in problems.items() if bad]
    if wrong:
        raise ModelFileError(f"{path}: {', '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} not hold what "
                             f"a skinlib model file holds there; use the model file as train wrote it")


def _check_fit(path: Path, state: dict[str, Any], model: nn.Module) -> None:
    """Refuse a (hand-edited) file whose class names or preprocessing the network cannot use."""
    last = [key for key in model.state_dict() if key.endswith("weight")][-1]  # the output layer
    saved = state["state_dict"].get(last) if isinstance(state["state_dict"], dict) else None
    if isinstance(saved, torch.Tensor) and saved.ndim == 2 and saved.shape[0] != len(state["classes"]):
        raise ModelFileError(f"{path} lists {len(state['classes'])} class names but its weights give "
                             f"{saved.shape[0]} outputs ({last}); use the model file as train wrote it")
    pre = state["preprocessing"]
    resize, crop = pre.get("resize"), pre.get("crop")
    sizes_ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (resize, crop))
    if not sizes_ok or crop > resize:
        raise ModelFileError(f"{path}: preprocessing resize {resize!r}, crop {crop!r} cannot be used (both "
                             f"must be whole numbers of pixels, crop at most resize); use the model file "
                             f"as train wrote it")
    needs = MODELS[state["architecture"]].image_size  # SimpleCNN takes one image size only
    if needs is not None and crop != needs:
        raise ModelFileError(f"{path}: preprocessing crop {crop} gives {crop}x{crop} images, but "
                             f"{state['architecture']!r} takes {needs}x{needs} only; use the "
                             f"model file as train wrote it")


def _read(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder: pass the model file in it, {path / MODEL_FILE}")
    if not path.is_file():
        raise ModelFileError(f"no model file at {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut-short one has no directory
        raise ModelFileError(f"{path} is truncated or not a PyTorch file ({path.stat().st_size:,} bytes)")
    state = read_weights(path, "model file", ModelFileError)
    if not isinstance(state, dict):
        raise ModelFileError(f"{path} is not a skinlib model file (it holds a {type(state).__name__})")
    return state
