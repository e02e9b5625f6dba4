"""An ISIC 2019 data folder: its CSVs read strictly, its index, its check, and the JPEG dataset.

`load_index` turns a folder into one row per labelled image; `check_dataset` collects every
problem of a folder into one report instead of stopping at the first. Bad input never
disappears quietly: it raises `DataError` (or `ImageError`) with a message that names the
file, and for a CSV the data row (1-based) and its line, or it is a counted warning (`DataWarning`).
`read_csv`, `require_columns` and `row_refs` serve every CSV the kit reads. `ISICDataset` turns an
index frame into (image tensor, label) with `augment`'s transforms, the ones of every image source.
`from skinlib.data import ...` also reaches the layout (classes, file names, errors) and image decoding.
"""
from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import torch
from torchvision.transforms import v2
from tqdm.auto import tqdm

from skinlib.augment import CenterCrop, train_transform
from skinlib.images import decode, open_image
from skinlib.layout import (CLASS_NAMES, CLASSES, EXPECTED_LAYOUT, GROUND_TRUTH_CSV, IMAGE_SUFFIX, IMAGENET_MEAN,
                            IMAGENET_STD, IMAGES_DIR, MAX_LISTED, METADATA_COLUMNS, METADATA_CSV, NUM_CLASSES,
                            SYNTHETIC_MARKER, UNKNOWN_CLASS, DataError, DataWarning, ImageError, synthetic_image_ids)

__all__ = [
    "CLASSES", "CLASS_NAMES", "NUM_CLASSES", "UNKNOWN_CLASS", "IMAGES_DIR", "GROUND_TRUTH_CSV",
    "METADATA_CSV", "METADATA_COLUMNS", "IMAGE_SUFFIX", "EXPECTED_LAYOUT", "IMAGENET_MEAN",
    "IMAGENET_STD", "DataError", "ImageError", "DataWarning", "read_ground_truth",
    "read_metadata", "read_csv", "require_columns", "row_refs", "lines_by_image", "load_index", "open_image", "CheckReport",
    "check_dataset", "train_transform", "eval_transform", "ISICDataset",
]


# --------------------------------------------------------------------------- the CSVs
def row_refs(positions: Iterable[int], images: pd.Series | None = None) -> str:
    """'row 3 (line 4, ISIC_...), ...' for 0-based data positions; line 1 is the header."""
    positions = list(positions)
    parts = []
    for pos in positions[:MAX_LISTED]:
        name = f", {images.iloc[pos]}" if images is not None else ""
        parts.append(f"row {pos + 1} (line {pos + 2}{name})")
    more = f" and {len(positions) - MAX_LISTED} more" if len(positions) > MAX_LISTED else ""
    return ", ".join(parts) + more


