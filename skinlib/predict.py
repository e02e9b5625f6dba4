"""Classify new images with a saved model: `python -m skinlib predict IMAGE [IMAGE ...] --model FILE`.

Images (files in any format Pillow reads, or folders of image files) go through the model's own preprocessing
in batches, behind a progress bar. For each image: the probabilities of every class (they
sum to 1), of which the top k are printed; `--csv FILE` writes them all, one row per image;
`--cam DIR` writes a Grad-CAM overlay per image (the centre crop the model saw, and where it
found the evidence for the class it chose). A damaged image stops the run with one line
naming the file, like everywhere in the kit.

Images are named as they were given, so two of the same name in different folders stay apart.
The --cam folder is the kit's like every folder it writes (`storage.folders.claim_folder`): new, empty or
marked by an earlier predict, its marker recording every overlay; a file of the user's is never
overwritten. A model trained on the SYNTHETIC set says so on every output: printout, CSV, overlays.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from skinlib.data import DataError, open_image
from skinlib.export import ExportedModel
from skinlib.storage.atomic import atomic_write
from skinlib.storage.folders import IGNORED, FolderError, KitFolder, claim_folder
from skinlib.gradcam import grad_cam, heatmap
from skinlib.interpret_plots import plot_gradcam

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")  # what a folder gives
CAM_KIND = "gradcam"  # the kind of kit folder --cam is (see storage.folders.claim_folder)
SYNTHETIC_NOTE = "SYNTHETIC: this model was trained on synthetic images; its answers say nothing about real lesions"


def image_paths(inputs) -> list[Path]:
    """The image files named by `inputs`: files as given, folders expanded to their image files
    (sorted); what a folder holds besides is named in one printed line, never skipped silently."""
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            entries = sorted(p for p in item.iterdir() if p.name not in IGNORED)
            found = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
            if not found:
                raise DataError(f"{item}: folder holds no {'/'.join(IMAGE_SUFFIXES)} image")
            skipped = [f"{p.name}/" if p.is_dir() else p.name for p in entries if p not in found]
            if skipped:
                print(f"{item}: skipped what is not an image file ({len(skipped)}: {', '.join(skipped[:3])}"
                      f"{', ...' if len(skipped) > 3 else ''}); subfolders are not searched")
            paths += found
        elif item.is_file():
            paths.append(item)
        elif item.exists():
            raise DataError(f"{item}: not a regular file (a device, pipe or socket); pass an image file")
        elif item.is_symlink():
            raise DataError(f"{item}: a link to nothing (its target {os.readlink(item)} is missing)")
        else:
            raise DataError(f"{item}: no such image file or folder")
    return paths


class _Images(Dataset):
    def __init__(self, paths: list[Path], transform):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return self.transform(open_image(self.paths[index], any_format=True)), index  # ImageError names the file


def predict(exported: ExportedModel, paths: list[Path], *, batch_size: int = 16, cam_dir: KitFolder | None = None,
            device: torch.device | str = "cpu", progress: bool = True) -> torch.Tensor:
    """Class probabilities (N, classes) for the images at `paths`, in order; with `cam_dir` (see
    `open_cam_folder`), also one Grad-CAM overlay per image for its predicted class, named by
    `overlay_names`."""
    model = exported.model.to(device).eval()
    names = None if cam_dir is None else overlay_names(paths)
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
                        [paths[i] for i in indices.tolist()], names, cam_dir)
        probs.append(logits.float().softmax(dim=1).cpu())
    return torch.cat(probs)


def _write_cams(exported, images, heats, probs, paths, names: dict[Path, str], cam_dir: KitFolder) -> None:
    synthetic = is_synthetic(exported)
    for image, heat, p, path in zip(images, heats, probs, paths):
        k = int(p.argmax())
        title = f"{printable(path.name)}\n{exported.classes[k]} {p[k]:.2f}" + ("\nSYNTHETIC model" if synthetic else "")
        figure = plot_gradcam(image[None], heat[None], [title], colours=["firebrick" if synthetic else "black"])
        atomic_write(cam_dir.file(names[path]), lambda f: figure.savefig(f, format="png", dpi=100))
        plt.close(figure)


def overlay_names(paths: list[Path]) -> dict[Path, str]:
    """The overlay file of each image: NAME_gradcam.png after the image's name without its suffix,
    or with it where two images share that stem (x.jpg and x.png give x.jpg_gradcam.png and
    x.png_gradcam.png). Two images of one name in two folders are refused: one overlay would
    replace the other."""
    stems = pd.Series([p.stem for p in paths]).value_counts()
    names, seen = {}, {}
    for path in paths:
        name = f"{path.stem if stems[path.stem] == 1 else path.name}_gradcam.png"
        other = seen.setdefault(name, path)
        if other.resolve() != path.resolve():
            raise DataError(f"{other} and {path} would both have the overlay {name}: predict them "
                            f"with --cam in two runs (two --cam folders), or rename one")
        names[path] = name
    return names


def open_cam_folder(folder: Path, paths: list[Path]) -> KitFolder:
    """`folder` as the kit's folder of overlays (new, empty, or marked by an earlier predict),
    checked before any image is read: no overlay may replace a file the kit did not record writing."""
    names = overlay_names(paths)  # a clash of names is refused before the folder is made
    cams = claim_folder(folder, CAM_KIND, option="--cam")
    in_the_way = [name for name in names.values() if os.path.lexists(cams.path / name) and not cams.owns(name)]
    if in_the_way:
        raise FolderError(f"{cams.path / in_the_way[0]} is not an overlay skinlib wrote, so predict will not "
                          f"replace it: choose another --cam, or move it away")
    return cams


def printable(name: str) -> str:
    """`name` as text: a file name that is not valid UTF-8 (Python keeps its bytes as surrogates,
    which no text file or figure can hold) shows each such byte as \ufffd, as a terminal does."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def is_synthetic(exported: ExportedModel) -> bool:
    """Whether the model was trained on the SYNTHETIC set (as its file records)."""
    return bool(exported.data.get("synthetic"))


def table(paths: list[Path], probs: torch.Tensor, classes: list[str]) -> pd.DataFrame:
    """One row per image: image, predicted class, its probability, then every class's probability."""
    frame = pd.DataFrame(probs.numpy(), columns=classes)
    frame.insert(0, "probability", frame[classes].max(axis=1))
    frame.insert(0, "predicted", frame[classes].idxmax(axis=1))
    frame.insert(0, "image", [printable(str(p)) for p in paths])
    return frame


def labelled(frame: pd.DataFrame, exported: ExportedModel) -> pd.DataFrame:
    """`frame` with a last column `note` saying SYNTHETIC on every row, for a model trained on it."""
    return frame.assign(note=SYNTHETIC_NOTE) if is_synthetic(exported) else frame


def format_top_k(path: Path, probs: torch.Tensor, classes: list[str], k: int) -> str:
    values, indices = probs.topk(min(k, len(classes)))
    return f"{printable(str(path))}: " + "  ".join(f"{classes[i]} {v:.3f}" for v, i in zip(values.tolist(), indices.tolist()))
