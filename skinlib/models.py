"""The two networks of the course: the seed's small CNN and an ImageNet-pretrained ResNet-50.

`build_model("simplecnn")` / `build_model("resnet50")` pick one by name (the CLI's --model). To add
a network, add one `Network` entry to `MODELS`: its builder, its Grad-CAM layer, whether ImageNet
weights exist, its input size, and whether the course trains it for notebooks 04 and 05.

ImageNet weights are fetched with the dataset's own fetching code (`acquire.fetch.Fetcher`) rather than
by torchvision, whose download has no timeout: on a machine whose network silently drops
packets `resnet50(weights=...)` would wait forever. Here every network wait is bounded by
`DOWNLOAD_TIMEOUT`, a dropped connection is resumed, the file is checked against the hash that
torchvision publishes in its name, and any failure becomes one `PretrainedWeightsUnavailable`
line that says how to go on without the network. The file lands in the same torch hub cache
torchvision uses (`$TORCH_HOME/hub/checkpoints`), so a file either of them downloaded is reused
by both.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torchvision.models import ResNet, ResNet50_Weights
from torchvision.models import resnet50 as _torchvision_resnet50

from skinlib.errors import SkinlibError
from skinlib.acquire.fetch import DownloadError, DownloadTimeout, Fetcher
from skinlib.storage.checkpoint import read_weights

# The seed fine-tuned torchvision's `pretrained=True` ResNet-50, i.e. IMAGENET1K_V1.
WEIGHT_URLS: dict[str, str] = {
    "IMAGENET1K_V1": ResNet50_Weights.IMAGENET1K_V1.url,
    "IMAGENET1K_V2": ResNet50_Weights.IMAGENET1K_V2.url,
}
DEFAULT_WEIGHTS = "IMAGENET1K_V1"
# Seconds to wait for the connection and for each chunk of data (not for the whole ~100 MB file,
# which may take minutes on a slow link).
DOWNLOAD_TIMEOUT = 30.0
DOWNLOAD_RETRIES = 3  # resumes after a dropped connection before giving up
DOWNLOAD_BACKOFF = 2.0  # seconds before the first retry, doubled each time
# torchvision names its weight files NAME-<first hex digits of their SHA-256>.pth (torch.hub's check_hash).
HASH_IN_NAME = re.compile(r"-([0-9a-f]{6,})\.")


class PretrainedWeightsUnavailable(SkinlibError, RuntimeError):
    """ImageNet weights could neither be found in the torch hub cache nor downloaded."""


class WeightsFileError(SkinlibError, ValueError):
    """A local weights file is missing, unreadable, or does not fit the model."""


class SimpleCNN(nn.Module):
    """The seed's network: two 5x5 conv blocks and three fully connected layers.

    Sizes for a 3x224x224 input: conv1 -> 16x220x220, pool -> 16x110x110,
    conv2 -> 32x106x106, pool -> 32x53x53 = 89,888 features -> 1200 -> 840 -> num_classes.
    fc1 alone holds 107.9 M of the 108.9 M parameters; the fixed flatten size is why the
    network accepts only 224x224 images.
    """

    input_size = (3, 224, 224)

    def __init__(self, num_classes: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=5)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=5)
        self.fc1 = nn.Linear(32 * 53 * 53, 1200)
        self.fc2 = nn.Linear(1200, 840)
        self.fc3 = nn.Linear(840, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_size:
            raise ValueError(
                f"SimpleCNN expects a batch of shape (N, 3, 224, 224), got {tuple(x.shape)}; "
                "resize the images to 224x224 (skinlib.data.eval_transform does)"
            )
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def resnet50(
    num_classes: int = 8,
    pretrained: bool = True,
    weights_path: str | os.PathLike | None = None,
    *,
    weights: str = DEFAULT_WEIGHTS,
    timeout: float | None = None,
    progress: bool = True,
) -> nn.Module:
    """torchvision's ResNet-50 with a new `fc = nn.Linear(2048, num_classes)` head.

    Weights, in order of precedence:
    - `weights_path`: a local state_dict file, either ImageNet's (1000-class fc, replaced after
      loading) or this model's own (num_classes-class fc). Works with no network.
    - `pretrained=True`: the ImageNet weights named by `weights`, from the torch hub cache or
      downloaded once into it. The default IMAGENET1K_V1 (76.1 % ImageNet top-1) is what the
      seed's `pretrained=True` loaded, so its results can be reproduced; "IMAGENET1K_V2"
      (80.9 %, a longer training recipe) is the other choice.
    - `pretrained=False`: random initialisation.
    Raises PretrainedWeightsUnavailable when the weights cannot be had: no wait for the network
    lasts longer than `timeout` seconds (default DOWNLOAD_TIMEOUT), and a failed try is retried
    only DOWNLOAD_RETRIES times (see `download_weights`).
    """
    model = _torchvision_resnet50(weights=None)
    if weights_path is not None:
        state = _load_state_dict(Path(weights_path))
        fc_rows = state.get("fc.weight", torch.empty(0)).shape[:1]
        if fc_rows == (num_classes,):
            model.fc = nn.Linear(model.fc.in_features, num_classes)
            _load_into(model, state, weights_path)
            return model
        _load_into(model, state, weights_path)
    elif pretrained:
        _load_into(model, imagenet_state_dict(weights, timeout=timeout, progress=progress), weights)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def new_head(model: nn.Module, num_classes: int, *, freeze_backbone: bool = False) -> nn.Module:
    """Give a ResNet a fresh `fc = nn.Linear(in_features, num_classes)`; with `freeze_backbone`,
    only that head learns (every other parameter gets requires_grad = False). Returns `model`."""
    if freeze_backbone:
        model.requires_grad_(False)
    model.fc = nn.Linear(model.fc.in_features, num_classes)  # new parameters: trainable
    return model


def imagenet_state_dict(
    weights: str = DEFAULT_WEIGHTS, *, timeout: float | None = None, progress: bool = True
) -> dict[str, torch.Tensor]:
    """The ImageNet state_dict named `weights`, from the torch hub cache, downloading it if needed."""
    if weights not in WEIGHT_URLS:
        raise ValueError(f"unknown ResNet-50 weights {weights!r}; choose one of {sorted(WEIGHT_URLS)}")
    url = WEIGHT_URLS[weights]
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if not path.is_file():
        download_weights(url, path, timeout=timeout, progress=progress)
    return _load_state_dict(path)


def download_weights(
    url: str, dest: str | os.PathLike, *, timeout: float | None = None, progress: bool = True,
    retries: int | None = None, backoff: float | None = None,
) -> Path:
    """Download `url` to `dest` with `acquire.fetch.Fetcher`; return `dest`.

    Every network wait is bounded by `timeout` seconds (default DOWNLOAD_TIMEOUT), a dropped
    connection is resumed up to `retries` times (DOWNLOAD_RETRIES) after `backoff` seconds
    (DOWNLOAD_BACKOFF, doubled each time), and the file is renamed into place only when it is
    complete and its SHA-256 starts with the hash in the URL's file name (torchvision's
    `name-<sha256 prefix>.pth`). Any failure raises PretrainedWeightsUnavailable and leaves no
    partial file behind.
    """
    timeout = DOWNLOAD_TIMEOUT if timeout is None else timeout
    retries = DOWNLOAD_RETRIES if retries is None else retries
    backoff = DOWNLOAD_BACKOFF if backoff is None else backoff
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    published = HASH_IN_NAME.search(url.rsplit("/", 1)[-1])
    try:
        with Fetcher(progress=progress, retries=retries, backoff=backoff, timeout=(timeout, timeout),
                     keep_partial=False, address_hint="check the address") as fetch:
            fetch.download(url, dest, sha256_prefix=published.group(1) if published else None)
    except DownloadError as error:
        timed_out = isinstance(error, DownloadTimeout)
        reason = f"no answer within {error.seconds:g} s" if timed_out else str(error).removeprefix(f"{url}: ")
        raise PretrainedWeightsUnavailable(
            f"could not download ImageNet weights from {url}: {reason}; " + _WAYS_OUT) from None
    return dest


_WAYS_OUT = (
    "train without them with pretrained=False (CLI --no-pretrained), or use a local copy "
    "with weights_path=<file.pth> (CLI --weights FILE)"
)


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsFileError(f"weights file {path} does not exist")
    state = read_weights(path, "state_dict", WeightsFileError)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFileError(f"{path} does not hold a state_dict (a dict of tensor names to tensors)")
    return state


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[:3]
        raise WeightsFileError(
            f"{source} does not fit {type(model).__name__}: {' '.join(line.strip() for line in first)}"
        ) from None


def simplecnn(num_classes: int = 8, pretrained: bool = False, weights_path=None) -> SimpleCNN:
    """SimpleCNN, randomly initialised or loaded from its own state_dict file.

    There are no pretrained weights for it: `pretrained=True` is an error, not random weights.
    """
    if pretrained:
        raise PretrainedWeightsUnavailable(
            "simplecnn has no pretrained weights: train it from scratch with pretrained=False "
            "(CLI --no-pretrained), or choose resnet50")
    model = SimpleCNN(num_classes)
    if weights_path is not None:
        _load_into(model, _load_state_dict(Path(weights_path)), weights_path)
    return model


@dataclass(frozen=True)
class Network:
    """One entry of MODELS: everything the kit needs to know about a network, in one place.

    `build(num_classes=..., pretrained=..., weights_path=..., **options)` makes it;
    `gradcam_layer` names the submodule Grad-CAM looks at (`model.get_submodule`), for models of
    `model_class`; `imagenet_weights` says whether pretrained ImageNet weights exist (the default
    of `pretrained`, and what the command line's --weights loads); `image_size` is the one input
    side it takes (None: any). `title` is how the notebooks name it, and `course`, (run folder,
    notebook), where the course trains and saves it for notebooks 04 and 05 (None: not one of
    the course's models). Every network is fed ImageNet-normalised images (`engine.to_device_batch`).
    """

    build: Callable[..., nn.Module]
    model_class: type
    gradcam_layer: str
    imagenet_weights: bool
    title: str
    image_size: int | None = None
    course: tuple[str, str] | None = None


# The one list of networks: the command line's --model choices, build_model, Grad-CAM's layer,
# the model files of export and the course's saved models all read it.
MODELS: dict[str, Network] = {
    "simplecnn": Network(simplecnn, SimpleCNN, "conv2", imagenet_weights=False, title="SimpleCNN",
                         image_size=224, course=("02_simple_cnn", "notebook 02")),
    "resnet50": Network(resnet50, ResNet, "layer4", imagenet_weights=True, title="ResNet-50",
                        course=("03_resnet50", "notebook 03")),
}


def build_model(
    name: str, num_classes: int = 8, pretrained: bool | None = None, weights_path=None, **options
) -> nn.Module:
    """The model called `name` (a key of MODELS).

    `pretrained=None` is the network's own default: ImageNet weights where they exist
    (`Network.imagenet_weights`), none otherwise. `options` go to its builder (for resnet50:
    `weights`, `timeout`, `progress`).
    """
    network = MODELS.get(name.lower())
    if network is None:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    if pretrained is None:
        pretrained = network.imagenet_weights
    return network.build(num_classes=num_classes, pretrained=pretrained, weights_path=weights_path, **options)


def network_of(model: nn.Module) -> Network | None:
    """The MODELS entry whose `model_class` `model` is (None for a network of one's own)."""
    return next((n for n in MODELS.values() if isinstance(model, n.model_class)), None)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those with requires_grad when `trainable_only`)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