def read_csv(path: Path, what: str) -> pd.DataFrame:
    """Read a CSV as strings. `utf-8-sig` drops a byte-order mark; pandas reads CRLF line ends."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        frame = pd.read_csv(path, dtype=str, encoding="utf-8-sig", skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: {what} is empty (expected a header line and one row per image)") from None
    except UnicodeDecodeError as exc:
        head = path.read_bytes()[:2]
        encoding = "UTF-16 (a spreadsheet's \"Unicode text\")" if head in (b"\xff\xfe", b"\xfe\xff") \
            else f"not UTF-8 (byte {exc.object[exc.start:exc.start + 1]!r} at position {exc.start})"
        raise DataError(f"{path}: {what} is {encoding}; save it as comma-separated CSV in UTF-8") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: {what} is not a readable CSV ({' '.join(str(exc).split())})") from None
    except OSError as exc:
        raise DataError(f"{path}: {what} cannot be read ({exc.strerror or exc})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(frame.columns) == 1 and frame.columns[0].count(";") + frame.columns[0].count("\t") > 0:
        separator = "';'" if ";" in frame.columns[0] else "a tab"
        raise DataError(f"{path}: {what} is separated by {separator}, not by commas (a spreadsheet "
                        f"saved it that way); save it as comma-separated CSV (UTF-8)")
    return frame


def require_columns(frame: pd.DataFrame, path: Path, required: Iterable[str]) -> None:
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
        raise DataError(f"{path}: empty image id in {row_refs(empty)}")
    duplicated = np.flatnonzero(images.duplicated(keep=False)).tolist()
    if duplicated:
        names = images.iloc[duplicated].unique()
        raise DataError(
            f"{path}: duplicate image id(s) {', '.join(names[:MAX_LISTED])} in {row_refs(duplicated, images)}"
        )
    return images


def read_ground_truth(path: str | os.PathLike) -> pd.DataFrame:
    """Read the one-hot ground-truth CSV into columns image (str) and label (int, index into CLASSES).

    Every row must have exactly one of the eight classes set to 1. A row with UNK=1 is rejected
    (that class exists only in the challenge's test set), as are rows with no class, two
    classes, a value other than 0/1, an empty or a duplicate image id.
    """
    path = Path(path)
    frame = read_csv(path, "ground-truth CSV")
    require_columns(frame, path, ("image", *CLASSES))
    images = _clean_image_ids(frame, path)

    value_columns = list(CLASSES) + ([UNKNOWN_CLASS] if UNKNOWN_CLASS in frame.columns else [])
    values = frame[value_columns].apply(lambda col: pd.to_numeric(col.str.strip(), errors="coerce"))
    bad = values.isna() | ~values.isin([0, 1])
    if bad.to_numpy().any():
        rows = np.flatnonzero(bad.any(axis=1)).tolist()
        short = _short_rows(path, rows, len(frame.columns))
        if short:
            raise DataError(f"{path}: {row_refs(short, images)} has fewer fields than the header's "
                            f"{len(frame.columns)}: the line is cut short; every row needs a value in each column")
        first = rows[0]
        column = bad.columns[bad.iloc[first].to_numpy()][0]
        raise DataError(
            f"{path}: values must be 0 or 1; {row_refs(rows, images)} "
            f"(e.g. {column}={frame[column].iloc[first]!r})"
        )
    if UNKNOWN_CLASS in values.columns:
        unknown = np.flatnonzero(values[UNKNOWN_CLASS].to_numpy() == 1).tolist()
        if unknown:
            raise DataError(
                f"{path}: UNK=1 in {row_refs(unknown, images)}; UNK is the test set's 'none of the "
                f"above' class and has no training images: a training row needs one of {', '.join(CLASSES)}"
            )
    if len(frame) == 0:
        raise DataError(f"{path}: ground-truth CSV has a header but no rows (expected one row per image)")
    onehot = values[list(CLASSES)].to_numpy()
    per_row = onehot.sum(axis=1)
    none = np.flatnonzero(per_row == 0).tolist()
    if none:
        raise DataError(f"{path}: no class set to 1 in {row_refs(none, images)}")
    several = np.flatnonzero(per_row > 1).tolist()
    if several:
        raise DataError(
            f"{path}: more than one class set to 1 in {row_refs(several, images)} (labels must be one-hot)"
        )
    return pd.DataFrame({"image": images.to_numpy(), "label": onehot.argmax(axis=1).astype(np.int64)})


def _short_rows(path: Path, positions: list[int], n_fields: int) -> list[int]:
    """Those of the 0-based data rows `positions` whose line has fewer than `n_fields` fields."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        lines = [row for row in csv.reader(f) if row]  # pandas skips blank lines too
    return [pos for pos in positions if pos + 1 < len(lines) and len(lines[pos + 1]) < n_fields]


def read_metadata(path: str | os.PathLike) -> pd.DataFrame:
    """Read the metadata CSV: image, age_approx (float, NaN if missing), anatom_site_general,
    lesion_id, sex (str, NaN if missing). Missing columns or duplicate image ids are errors."""
    path = Path(path)
    frame = read_csv(path, "metadata CSV")
    require_columns(frame, path, METADATA_COLUMNS)
    out = frame[list(METADATA_COLUMNS)].copy()
    out["image"] = _clean_image_ids(frame, path)
    for column in ("anatom_site_general", "lesion_id", "sex"):
        out[column] = out[column].str.strip().replace("", np.nan)
    age = pd.to_numeric(out["age_approx"].str.strip(), errors="coerce")
    bad_age = np.flatnonzero(age.isna() & out["age_approx"].notna() & (out["age_approx"].str.strip() != "")).tolist()
    if bad_age:
        raise DataError(f"{path}: age_approx is not a number in {row_refs(bad_age, out['image'])}")
    out["age_approx"] = age.astype(float)
    return out


# --------------------------------------------------------------------------- the JPEG dataset

def lines_by_image(text: str, where: str) -> tuple[str, list[tuple[str, str]]]:
    """(header line, [(image id, line)]) of a CSV's text, each line kept as it is: the id is read
    from the column named `image`, wherever it stands (as `read_csv` reads it)."""
    lines = text.splitlines(keepends=True)
    header = next(csv.reader(lines[:1], skipinitialspace=True), [])
    names = [name.strip() for name in header]
    if "image" not in names:
        raise DataError(f"{where}: no column named 'image' in its header ({', '.join(names[:5]) or 'empty'})")
    column = names.index("image")
    rows = []
    for line in lines[1:]:
        fields = next(csv.reader([line], skipinitialspace=True), [])
        if len(fields) > column and fields[column].strip():
            rows.append((fields[column].strip(), line))
    return (lines[0] if lines else ""), rows


def eval_transform(size: int = 224, resize: int = 256) -> v2.Compose:
    """Evaluation, for an image (PIL, or a C x H x W tensor): shorter side to `resize`, centre crop `size`, ImageNet normalisation.

    The resize and crop are `augment.CenterCrop`'s: the centre `resize` square of the image
    resized to `resize` (the stored form), then its centre `size`, so a JPEG gives the pixels
    its row of a prepared cache gives in training and evaluation.
    """
    return v2.Compose([
        v2.ToPILImage(),  # a tensor or array image too (a PIL image passes as it is)
        CenterCrop(size, fraction=size / resize),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class ISICDataset(torch.utils.data.Dataset):
    """Images and labels of an index frame (columns path, label) -> (image tensor, int label).

    `loader(path)` reads an image (default `open_image`, a PIL image; the training set uses
    `images.load_resized`, the stored form), then `transform` makes the tensor
    (`transform=None` means `eval_transform()`). A file that cannot be decoded raises
    ImageError naming it (also from a DataLoader worker, whose re-raised error carries it).
    """

    def __init__(self, frame: pd.DataFrame, transform: Callable | None = None,
                 loader: Callable[[str], Any] = open_image):
        missing = [c for c in ("path", "label") if c not in frame.columns]
        if missing:
            raise DataError(f"ISICDataset needs a frame with columns path and label; missing {missing}")
        # Plain lists: indexing a DataFrame per item is slow and copies it into every worker.
        self.paths = frame["path"].astype(str).tolist()
        self.labels = frame["label"].astype(int).tolist()
        self.transform = transform if transform is not None else eval_transform()
        self.loader = loader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.loader(self.paths[index])), self.labels[index]




# --------------------------------------------------------------------------- the index
def _check_folder(data_dir: Path, need_images: bool) -> None:
    """Raise a DataError that says what a data folder should hold if `data_dir` does not."""
    if not data_dir.exists():
        raise DataError(f"{data_dir}: folder does not exist. Expected {EXPECTED_LAYOUT}")
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: is a file, not a folder. Expected {EXPECTED_LAYOUT}")
    truth = data_dir / GROUND_TRUTH_CSV
    if truth.is_symlink() and not truth.exists():  # is_file() says False and the folder looks wrong
        raise DataError(f"{truth}: a link that leads to no file (its target is missing, or the links go "
                        f"round in a loop); replace it with the file or a link to it")
    if not truth.is_file():
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
                f"{GROUND_TRUTH_CSV} and were ignored (first: {', '.join(names[:MAX_LISTED])})"
            )
        frame = frame.merge(meta[["image", "lesion_id"]], on="image", how="left", validate="one_to_one")
        without_meta = ~frame["image"].isin(meta["image"])
        if without_meta.any():
            notes.append(
                f"{meta_path}: {int(without_meta.sum())} image(s) of {GROUND_TRUTH_CSV} have no metadata "
                f"row; each is its own lesion group (first: {', '.join(frame.loc[without_meta, 'image'][:MAX_LISTED])})"
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
    try:
        entries = os.scandir(images_dir)
    except OSError as exc:
        raise DataError(f"{images_dir}: cannot list the images ({exc.strerror or exc})") from None
    with entries:
        on_disk = {e.name[: -len(IMAGE_SUFFIX)] for e in entries if e.name.endswith(IMAGE_SUFFIX)}
    listed = frame["image"]
    missing = listed[~listed.isin(on_disk)].tolist()
    extra = sorted(on_disk.difference(listed))
    return missing, extra


def _missing_message(images_dir: Path, missing: list[str]) -> str:
    upper = [m + ".JPG" for m in missing[:MAX_LISTED] if (images_dir / (m + ".JPG")).exists()]
    hint = (f"; found {', '.join(upper)}: rename to the lower-case suffix {IMAGE_SUFFIX} of the "
            f"official download" if upper else "")
    if not upper and (images_dir / IMAGES_DIR).is_dir():  # the archive unzipped into a folder of its own name
        hint = (f"; {images_dir / IMAGES_DIR} is a folder: the images are one level too deep, move them "
                f"up into {images_dir}")
    return (
        f"{images_dir}: {len(missing)} image(s) listed in {GROUND_TRUTH_CSV} are missing "
        f"(first: {', '.join(m + IMAGE_SUFFIX for m in missing[:MAX_LISTED])}){hint}"
    )


def _extra_message(images_dir: Path, extra: list[str]) -> str:
    return (
        f"{images_dir}: {len(extra)} .jpg file(s) have no row in {GROUND_TRUTH_CSV} and were ignored "
        f"(first: {', '.join(e + IMAGE_SUFFIX for e in extra[:MAX_LISTED])})"
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
    synthetic: bool = False  # SYNTHETIC.txt, or the kit's synthetic image ids (layout.synthetic_image_ids)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        lines = [f"Dataset check of {self.data_dir}"]
        if self.synthetic:
            lines.append("  SYNTHETIC data (skinlib synth): drawn shapes, not medical images")
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
        label = " (SYNTHETIC data)" if self.synthetic else ""
        lines.append(f"  result: OK{label}" if self.ok else f"  result: {len(self.problems)} PROBLEM(S){label}")
        return "\n".join(lines)


def check_dataset(
    data_dir: str | os.PathLike, *, verify_images: bool = True, progress: bool = True
) -> CheckReport:
    """Check a data folder and report every problem instead of stopping at the first.

    Reads and validates both CSVs, checks that every listed image exists, counts images per
    class and lesions, and with `verify_images` decodes every JPEG at 1/8 scale (see `images.decode`).
    That finds zero-byte, truncated, corrupt, non-JPEG and oversized files, which
    `Image.verify()` alone would not (it does not decode JPEG data, so it misses truncation).
    """
    data_dir = Path(data_dir)
    report = CheckReport(data_dir=str(data_dir), synthetic=(data_dir / SYNTHETIC_MARKER).is_file())
    try:
        _check_folder(data_dir, need_images=True)
        frame, report.warnings = _read_index(data_dir)
    except DataError as exc:
        report.problems.append(str(exc))
        return report

    report.synthetic |= bool(synthetic_image_ids(frame["image"]))  # a copy that left SYNTHETIC.txt behind
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
                decode(Path(path), reduced=True)
            except ImageError as exc:
                report.problems.append(str(exc))
    return report
