"""Read, validate and serve an ISIC 2019 dataset folder.

The folder has the layout of the official download::

    DATA/ISIC_2019_Training_GroundTruth.csv   image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK (one-hot)
    DATA/ISIC_2019_Training_Metadata.csv      image,age_approx,anatom_site_general,lesion_id,sex
    DATA/ISIC_2019_Training_Input/<image>.jpg

Bad input never disappears quietly: it raises `DataError` (or `ImageError`) with a message
that names the file, and for a CSV the data row (1-based) and its line number, or it is a
counted warning (`DataWarning`). `check_dataset` collects every problem of a folder into one
report instead of stopping at the first.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2
from tqdm.auto import tqdm

from skinlib.sampling import item_random_state, split_key

CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
NUM_CLASSES = len(CLASSES)
CLASS_NAMES = {
    "MEL": "melanoma",
    "NV": "melanocytic nevus",
    "BCC": "basal cell carcinoma",
    "AK": "actinic keratosis",
    "BKL": "benign keratosis",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion",
    "SCC": "squamous cell carcinoma",
}
# The ground truth has a ninth column, UNK, for the "none of the others" class that exists only
# in the challenge's test set. A training row with UNK=1 has no label we can learn from.
UNKNOWN_CLASS = "UNK"

IMAGES_DIR = "ISIC_2019_Training_Input"
GROUND_TRUTH_CSV = "ISIC_2019_Training_GroundTruth.csv"
METADATA_CSV = "ISIC_2019_Training_Metadata.csv"
METADATA_COLUMNS = ("image", "age_approx", "anatom_site_general", "lesion_id", "sex")
IMAGE_SUFFIX = ".jpg"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

EXPECTED_LAYOUT = f"""an ISIC 2019 folder laid out like the official download:
    DATA/{GROUND_TRUTH_CSV}
    DATA/{METADATA_CSV}   (optional: lesion ids, used to keep a lesion in one split)
    DATA/{IMAGES_DIR}/ISIC_0000000.jpg ...
(`python -m skinlib download DATA` fetches it; `python -m skinlib synth DATA` writes a synthetic one)"""

# How many offending names or rows a message lists before it says "... and N more".
_SHOW = 5


class DataError(ValueError):
    """A dataset folder, CSV or image is not usable; the message names the file (and row)."""


class ImageError(DataError):
    """An image cannot be decoded: missing, empty, truncated, not a JPEG, or too large."""


class DataWarning(UserWarning):
    """Something was ignored (and counted): images without a CSV row, a missing metadata file."""


# --------------------------------------------------------------------------- CSV readers
def _row_refs(positions: Iterable[int], images: pd.Series | None = None) -> str:
    """'row 3 (line 4, ISIC_...), ...' for 0-based data positions; line 1 is the header."""
    positions = list(positions)
    parts = []
    for pos in positions[:_SHOW]:
        name = f", {images.iloc[pos]}" if images is not None else ""
        parts.append(f"row {pos + 1} (line {pos + 2}{name})")
    more = f" and {len(positions) - _SHOW} more" if len(positions) > _SHOW else ""
    return ", ".join(parts) + more


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    """Read a CSV as strings. `utf-8-sig` drops a byte-order mark; pandas reads CRLF line ends."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        frame = pd.read_csv(path, dtype=str, encoding="utf-8-sig", skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: {what} is empty (expected a header line and one row per image)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: {what} is not a readable CSV ({exc})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _require_columns(frame: pd.DataFrame, path: Path, required: Iterable[str]) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(frame.columns)}"
        )


def _clean_image_ids(frame: pd.DataFrame, path: Path) -> pd.Series:
    """Image ids stripped of spaces; an empty id or a duplicate id is an error naming the rows."""
    images = frame["image"].str.strip()
    empty = np.flatnonzero(images.isna() | (images == "")).tolist()
    if empty:
        raise DataError(f"{path}: empty image id in {_row_refs(empty)}")
    duplicated = np.flatnonzero(images.duplicated(keep=False)).tolist()
    if duplicated:
        names = images.iloc[duplicated].unique()
        raise DataError(
            f"{path}: duplicate image id(s) {', '.join(names[:_SHOW])} in {_row_refs(duplicated, images)}"
        )
    return images


