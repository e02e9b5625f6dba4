"""A synthetic dermoscopy-like dataset in exactly the layout of the ISIC 2019 download.

It lets every notebook and test run end to end without the 9 GB download. It is NOT medical
data: the "lesions" are drawn shapes whose eight classes differ in deliberately strong,
low-frequency cues (colour, size, shape, border, a few structures) so that even the seed's
SimpleCNN learns them quickly, and so that the cues survive resizing, cropping, flips and
rotation. Each class borrows the textbook look of its diagnosis:

    MEL   large, dark, irregular border, black and blue-grey blotches
    NV    round, uniform medium brown, smooth border
    BCC   translucent pearly pink, red branching vessels, blue-grey nests
    AK    red diffuse patch with white scale
    BKL   tan, sharp lobulated "stuck-on" border, white and dark dots
    DF    small, white central scar inside a light-brown ring
    VASC  deep red and purple round lacunae
    SCC   pink with a yellow-white keratin centre and dotted red vessels

A lesion is photographed several times (new position, rotation, scale, lighting, hairs), like
the real archive; its images share a lesion_id. Class sizes follow the real class imbalance.
The folder carries a SYNTHETIC.txt marker, and `default_data_dir` announces it loudly.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from skinlib.data import (
    CLASSES, GROUND_TRUTH_CSV, IMAGE_SUFFIX, IMAGES_DIR, METADATA_COLUMNS, METADATA_CSV, UNKNOWN_CLASS,
    DataError,
)
from skinlib.storage.folders import cache_home, claim_folder, expand_home
from skinlib.layout import FIRST_SYNTHETIC_NUMBER, SYNTHETIC_MARKER, is_synthetic
from skinlib.acquire.synth_draw import Lesion, draw_view, make_lesion
# Images per class in the real ISIC 2019 training set (shared/README.md), scaled to n.
REAL_CLASS_COUNTS = dict(MEL=4522, NV=12875, BCC=3323, AK=867, BKL=2624, DF=239, VASC=253, SCC=628)
MIN_IMAGES_PER_CLASS = 3
# Images per lesion: mean 1.8 as in the real set (25,331 images of 13,931 lesion groups).
LESION_SIZES, LESION_SIZE_P = (1, 2, 3, 4, 5), (0.55, 0.25, 0.10, 0.06, 0.04)
SITES = ("anterior torso", "posterior torso", "lower extremity", "upper extremity", "head/neck",
         "lateral torso", "palms/soles", "oral/genital")

MARKER_TEXT = """SYNTHETIC DATA - NOT MEDICAL IMAGES

