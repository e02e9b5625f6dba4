"""Decoding an image file into an RGB picture, with an `ImageError` naming any file that fails."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from skinlib.layout import ImageError


def decode(path: Path, reduced: bool) -> Image.Image:
    """Open and fully decode an image; every failure becomes an ImageError naming the file.

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
    return _to_rgb(decode(Path(path), reduced=False))