def read_ground_truth(path: str | os.PathLike) -> pd.DataFrame:
    """Read the one-hot ground-truth CSV into columns image (str) and label (int, index into CLASSES).

    Every row must have exactly one of the eight classes set to 1. A row with UNK=1 is rejected
    (that class exists only in the challenge's test set), as are rows with no class, two
    classes, a value other than 0/1, an empty or a duplicate image id.
    """
    path = Path(path)
    frame = _read_csv(path, "ground-truth CSV")
    _require_columns(frame, path, ("image", *CLASSES))
    images = _clean_image_ids(frame, path)

    value_columns = list(CLASSES) + ([UNKNOWN_CLASS] if UNKNOWN_CLASS in frame.columns else [])
    values = frame[value_columns].apply(lambda col: pd.to_numeric(col.str.strip(), errors="coerce"))
    bad = values.isna() | ~values.isin([0, 1])
    if bad.to_numpy().any():
        rows = np.flatnonzero(bad.any(axis=1)).tolist()
        first = rows[0]
        column = bad.columns[bad.iloc[first].to_numpy()][0]
        raise DataError(
            f"{path}: values must be 0 or 1; {_row_refs(rows, images)} "
            f"(e.g. {column}={frame[column].iloc[first]!r})"
        )
    if UNKNOWN_CLASS in values.columns:
        unknown = np.flatnonzero(values[UNKNOWN_CLASS].to_numpy() == 1).tolist()
        if unknown:
            raise DataError(
                f"{path}: UNK=1 in {_row_refs(unknown, images)}; UNK is the test set's 'none of the "
                f"above' class and has no training images: a training row needs one of {', '.join(CLASSES)}"
            )
    onehot = values[list(CLASSES)].to_numpy()
    per_row = onehot.sum(axis=1)
    none = np.flatnonzero(per_row == 0).tolist()
    if none:
        raise DataError(f"{path}: no class set to 1 in {_row_refs(none, images)}")
    several = np.flatnonzero(per_row > 1).tolist()
    if several:
        raise DataError(
            f"{path}: more than one class set to 1 in {_row_refs(several, images)} (labels must be one-hot)"
        )
    return pd.DataFrame({"image": images.to_numpy(), "label": onehot.argmax(axis=1).astype(np.int64)})


def read_metadata(path: str | os.PathLike) -> pd.DataFrame:
    """Read the metadata CSV: image, age_approx (float, NaN if missing), anatom_site_general,
    lesion_id, sex (str, NaN if missing). Missing columns or duplicate image ids are errors."""
    path = Path(path)
    frame = _read_csv(path, "metadata CSV")
    _require_columns(frame, path, METADATA_COLUMNS)
    out = frame[list(METADATA_COLUMNS)].copy()
    out["image"] = _clean_image_ids(frame, path)
    for column in ("anatom_site_general", "lesion_id", "sex"):
        out[column] = out[column].str.strip().replace("", np.nan)
    age = pd.to_numeric(out["age_approx"].str.strip(), errors="coerce")
    bad_age = np.flatnonzero(age.isna() & out["age_approx"].notna() & (out["age_approx"].str.strip() != "")).tolist()
    if bad_age:
        raise DataError(f"{path}: age_approx is not a number in {_row_refs(bad_age, out['image'])}")
    out["age_approx"] = age.astype(float)
    return out


