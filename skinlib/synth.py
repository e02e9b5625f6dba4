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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from skinlib.data import (
    CLASSES, GROUND_TRUTH_CSV, IMAGE_SUFFIX, IMAGES_DIR, METADATA_COLUMNS, METADATA_CSV, UNKNOWN_CLASS,
    DataError,
)

MARKER = "SYNTHETIC.txt"
WIDTH, HEIGHT = 300, 225  # 4:3 like the HAM10000 images, small so decoding stays cheap
FIRST_IMAGE_NUMBER = 9_000_000  # ISIC_9xxxxxx: real ISIC 2019 names stop below ISIC_0074000
# Images per class in the real ISIC 2019 training set (shared/README.md), scaled to n.
REAL_CLASS_COUNTS = dict(MEL=4522, NV=12875, BCC=3323, AK=867, BKL=2624, DF=239, VASC=253, SCC=628)
MIN_IMAGES_PER_CLASS = 3
# Images per lesion: mean 1.8 as in the real set (25,331 images of 13,931 lesion groups).
LESION_SIZES, LESION_SIZE_P = (1, 2, 3, 4, 5), (0.55, 0.25, 0.10, 0.06, 0.04)
SITES = ("anterior torso", "posterior torso", "lower extremity", "upper extremity", "head/neck",
         "lateral torso", "palms/soles", "oral/genital")
SKIN_TONES = np.array([(0.93, 0.78, 0.70), (0.90, 0.72, 0.62), (0.84, 0.66, 0.55), (0.76, 0.58, 0.46)])

MARKER_TEXT = """SYNTHETIC DATA - NOT MEDICAL IMAGES

Every image in this folder was drawn by skinlib.synth.make_synthetic (n={n}, seed={seed}).
The "lesions" are coloured shapes, and the labels, lesion ids, ages, sites and sexes are made up.
The folder has the layout of the ISIC 2019 download only so that the course's code runs end to
end without it. Scores measured on it say nothing about skin lesions or about a model's use
on real patients. For real results, download ISIC 2019 (`python -m skinlib download`).
"""


@dataclass(frozen=True)
class Style:
    """How one class is drawn. Colours are RGB in 0..1; sizes are in lesion radii."""

    colour: tuple[float, float, float]
    radius: tuple[float, float]        # lesion radius range, as a share of half the image height
    irregularity: float                # amplitude of the border's wobble
    edge: float                        # border softness: 0.02 sharp ... 0.3 diffuse
    opacity: float
    blotches: tuple = ()               # ((r, g, b), how many, size, sharp?) inside the lesion
    centre: tuple | None = None        # ((r, g, b), size): a central patch
    vessels: str | None = None         # "branching" lines or "dotted"
    scale: bool = False                # white flaky patches


STYLES = {
    "MEL": Style((0.30, 0.18, 0.12), (0.70, 0.90), 0.22, 0.04, 0.95,
                 blotches=(((0.07, 0.05, 0.05), 2, 0.35, False), ((0.42, 0.47, 0.62), 2, 0.30, False),
                           ((0.58, 0.38, 0.25), 1, 0.30, False))),
    "NV": Style((0.52, 0.33, 0.21), (0.45, 0.60), 0.04, 0.05, 0.90),
    "BCC": Style((0.90, 0.64, 0.64), (0.50, 0.70), 0.08, 0.06, 0.75,
                 blotches=(((0.36, 0.40, 0.54), 3, 0.13, False),), vessels="branching"),
    "AK": Style((0.86, 0.40, 0.33), (0.60, 0.80), 0.15, 0.30, 0.60, scale=True),
    "BKL": Style((0.68, 0.52, 0.30), (0.50, 0.70), 0.10, 0.02, 0.88,
                 blotches=(((0.97, 0.95, 0.86), 6, 0.06, True), ((0.25, 0.17, 0.10), 4, 0.05, True))),
    "DF": Style((0.62, 0.44, 0.32), (0.30, 0.40), 0.05, 0.15, 0.80, centre=((0.97, 0.94, 0.90), 0.45)),
    "VASC": Style((0.74, 0.26, 0.33), (0.35, 0.50), 0.10, 0.03, 0.95,
                  blotches=(((0.45, 0.03, 0.15), 4, 0.22, True), ((0.35, 0.05, 0.32), 3, 0.20, True))),
    "SCC": Style((0.88, 0.56, 0.50), (0.50, 0.65), 0.10, 0.08, 0.80,
                 centre=((0.94, 0.86, 0.55), 0.50), vessels="dotted"),
}
# Typical age per diagnosis, so that the metadata looks plausible (not a cue the course uses).
MEAN_AGE = dict(MEL=60, NV=45, BCC=65, AK=70, BKL=60, DF=45, VASC=50, SCC=70)


