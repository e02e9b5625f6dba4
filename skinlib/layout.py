"""The ISIC 2019 training set's layout: its classes, its file names, the pixel statistics the networks
are fed with, and the errors bad data raises.

The folder has the layout of the official download::

    DATA/ISIC_2019_Training_GroundTruth.csv   image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK (one-hot)
    DATA/ISIC_2019_Training_Metadata.csv      image,age_approx,anatom_site_general,lesion_id,sex
    DATA/ISIC_2019_Training_Input/<image>.jpg
"""
from __future__ import annotations

import os
from pathlib import Path

from skinlib.errors import SkinlibError

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
# The channel statistics of ImageNet that every network here is fed normalised with (the pretrained
# ResNet-50 expects them; the SimpleCNN shares them so that one evaluation view serves both).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

IMAGES_DIR = "ISIC_2019_Training_Input"
GROUND_TRUTH_CSV = "ISIC_2019_Training_GroundTruth.csv"
METADATA_CSV = "ISIC_2019_Training_Metadata.csv"
METADATA_COLUMNS = ("image", "age_approx", "anatom_site_general", "lesion_id", "sex")
IMAGE_SUFFIX = ".jpg"
# Pillow names a camera's multi-picture JPEG "MPO": its first frame is an ordinary JPEG.
JPEG_FORMATS = ("JPEG", "MPO")

EXPECTED_LAYOUT = f"""an ISIC 2019 folder laid out like the official download:
    DATA/{GROUND_TRUTH_CSV}
    DATA/{METADATA_CSV} (optional: lesion ids, used to keep a lesion in one split)
    DATA/{IMAGES_DIR}/ISIC_0000000.jpg ...
(`python -m skinlib download DATA` fetches it; `python -m skinlib synth DATA` writes a synthetic one)"""

# How many offending names or rows a message lists before it says "... and N more".
MAX_LISTED = 5


class DataError(SkinlibError, ValueError):
    """A dataset folder, CSV or image is not usable; the message names the file (and row)."""


class ImageError(DataError):
    """An image cannot be decoded: missing, empty, truncated, not a JPEG, or too large."""


class DataWarning(UserWarning):
    """Something was ignored (and counted): images without a CSV row, a missing metadata file."""


SYNTHETIC_MARKER = "SYNTHETIC.txt"  # what `skinlib.acquire.synth.make_synthetic` leaves in its folders
FIRST_SYNTHETIC_NUMBER = 9_000_000  # synthetic images are ISIC_9xxxxxx: real ISIC 2019 names stop below ISIC_0074000


def synthetic_image_ids(images) -> list[str]:
    """The ids among `images` that only `make_synthetic` writes (ISIC_9000000 and up): they mark a
    copy of the synthetic set as synthetic even when its SYNTHETIC.txt was left behind."""
    return [image for image in images
            if image.startswith("ISIC_") and image[5:].isdigit() and int(image[5:]) >= FIRST_SYNTHETIC_NUMBER]


def is_synthetic(data_dir: str | os.PathLike) -> bool:
    """True if the folder carries the SYNTHETIC.txt marker written by `make_synthetic`, or its
    ground truth lists synthetic images (a copy made without the marker is still synthetic)."""
    data_dir = Path(data_dir)
    if (data_dir / SYNTHETIC_MARKER).is_file():
        return True
    try:
        with open(data_dir / GROUND_TRUTH_CSV, encoding="utf-8-sig") as csv:
            return bool(synthetic_image_ids(line.split(",", 1)[0].strip() for line in csv))
    except (OSError, UnicodeDecodeError, ValueError):  # no readable CSV: the checks that read it say why
        return False