# --------------------------------------------------------------------------- the index
def _check_folder(data_dir: Path, need_images: bool) -> None:
    """Raise a DataError that says what a data folder should hold if `data_dir` does not."""
    if not data_dir.exists():
        raise DataError(f"{data_dir}: folder does not exist. Expected {EXPECTED_LAYOUT}")
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: is a file, not a folder. Expected {EXPECTED_LAYOUT}")
    if not (data_dir / GROUND_TRUTH_CSV).is_file():
        if not any(data_dir.iterdir()):
            raise DataError(f"{data_dir}: folder is empty. Expected {EXPECTED_LAYOUT}")
        hint = ""
        if data_dir.name == IMAGES_DIR:
            hint = f" This is the images folder: pass its parent, {data_dir.parent}."
        else:
            inner = [p.name for p in data_dir.iterdir() if (p / GROUND_TRUTH_CSV).is_file()]
            if inner:
                hint = f" Did you mean {data_dir / inner[0]}?"
        raise DataError(f"{data_dir}: no {GROUND_TRUTH_CSV} in this folder.{hint} Expected {EXPECTED_LAYOUT}")
    if need_images and not (data_dir / IMAGES_DIR).is_dir():
        raise DataError(f"{data_dir}: no {IMAGES_DIR}/ folder of images. Expected {EXPECTED_LAYOUT}")


