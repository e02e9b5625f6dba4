"""Decoding an image file into an RGB picture (an `ImageError` names any file that fails), and
the stored form every training image takes before augmentation (`stored_form`, `load_resized`)."""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from skinlib.layout import JPEG_FORMATS, ImageError

# Side of the stored form: Resize(256) + CenterCrop(224), the evaluation view, lies inside it.
STORED_SIZE = 256


def decode(path: Path, reduced: bool, any_format: bool = False) -> Image.Image:
    """Open and fully decode an image; every failure becomes an ImageError naming the file.

    A file named .jpg/.jpeg must be a JPEG, as every image of the dataset is, unless `any_format`
    (a user's own picture, given to predict: a BMP named .JPG is still a picture).

    `reduced` decodes a JPEG at 1/8 scale (Pillow's draft mode, DCT scaling): the whole
    compressed stream is still read, so truncation and corruption are found, at a small
    fraction of the cost of a full decode. That is how `data.check_dataset` verifies images.
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
                if not any_format and path.suffix.lower() in (".jpg", ".jpeg") and image.format not in JPEG_FORMATS:
                    raise ImageError(
                        f"{path}: is a {image.format} image named {path.suffix}; the dataset's images "
                        "must be JPEG files (re-save it as JPEG)"
                    )
                if reduced:
                    image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()  # the pixels stay usable after the file is closed
                return image
    except (PermissionError, IsADirectoryError) as exc:  # the file is fine; the system will not let us read it
        raise ImageError(f"{path}: image cannot be read ({exc.strerror})") from None
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


def open_image(path: str | os.PathLike, any_format: bool = False) -> Image.Image:
    """Decode an image into an RGB PIL image; raise ImageError naming the file if it cannot.
    `any_format`: see `decode`."""
    return _to_rgb(_eight_bit(decode(Path(path), reduced=False, any_format=any_format), Path(path)))


def _eight_bit(image: Image.Image, path: Path) -> Image.Image:
    """A 16-bit greyscale image (PNG, TIFF) scaled to 8 bits over its whole range, 65535 -> 255.

    Pillow's own conversion clips every value above 255 to white, so a 16-bit picture would
    turn all white. Mode "I" (32-bit integers, how some Pillow versions and TIFFs hold 16-bit
    greyscale) is read the same way when its values fit 16 bits; other 32-bit and floating-point
    pictures have no agreed 8-bit form and are refused. 8-bit images pass through untouched.
    """
    if image.mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return image
    pixels = np.asarray(image)
    low, high = (pixels.min(), pixels.max()) if pixels.size else (0, 0)
    if image.mode == "F" or low < 0 or high > 65535:
        raise ImageError(f"{path}: an image of mode {image.mode} with values from {low} to {high}, which has "
                         f"no 8-bit form the kit can choose for you; save it as an 8-bit image")
    return Image.fromarray(np.round(pixels / 257).astype(np.uint8))  # mode L


# --------------------------------------------------------------------------- the stored form
def stored_form(image: Image.Image, size: int = STORED_SIZE) -> np.ndarray:
    """`image` as uint8 [size, size, 3]: short side resized to `size`, then the centre square.

    One bilinear resize with antialiasing, straight from the source's centre square (`box=`),
    so the short-side resize and the centre crop are one step. This is the form every
    training image takes before augmentation, and what the prepared-image cache stores.
    """
    image = _to_rgb(image)
    w, h = image.size
    side = min(w, h)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=box), dtype=np.uint8)


def load_resized(path: str | os.PathLike, size: int = STORED_SIZE) -> np.ndarray:
    """The image at `path` in its stored form (see `stored_form`), decoded as fast as possible.

    For JPEGs, Pillow's draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale in the DCT
    domain (never below the target size), which is 3-5x faster for the 1024x1024 and larger
    photos. Unreadable files raise `ImageError` naming the file (via `open_image`).
    """
    image = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as source:
                if source.format in JPEG_FORMATS and source.mode in ("RGB", "YCbCr"):
                    w, h = source.size
                    scale = size / min(w, h)
                    source.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
                    image = source.convert("RGB")
    except Exception:  # noqa: BLE001 - open_image below names the file and the problem
        image = None
    return stored_form(image if image is not None else open_image(path), size)