# --------------------------------------------------------------------------- drawing
@dataclass
class Lesion:
    """One lesion: its class and shape, fixed across all photos of it."""

    label: int
    colour: np.ndarray
    radius: float
    harmonics: np.ndarray      # (k, amplitude, phase) rows of the border's wobble
    blotches: list             # (u, v, size, colour, sharp) in lesion coordinates
    vessels: list              # polylines or dots, in lesion coordinates
    skin: np.ndarray


def _make_lesion(label: int, rng: np.random.Generator) -> Lesion:
    style = STYLES[CLASSES[label]]
    colour = np.clip(np.array(style.colour) * rng.uniform(0.92, 1.08, 3), 0, 1)
    ks = np.arange(2, 9)
    amplitudes = style.irregularity * rng.uniform(0.3, 1.0, len(ks)) / np.sqrt(ks - 1)
    harmonics = np.stack([ks, amplitudes, rng.uniform(0, 2 * np.pi, len(ks))], axis=1)
    blotches = []
    for blotch_colour, count, size, sharp in style.blotches:
        for _ in range(count):
            angle, dist = rng.uniform(0, 2 * np.pi), 0.6 * np.sqrt(rng.uniform())
            blotches.append((dist * np.cos(angle), dist * np.sin(angle), size * rng.uniform(0.7, 1.3),
                             np.array(blotch_colour), sharp))
    vessels = []
    if style.vessels == "branching":
        for _ in range(rng.integers(3, 6)):
            point, heading = rng.uniform(-0.5, 0.5, 2), rng.uniform(0, 2 * np.pi)
            line = [tuple(point)]
            for _ in range(6):
                heading += rng.normal(0, 0.6)
                point = point + 0.14 * np.array([np.cos(heading), np.sin(heading)])
                line.append(tuple(point))
            vessels.append(line)
    elif style.vessels == "dotted":
        for _ in range(rng.integers(12, 20)):
            angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.55, 0.85)
            vessels.append([(dist * np.cos(angle), dist * np.sin(angle))])
    return Lesion(label, colour, rng.uniform(*style.radius), harmonics, blotches, vessels,
                  skin=SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.96, 1.04, 3))


def _low_frequency_noise(rng: np.random.Generator, shape: tuple[int, int], cells=(6, 8)) -> np.ndarray:
    """Smooth noise in -1..1 of `shape`: random cells upsampled with bicubic interpolation."""
    coarse = Image.fromarray(rng.uniform(0, 255, cells).astype(np.uint8))
    return np.asarray(coarse.resize(shape[::-1], Image.BICUBIC), dtype=np.float32) / 127.5 - 1


