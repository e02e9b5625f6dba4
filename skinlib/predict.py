"""Classify new images with a saved model: `python -m skinlib predict IMAGE [IMAGE ...] --model FILE`.

Images (files, or folders of .jpg/.jpeg/.png files) go through the model's own preprocessing
in batches, behind a progress bar. For each image: the probabilities of every class (they
sum to 1), of which the top k are printed; `--csv FILE` writes them all, one row per image;
`--cam DIR` writes a Grad-CAM overlay per image (the centre crop the model saw, and where it
found the evidence for the class it chose). A damaged image stops the run with one line
naming the file, like everywhere in the kit.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from skinlib.cli_errors import device_name, int_at_least
from skinlib.data import DataError, open_image
from skinlib.export import ExportedModel, load_model
from skinlib.files import atomic_write_text
from skinlib.gradcam import grad_cam, heatmap
from skinlib.interpret_plots import plot_gradcam

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CAM_MARKER = "GRADCAM.txt"  # marks a folder of overlays written by predict, so a rerun may refresh it


def image_paths(inputs) -> list[Path]:
    """The image files named by `inputs`: files as given, folders expanded to their images (sorted)."""
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise DataError(f"{item}: folder holds no {'/'.join(IMAGE_SUFFIXES)} image")
            paths += found
        elif item.is_file():
            paths.append(item)
        else:
            raise DataError(f"{item}: no such image file or folder")
    return paths


class _Images(Dataset):
    def __init__(self, paths: list[Path], transform):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return self.transform(open_image(self.paths[index])), index  # ImageError names the file


def predict(exported: ExportedModel, paths: list[Path], *, batch_size: int = 16, cam_dir: Path | None = None,
            device: torch.device | str = "cpu", progress: bool = True) -> torch.Tensor:
    """Class probabilities (N, classes) for the images at `paths`, in order; with `cam_dir`, also
    one Grad-CAM overlay per image, DIR/<image name>_gradcam.png, for its predicted class."""
    model = exported.model.to(device).eval()
    loader = DataLoader(_Images(list(paths), exported.transform()), batch_size=batch_size)
    probs = []
    for images, indices in tqdm(loader, desc="predict", unit="batch", disable=not progress, leave=False):
        images = images.to(device)
        if cam_dir is None:
            with torch.inference_mode():
                logits = model(images)
        else:
            cams, logits = grad_cam(model, images)
            _write_cams(exported, images, heatmap(cams, images.shape[-2:]), logits.softmax(1),
                        [paths[i] for i in indices.tolist()], cam_dir)
        probs.append(logits.float().softmax(dim=1).cpu())
    return torch.cat(probs)


def _write_cams(exported, images, heats, probs, paths, cam_dir: Path) -> None:
    for image, heat, p, path in zip(images, heats, probs, paths):
        k = int(p.argmax())
        figure = plot_gradcam(image[None], heat[None], [f"{path.name}\n{exported.classes[k]} {p[k]:.2f}"])
        figure.savefig(cam_dir / f"{path.stem}_gradcam.png", dpi=100)
        plt.close(figure)


def prepare_cam_dir(folder: Path) -> Path:
    """`folder`, created if new; an existing folder must be empty or one that predict wrote before."""
    if folder.exists() and any(folder.iterdir()) and not (folder / CAM_MARKER).is_file():
        raise DataError(f"{folder}: folder is not empty and was not written by predict; "
                        f"choose a new or empty folder for --cam")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / CAM_MARKER, "Grad-CAM overlays written by `python -m skinlib predict`; "
                                           "a rerun into this folder replaces those of the same names.\n")
    return folder


def table(paths: list[Path], probs: torch.Tensor, classes: list[str]) -> pd.DataFrame:
    """One row per image: image, predicted class, its probability, then every class's probability."""
    frame = pd.DataFrame(probs.numpy(), columns=classes)
    frame.insert(0, "probability", frame[classes].max(axis=1))
    frame.insert(0, "predicted", frame[classes].idxmax(axis=1))
    frame.insert(0, "image", [str(p) for p in paths])
    return frame


def format_top_k(path: Path, probs: torch.Tensor, classes: list[str], k: int) -> str:
    values, indices = probs.topk(min(k, len(classes)))
    return f"{path.name}: " + "  ".join(f"{classes[i]} {v:.3f}" for v, i in zip(values.tolist(), indices.tolist()))


# ---------------------------------------------------------------- command line
def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="classify images with a saved model (RUN/model.pt)")
    p.add_argument("images", nargs="+", type=Path, help="image files or folders of images")
    p.add_argument("--model", type=Path, required=True, help="model file written by train (RUN/model.pt)")
    p.add_argument("--top-k", type=int_at_least(1), default=3, help="classes shown per image (default: %(default)s)")
    p.add_argument("--cam", type=Path, default=None, metavar="OUT_DIR", help="write Grad-CAM overlays here")
    p.add_argument("--csv", type=Path, default=None, help="write every probability, one row per image")
    p.add_argument("--batch-size", type=int_at_least(1), default=16)
    p.add_argument("--device", type=device_name, default=None,
                   help="cuda, cuda:1, mps or cpu (default: best available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    from skinlib.device import select_device

    if args.csv is not None and args.csv.exists():
        raise DataError(f"{args.csv} already exists; choose another --csv file or move it away")
    paths = image_paths(args.images)
    exported = load_model(args.model)
    cam_dir = None if args.cam is None else prepare_cam_dir(args.cam)
    device = select_device(args.device, announce=False)
    probs = predict(exported, paths, batch_size=args.batch_size, cam_dir=cam_dir, device=device,
                    progress=not args.quiet)
    if args.csv is None:
        for path, p in zip(paths, probs):
            print(format_top_k(path, p, exported.classes, args.top_k))
    else:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.csv, table(paths, probs, exported.classes).to_csv(index=False, float_format="%.6f"))
        print(f"wrote {len(paths)} rows to {args.csv}")
    if cam_dir is not None:
        print(f"Grad-CAM overlays in {cam_dir}{os.sep}")
    return 0
