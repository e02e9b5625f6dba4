"""A smaller copy of ISIC 2019 that an instructor can host for a class: `python -m skinlib subset`.

    python -m skinlib subset DATA OUT --fraction 0.2

writes, in OUT, a mirror in the official download's own layout, so that
`python -m skinlib download DEST --base-url URL-OF-OUT` (or the notebooks' MIRROR setting)
fetches it as it fetches the official files:

    ISIC_2019_Training_Input.zip          the chosen images, byte for byte, under
                                          ISIC_2019_Training_Input/
    ISIC_2019_Training_GroundTruth.csv    the official CSVs cut to those rows, lines unchanged
    ISIC_2019_Training_Metadata.csv
    skinlib-mirror.json                   a checksum manifest: SHA-256 and bytes of every file,
                                          and that this is a SUBSET (how many images, of what)
    LICENSE.txt                           the CC BY-NC 4.0 licence notice and the three citations

The images are chosen whole lesions at a time (all photos of a lesion, or none) and
stratified by class, with `skinlib.splits.grouped_split`, so the subset keeps ISIC 2019's class
shares and a split of it is still grouped by lesion.
"""
from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

from skinlib.data import GROUND_TRUTH_CSV, IMAGE_SUFFIX, IMAGES_DIR, METADATA_CSV, DataError, load_index
from skinlib.acquire.download import ARCHIVE
from skinlib.storage.atomic import sha256_file
from skinlib.storage.atomic import atomic_write, atomic_write_text
from skinlib.acquire.bundle import MANIFEST as BUNDLE_MANIFEST
from skinlib.data import lines_by_image
from skinlib.storage.folders import claim_folder
from skinlib.acquire.mirror import FORMAT, MIRROR_MANIFEST
from skinlib.splits import grouped_split
from skinlib.layout import is_synthetic

LICENSE = "LICENSE.txt"

LICENSE_TEXT = """\
A subset of the ISIC 2019 training data: {n:,} of its {total:,} images, chosen by
`python -m skinlib subset --fraction {fraction:g} --seed {seed}` (whole lesions, stratified by class).
It is NOT the official release: the official files are at
https://isic-challenge-data.s3.amazonaws.com/2019/

The ISIC 2019 data is licensed CC BY-NC 4.0 (https://creativecommons.org/licenses/by-nc/4.0/) by the
International Skin Imaging Collaboration. Any use must cite:

- BCN_20000: Combalia M, et al. "BCN20000: Dermoscopic Lesions in the Wild", arXiv:1908.02288, 2019.
- HAM10000: Tschandl P, Rosendahl C, Kittler H. "The HAM10000 dataset, a large collection of
  multi-source dermatoscopic images of common pigmented skin lesions", Sci. Data 5, 180161, 2018.
- MSK: Codella N, et al. "Skin Lesion Analysis Toward Melanoma Detection: A Challenge at the 2017 ISBI",
  arXiv:1710.05006, 2017.
"""


def make_subset(data_dir: str | os.PathLike, out_dir: str | os.PathLike, fraction: float,
                seed: int = 0) -> dict:
    """Write the subset mirror of `data_dir` into `out_dir`; return its manifest.

    `out_dir` must be new, empty or an earlier mirror (whose files are replaced); nothing is
    created before the data is read and the fraction keeps some images. A synthetic set is
    refused: the mirror would call it ISIC 2019, and a download of it would carry no SYNTHETIC.txt.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"--fraction must be in (0, 1], got {fraction}")
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if is_synthetic(data_dir):
        raise DataError(f"{data_dir}: is a SYNTHETIC dataset (made by `skinlib synth`), not ISIC 2019; `subset` makes "
                        f"mirrors of the ISIC 2019 download only (to share a synthetic set, share its "
                        f"`python -m skinlib synth` command)")
    if (data_dir / BUNDLE_MANIFEST).is_file():
        raise DataError(f"{data_dir}: was restored from a course bundle ({BUNDLE_MANIFEST}): its images are "
                        f"256-pixel JPEG copies, not the official files a mirror must serve byte for byte; "
                        f"make the mirror from the full download (`python -m skinlib download DATA`)")
    frame = load_index(data_dir)
    chosen = frame if fraction == 1 else frame[grouped_split(frame, (fraction, 0.0, 1 - fraction), seed) == "train"]
    if chosen.empty:
        raise DataError(f"--fraction {fraction:g} keeps none of the {len(frame):,} images of {data_dir} "
                        f"(whole lesions are drawn); choose a larger --fraction")
    names = set(chosen["image"])
    folder = claim_folder(out_dir, "mirror", option="output folder")  # new, empty, or an earlier mirror
    folder.remove_all()  # an earlier mirror's files only, never the user's
    folder.record(GROUND_TRUTH_CSV, METADATA_CSV, ARCHIVE, LICENSE, MIRROR_MANIFEST)
    for csv_name in (GROUND_TRUTH_CSV, METADATA_CSV):
        header, rows = lines_by_image((data_dir / csv_name).read_text(encoding="utf-8-sig"), str(data_dir / csv_name))
        kept = [header] + [line for image, line in rows if image in names]
        if csv_name == GROUND_TRUTH_CSV and len(kept) - 1 != len(chosen):  # never a mirror of header-only CSVs
            raise DataError(f"{data_dir / csv_name}: {len(kept) - 1:,} of its rows name the {len(chosen):,} chosen "
                            f"images; nothing of the mirror is complete (remove {out_dir})")
        atomic_write_text(out_dir / csv_name, "".join(kept))

    def write_archive(f) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            for image, path in zip(chosen["image"], chosen["path"]):
                zf.write(path, f"{IMAGES_DIR}/{image}{IMAGE_SUFFIX}")

    atomic_write(out_dir / ARCHIVE, write_archive)
    atomic_write_text(out_dir / LICENSE, LICENSE_TEXT.format(n=len(chosen), total=len(frame), fraction=fraction,
                                                             seed=seed))
    files = {name: _entry(out_dir / name) for name in (GROUND_TRUTH_CSV, METADATA_CSV, ARCHIVE, LICENSE)}
    manifest = {"format": FORMAT, "version": 1, "subset": True, "of": "ISIC 2019 training data",
                "images": len(chosen), "source_images": len(frame), "fraction": fraction, "seed": seed,
                "lesion_groups": int(chosen["group"].nunique()), "files": files}
    atomic_write_text(out_dir / MIRROR_MANIFEST, json.dumps(manifest, indent=2) + "\n")
    _warn_if_too_small(chosen, fraction)
    return manifest


def _warn_if_too_small(chosen, fraction: float) -> None:
    """Warn when `train` with its default settings would refuse the mirror: every student's run
    would fail the same way."""
    from skinlib.config import TrainConfig

    defaults = TrainConfig(data="", out="")
    split = grouped_split(chosen, defaults.fractions, defaults.seed)
    empty = [name for name in ("train", "val", "test") if not (split == name).any()]
    n_train = int((split == "train").sum())
    why = (f"the {' and '.join(empty)} split(s) would be empty" if empty else
           f"its training split ({n_train} images) is smaller than the default --batch-size {defaults.batch_size}"
           if n_train < defaults.batch_size else None)
    if why:
        print(f"warning: the mirror keeps only {len(chosen):,} images in {chosen['group'].nunique():,} lesion "
              f"group(s): with the default settings `train` refuses it ({why}), so every student's run would "
              f"fail; choose a larger --fraction than {fraction:g}", file=sys.stderr)


def _entry(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