def _draw_view(lesion: Lesion, rng: np.random.Generator) -> Image.Image:
    """One photo of a lesion: new position, rotation, scale, lighting, hairs, maybe a dark vignette."""
    style = STYLES[CLASSES[lesion.label]]
    # The smooth layers are computed at half resolution and upsampled: 4x fewer pixels, and
    # the class cues are low-frequency anyway. Thin lines (vessels, hairs) come at full size.
    h, w = HEIGHT // 2, WIDTH // 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) * 2
    cx, cy = WIDTH / 2 + rng.normal(0, 12), HEIGHT / 2 + rng.normal(0, 9)
    radius = lesion.radius * rng.uniform(0.9, 1.1) * HEIGHT / 2
    angle = rng.uniform(0, 2 * np.pi)
    cos, sin = np.cos(angle), np.sin(angle)
    # Lesion coordinates: rotated and scaled so that the border sits near rho = 1.
    u = ((xx - cx) * cos + (yy - cy) * sin) / radius
    v = (-(xx - cx) * sin + (yy - cy) * cos) / radius
    rho, phi = np.hypot(u, v), np.arctan2(v, u)

    # Skin, lit unevenly, with a faint mottled texture.
    light_x, light_y = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT)
    light = 1.0 - 0.6 * ((xx - light_x) ** 2 + (yy - light_y) ** 2) / (WIDTH**2 + HEIGHT**2)
    img = lesion.skin.astype(np.float32) * (light * (1 + 0.03 * _low_frequency_noise(rng, (h, w))))[..., None]

    # The border radius as a function of angle, tabulated once and interpolated per pixel.
    table = np.linspace(-np.pi, np.pi, 361)
    border = 1 + sum(a * np.cos(k * table + p) for k, a, p in lesion.harmonics)
    inside = 1 / (1 + np.exp((rho - np.interp(phi, table, border)) / style.edge))
    colour = lesion.colour.astype(np.float32) * (1 + 0.06 * _low_frequency_noise(rng, (h, w)))[..., None]
    for bu, bv, size, blotch_colour, sharp in lesion.blotches:
        d = np.hypot(u - bu, v - bv)
        weight = 1 / (1 + np.exp((d - size) / 0.02)) if sharp else np.exp(-((d / size) ** 2))
        colour += (weight * inside)[..., None] * (blotch_colour - colour)
    if style.centre is not None:
        centre_colour, size = style.centre
        weight = np.exp(-((rho / size) ** 4))
        colour += weight[..., None] * (np.asarray(centre_colour, dtype=np.float32) - colour)
    if style.scale:
        flakes = np.clip((_low_frequency_noise(rng, (h, w), (12, 16)) - 0.35) * 3, 0, 1) * (rho < 0.9)
        colour += flakes[..., None] * (np.array((0.96, 0.93, 0.88), dtype=np.float32) - colour)
    alpha = (inside * style.opacity)[..., None]
    img = img * (1 - alpha) + colour * alpha

    image = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).resize((WIDTH, HEIGHT), Image.BICUBIC)
    draw = ImageDraw.Draw(image)

    def to_pixels(points):
        return [(cx + radius * (pu * cos - pv * sin), cy + radius * (pu * sin + pv * cos)) for pu, pv in points]

    for vessel in lesion.vessels:
        if len(vessel) == 1:
            (px, py), = to_pixels(vessel)
            draw.ellipse((px - 2.5, py - 2.5, px + 2.5, py + 2.5), fill=(180, 35, 40))
        else:
            draw.line(to_pixels(vessel), fill=(175, 25, 35), width=2)

    for _ in range(rng.choice(6, p=(0.4, 0.2, 0.15, 0.1, 0.1, 0.05))):
        # A hair: a gentle curve across the field, dark and thin.
        start, end = rng.uniform((0, 0), (WIDTH, HEIGHT)), rng.uniform((0, 0), (WIDTH, HEIGHT))
        bend = rng.normal(0, 30, 2)
        t = np.linspace(0, 1, 20)[:, None]
        points = (1 - t) ** 2 * start + 2 * (1 - t) * t * ((start + end) / 2 + bend) + t**2 * end
        shade = int(rng.integers(30, 70))
        draw.line([tuple(p) for p in points], fill=(shade, shade - 10, shade - 20), width=int(rng.integers(1, 3)))

    pixels = np.asarray(image, dtype=np.float32)
    if rng.uniform() < 0.25:
        # The dark circular edge of a contact dermatoscope's field of view.
        fy, fx = np.ogrid[0:HEIGHT, 0:WIDTH]
        field = np.hypot(fx - WIDTH / 2, fy - HEIGHT / 2) / (rng.uniform(0.52, 0.62) * WIDTH)
        pixels = pixels * np.clip((1.05 - field) * 10, 0.05, 1)[..., None]
    pixels += 3 * rng.standard_normal(pixels.shape, dtype=np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


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
            lesions.append(_make_lesion(label, rng))
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
    table.insert(0, "image", [f"ISIC_{FIRST_IMAGE_NUMBER + i:07d}" for i in range(len(table))])
    return table, lesions, rng


def is_synthetic(data_dir: str | os.PathLike) -> bool:
    """True if the folder carries the SYNTHETIC.txt marker written by `make_synthetic`."""
    return (Path(data_dir) / MARKER).is_file()


def make_synthetic(out_dir: str | os.PathLike, n: int = 800, seed: int = 0) -> Path:
    """Write n synthetic images in the ISIC 2019 layout (both CSVs, JPEGs, SYNTHETIC.txt).

    The same (n, seed) gives the same files. An existing folder is replaced only if it is an
    earlier synthetic set; any other non-empty folder is refused. Returns the folder.
    """
    if n < 8 * MIN_IMAGES_PER_CLASS + 16:
        raise ValueError(f"n must be at least {8 * MIN_IMAGES_PER_CLASS + 16} (every class needs a few lesions)")
    out = Path(out_dir)
    if out.exists():
        if is_synthetic(out):
            shutil.rmtree(out)
        elif not out.is_dir() or any(out.iterdir()):
            raise DataError(f"{out}: exists and is not an empty folder or a synthetic set; not writing into it")
    images_dir = out / IMAGES_DIR
    images_dir.mkdir(parents=True, exist_ok=True)
    # The marker comes first, so that even a half-written folder says what it is.
    (out / MARKER).write_text(MARKER_TEXT.format(n=n, seed=seed))

    table, lesions, rng = _plan(n, seed)
    for image, lesion in zip(table["image"], table["lesion"]):
        _draw_view(lesions[lesion], rng).save(images_dir / f"{image}{IMAGE_SUFFIX}", quality=88)

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
        path = Path(value).expanduser()
        if not path.is_dir():
            raise DataError(
                f"SKINLIB_DATA={value}: folder does not exist; point it at the ISIC 2019 folder "
                "(the one holding ISIC_2019_Training_GroundTruth.csv), or unset it to use synthetic data"
            )
        return path
    cache = Path(os.environ.get("SKINLIB_CACHE") or Path.home() / ".cache" / "skinlib").expanduser()
    path = cache / f"synthetic-{n}-{seed}"
    if not is_synthetic(path):
        cache.mkdir(parents=True, exist_ok=True)
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