def _read_index(data_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """The index from the two CSVs (no file-system checks) and the warnings to give about it."""
    notes: list[str] = []
    frame = read_ground_truth(data_dir / GROUND_TRUTH_CSV)
    meta_path = data_dir / METADATA_CSV
    if meta_path.is_file():
        meta = read_metadata(meta_path)
        unknown = ~meta["image"].isin(frame["image"])
        if unknown.any():
            names = meta.loc[unknown, "image"]
            notes.append(
                f"{meta_path}: {int(unknown.sum())} row(s) name images that are not in "
                f"{GROUND_TRUTH_CSV} and were ignored (first: {', '.join(names[:_SHOW])})"
            )
        frame = frame.merge(meta[["image", "lesion_id"]], on="image", how="left", validate="one_to_one")
        without_meta = ~frame["image"].isin(meta["image"])
        if without_meta.any():
            notes.append(
                f"{meta_path}: {int(without_meta.sum())} image(s) of {GROUND_TRUTH_CSV} have no metadata "
                f"row; each is its own lesion group (first: {', '.join(frame.loc[without_meta, 'image'][:_SHOW])})"
            )
    else:
        notes.append(
            f"{meta_path} not found: without lesion ids every image is its own group, so photos of "
            "the same lesion may land in both training and test splits"
        )
        frame["lesion_id"] = pd.Series(np.nan, index=frame.index, dtype=object)
    # An image without a lesion id (2,084 of the oldest archive images) is a lesion of its own.
    known = frame["lesion_id"].notna().to_numpy()
    frame["group"] = np.where(known, frame["lesion_id"].to_numpy(dtype=object), frame["image"].to_numpy(dtype=object))
    frame["group"] = frame["group"].astype(str)
    images_dir = os.path.abspath(data_dir / IMAGES_DIR)
    frame["path"] = images_dir + os.sep + frame["image"] + IMAGE_SUFFIX
    return frame[["image", "label", "lesion_id", "group", "path"]], notes


def _scan_images(frame: pd.DataFrame, images_dir: Path) -> tuple[list[str], list[str]]:
    """(CSV images with no file, .jpg files with no CSV row). Other files (the download's
    LICENSE.txt and ATTRIBUTION.txt) are not images and are not counted."""
    with os.scandir(images_dir) as entries:
        on_disk = {e.name[: -len(IMAGE_SUFFIX)] for e in entries if e.name.endswith(IMAGE_SUFFIX)}
    listed = frame["image"]
    missing = listed[~listed.isin(on_disk)].tolist()
    extra = sorted(on_disk.difference(listed))
    return missing, extra


def _missing_message(images_dir: Path, missing: list[str]) -> str:
    return (
        f"{images_dir}: {len(missing)} image(s) listed in {GROUND_TRUTH_CSV} are missing "
        f"(first: {', '.join(m + IMAGE_SUFFIX for m in missing[:_SHOW])})"
    )


def _extra_message(images_dir: Path, extra: list[str]) -> str:
    return (
        f"{images_dir}: {len(extra)} .jpg file(s) have no row in {GROUND_TRUTH_CSV} and were ignored "
        f"(first: {', '.join(e + IMAGE_SUFFIX for e in extra[:_SHOW])})"
    )


def load_index(data_dir: str | os.PathLike, *, check_files: bool = True) -> pd.DataFrame:
    """One row per labelled image: image, label (0..7), lesion_id (str or NaN), group, path.

    `group` is the lesion id, or the image id when the lesion is unknown: splits keep a group
    together. With `check_files` (the default) every CSV row must have its JPEG, else a
    DataError gives the count and the first names; JPEGs without a CSV row are counted in a
    DataWarning and ignored. `check_files=False` reads the CSVs only (no images needed).
    """
    data_dir = Path(data_dir)
    _check_folder(data_dir, need_images=check_files)
    frame, notes = _read_index(data_dir)
    if check_files:
        images_dir = data_dir / IMAGES_DIR
        missing, extra = _scan_images(frame, images_dir)
        if missing:
            raise DataError(_missing_message(images_dir, missing))
        if extra:
            notes.append(_extra_message(images_dir, extra))
    for note in notes:
        warnings.warn(note, DataWarning, stacklevel=2)
    return frame


# --------------------------------------------------------------------------- images
def _decode(path: Path, reduced: bool) -> Image.Image:
    """Open and fully decode an image; every failure becomes an ImageError naming the file.

    `reduced` decodes a JPEG at 1/8 scale (Pillow's draft mode, DCT scaling): the whole
    compressed stream is still read, so truncation and corruption are found, at a small
    fraction of the cost of a full decode. That is how `check_dataset` verifies images.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(f"{path}: image file not found") from None
    if size == 0:
        raise ImageError(f"{path}: empty file (0 bytes), not an image")
    try:
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; treat both as errors.
        # (catch_warnings is per process, which is what DataLoader workers are.)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if path.suffix.lower() in (".jpg", ".jpeg") and image.format != "JPEG":
                    raise ImageError(
                        f"{path}: is a {image.format} image named {path.suffix}; the dataset's images "
                        "must be JPEG files (re-save it as JPEG)"
                    )
                if reduced:
                    image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()  # the pixels stay usable after the file is closed
                return image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            f"{path}: larger than Pillow's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS = "
            f"{Image.MAX_IMAGE_PIXELS}): {exc}"
        ) from None
    except UnidentifiedImageError:
        with open(path, "rb") as handle:
            head = handle.read(16)
        raise ImageError(f"{path}: not an image Pillow can read (the file starts with {head!r})") from None
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: truncated or corrupt image ({exc})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any mode (CMYK, L, LA, P, RGBA, I;16, ...). Alpha is dropped: dermoscopy has none."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        # A palette may carry transparency; going through RGBA keeps Pillow from warning.
        image = image.convert("RGBA")
    return image.convert("RGB")


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image into an RGB PIL image; raise ImageError naming the file if it cannot."""
    return _to_rgb(_decode(Path(path), reduced=False))


# --------------------------------------------------------------------------- check
@dataclass
class CheckReport:
    """What `check_dataset` found: counts, warnings (ignored and counted) and problems (errors)."""

    data_dir: str
    n_images: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    n_lesions: int = 0
    n_multi_image_lesions: int = 0
    n_without_lesion_id: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        lines = [f"Dataset check of {self.data_dir}"]
        if self.class_counts:
            lines.append(f"  images: {self.n_images:,}")
            for name, count in self.class_counts.items():
                share = 100 * count / self.n_images if self.n_images else 0.0
                lines.append(f"    {name:<5} {count:>7,}  {share:5.1f} %  {CLASS_NAMES[name]}")
            lines.append(
                f"  lesions: {self.n_lesions:,} distinct lesion ids, {self.n_multi_image_lesions:,} with "
                f"more than one image; {self.n_without_lesion_id:,} images without a lesion id "
                "(each its own group)"
            )
        for title, items in (("warnings", self.warnings), ("problems", self.problems)):
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines.extend(f"    - {item}" for item in items)
        lines.append("  result: OK" if self.ok else f"  result: {len(self.problems)} PROBLEM(S)")
        return "\n".join(lines)


def check_dataset(
    data_dir: str | os.PathLike, *, verify_images: bool = True, progress: bool = True
) -> CheckReport:
    """Check a data folder and report every problem instead of stopping at the first.

    Reads and validates both CSVs, checks that every listed image exists, counts images per
    class and lesions, and with `verify_images` decodes every JPEG at 1/8 scale (see `_decode`).
    That finds zero-byte, truncated, corrupt, non-JPEG and oversized files, which
    `Image.verify()` alone would not (it does not decode JPEG data, so it misses truncation).
    Measured on one core: about 2.5 ms for a 600x450 image, 6 ms for 1024x1024 and 30 ms for
    4000x3000 (130 ms fully decoded), i.e. a few minutes for the 25,331 real images.
    """
    data_dir = Path(data_dir)
    report = CheckReport(data_dir=str(data_dir))
    try:
        _check_folder(data_dir, need_images=True)
        frame, report.warnings = _read_index(data_dir)
    except DataError as exc:
        report.problems.append(str(exc))
        return report

    counts = frame["label"].value_counts()
    report.n_images = len(frame)
    report.class_counts = {name: int(counts.get(i, 0)) for i, name in enumerate(CLASSES)}
    per_lesion = frame["lesion_id"].value_counts()
    report.n_lesions = len(per_lesion)
    report.n_multi_image_lesions = int((per_lesion > 1).sum())
    report.n_without_lesion_id = int(frame["lesion_id"].isna().sum())

    images_dir = data_dir / IMAGES_DIR
    missing, extra = _scan_images(frame, images_dir)
    if missing:
        report.problems.append(_missing_message(images_dir, missing))
    if extra:
        report.warnings.append(_extra_message(images_dir, extra))
    if verify_images:
        present = frame.loc[~frame["image"].isin(missing), "path"]
        for path in tqdm(present, desc="checking images", unit="img", disable=not progress):
            try:
                _decode(Path(path), reduced=True)
            except ImageError as exc:
                report.problems.append(str(exc))
    return report


# --------------------------------------------------------------------------- dataset
def train_transform(size: int = 224) -> v2.Compose:
    """Training augmentation. Dermoscopy has no canonical orientation, so flips and any rotation
    are label-preserving; the crop keeps at least half of the image so the lesion stays in view."""
    return v2.Compose([
        v2.ToImage(),
        v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.RandomRotation(degrees=180),
        # Mild: colour is a diagnostic cue (blue-grey, red, black), so it must not be washed out.
        v2.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform(size: int = 224, resize: int = 256) -> v2.Compose:
    """Evaluation: shorter side to `resize`, centre crop `size`, ImageNet normalisation."""
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(resize, antialias=True),
        v2.CenterCrop(size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class ISICDataset(torch.utils.data.Dataset):
    """Images and labels of an index frame (columns path, label) -> (3xHxW float tensor, int).

    `transform=None` means `eval_transform()`. A file that cannot be decoded raises ImageError
    naming it (also from a DataLoader worker, whose re-raised error carries the message).
    """

    def __init__(self, frame: pd.DataFrame, transform: Callable | None = None):
        missing = [c for c in ("path", "label") if c not in frame.columns]
        if missing:
            raise DataError(f"ISICDataset needs a frame with columns path and label; missing {missing}")
        # Plain lists: indexing a DataFrame per item is slow and copies it into every worker.
        self.paths = frame["path"].astype(str).tolist()
        self.labels = frame["label"].astype(int).tolist()
        self.transform = transform if transform is not None else eval_transform()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        """`key`: an index, or (index, seed) from `sampling.ShuffleWithSeeds` for a replayable draw."""
        index, seed = split_key(key)
        image = open_image(self.paths[index])
        with item_random_state(seed):
            return self.transform(image), self.labels[index]
