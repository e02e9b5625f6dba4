"""Readers of the two CSVs of an ISIC 2019 folder, strict about what they accept.

Bad input raises `DataError` with a message that names the file, the data row (1-based) and
its line number. `read_csv`, `require_columns` and `row_refs` serve every CSV the kit reads.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from skinlib.layout import CLASSES, MAX_LISTED, METADATA_COLUMNS, UNKNOWN_CLASS, DataError


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