Every image in this folder was drawn by skinlib.acquire.synth.make_synthetic (n={n}, seed={seed}).
The "lesions" are coloured shapes, and the labels, lesion ids, ages, sites and sexes are made up.
The folder has the layout of the ISIC 2019 download only so that the course's code runs end to
end without it. Scores measured on it say nothing about skin lesions or about a model's use
on real patients. For real results, download ISIC 2019 (`python -m skinlib download`).
"""

# Typical age per diagnosis, so that the metadata looks plausible (not a cue the course uses).
MEAN_AGE = dict(MEL=60, NV=45, BCC=65, AK=70, BKL=60, DF=45, VASC=50, SCC=70)


# --------------------------------------------------------------------------- the dataset
def _class_counts(n: int) -> np.ndarray:
    """Images per class: the real shares scaled to n (largest remainders), at least a few each."""
    real = np.array([REAL_CLASS_COUNTS[c] for c in CLASSES], dtype=float)
    exact = real / real.sum() * n
    counts = np.floor(exact).astype(int)
    counts[np.argsort(-(exact - counts))[: n - counts.sum()]] += 1
    short = np.maximum(MIN_IMAGES_PER_CLASS - counts, 0)
    counts += short
    counts[CLASSES.index("NV")] -= short.sum()  # the largest class pays for the minimum
    return counts


def _plan(n: int, seed: int) -> tuple[pd.DataFrame, list[Lesion], np.random.Generator]:
    """The table of images (one row per photo) and the lesions they show."""
    rng = np.random.default_rng(seed)
    rows, lesions = [], []
    for label, count in enumerate(_class_counts(n)):
        remaining = count
        while remaining > 0:
            # Capping the lesion size at count // 3 keeps at least three lesions per class.
            size = min(int(rng.choice(LESION_SIZES, p=LESION_SIZE_P)), remaining, max(1, count // 3))
            lesion_number = len(lesions)
            lesions.append(make_lesion(label, rng))
            name = CLASSES[label]
            age = int(np.clip(round(rng.normal(MEAN_AGE[name], 12) / 5) * 5, 5, 85))
            site = SITES[min(int(rng.exponential(2.0)), len(SITES) - 1)]
            sex = ("female", "male")[int(rng.integers(2))]
            # Like the oldest real archive images, some single photos have no lesion id.
            lesion_id = "" if size == 1 and rng.uniform() < 0.1 else f"SYN_{lesion_number:07d}"
            for _ in range(size):
                rows.append(dict(
                    lesion=lesion_number, label=label, lesion_id=lesion_id,
                    age_approx="" if rng.uniform() < 0.02 else str(age),
                    anatom_site_general="" if rng.uniform() < 0.05 else site,
                    sex="" if rng.uniform() < 0.02 else sex,
                ))
            remaining -= size
    table = pd.DataFrame(rows).sample(frac=1, random_state=seed).reset_index(drop=True)
    table.insert(0, "image", [f"ISIC_{FIRST_SYNTHETIC_NUMBER + i:07d}" for i in range(len(table))])
    return table, lesions, rng


def make_synthetic(out_dir: str | os.PathLike, n: int = 800, seed: int = 0) -> Path:
    """Write n synthetic images in the ISIC 2019 layout (both CSVs, JPEGs, SYNTHETIC.txt).

    The same (n, seed) gives the same files. In a folder that holds an earlier synthetic set,
    only that set's files are replaced; a folder holding anything else is refused (FolderError,
    see `files.claim_folder`). Returns the folder.
    """
    if n < 8 * MIN_IMAGES_PER_CLASS + 16:
        raise ValueError(f"n must be at least {8 * MIN_IMAGES_PER_CLASS + 16} (every class needs a few lesions)")
    out = Path(out_dir)
    folder = claim_folder(out, "synthetic", option="output folder")
    with folder.lock("another synth"):  # two synth runs into one folder would mix their images
        folder.remove_all()  # an earlier synthetic set: its files only, never the user's
        table, lesions, rng = _plan(n, seed)
        folder.record(SYNTHETIC_MARKER, GROUND_TRUTH_CSV, METADATA_CSV, IMAGES_DIR,
                      *(f"{IMAGES_DIR}/{image}{IMAGE_SUFFIX}" for image in table["image"]))
        images_dir = out / IMAGES_DIR
        images_dir.mkdir(parents=True, exist_ok=True)
        # The marker comes first, so that even a half-written folder says what it is.
        (out / SYNTHETIC_MARKER).write_text(MARKER_TEXT.format(n=n, seed=seed))

        for image, lesion in zip(table["image"], table["lesion"]):
            draw_view(lesions[lesion], rng).save(images_dir / f"{image}{IMAGE_SUFFIX}", quality=88)

        onehot = np.zeros((len(table), len(CLASSES) + 1))
        onehot[np.arange(len(table)), table["label"]] = 1.0
        truth = pd.DataFrame(onehot, columns=[*CLASSES, UNKNOWN_CLASS])
        truth.insert(0, "image", table["image"])
        truth.to_csv(out / GROUND_TRUTH_CSV, index=False, float_format="%.1f")
        table[list(METADATA_COLUMNS)].to_csv(out / METADATA_CSV, index=False)
    return out


def default_data_dir(*, n: int = 800, seed: int = 0) -> Path:
    """$SKINLIB_DATA if set; else the embedded synthetic set, generated on first use.

    The synthetic set lives in $SKINLIB_CACHE (default ~/.cache/skinlib) as synthetic-<n>-<seed>.
    It is written to a temporary folder and renamed into place, so an interrupted or concurrent
    first use never leaves a half-written set behind. Every call with synthetic data says so.
    """
    value = os.environ.get("SKINLIB_DATA")
    if value:
        path = expand_home(value)
        if path.is_file():
            inside = f" ({path.parent})" if path.name.endswith(".csv") else ""
            raise DataError(f"SKINLIB_DATA={value}: is a file, not a folder; point it at the folder that holds "
                            f"the dataset{inside}, or unset it to use synthetic data")
        if not path.is_dir():
            raise DataError(
                f"SKINLIB_DATA={value}: folder does not exist; point it at the ISIC 2019 folder "
                "(the one holding ISIC_2019_Training_GroundTruth.csv), or unset it to use synthetic data"
            )
        return path
    cache = cache_home()
    path = cache / f"synthetic-{n}-{seed}"
    if not is_synthetic(path):
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # a file of that name, or no permission: say which setting chose the folder
            where = f"SKINLIB_CACHE={cache}" if os.environ.get("SKINLIB_CACHE") else f"{cache} (SKINLIB_CACHE unset)"
            raise DataError(f"{where}: cannot create the folder for the synthetic set ({err.strerror or err}); "
                            f"set SKINLIB_CACHE to a folder you can write, or SKINLIB_DATA to a dataset") from None
        temporary = cache / f".{path.name}.{uuid.uuid4().hex}.tmp"
        print(f"generating {n} SYNTHETIC images in {path} (once) ...", flush=True)
        make_synthetic(temporary, n=n, seed=seed)
        try:
            os.replace(temporary, path)
        except OSError:  # another process renamed its copy into place first
            shutil.rmtree(temporary, ignore_errors=True)
            if not is_synthetic(path):
                raise DataError(f"{path}: exists but is not a synthetic set; move it away") from None
    bar = "=" * 78
    print(f"{bar}\nSYNTHETIC DATA in {path}\n"
          "  drawn shapes, NOT medical images: scores on them say nothing about skin lesions.\n"
          "  Set SKINLIB_DATA to an ISIC 2019 folder to use the real data.\n" + bar, flush=True)
    return path
