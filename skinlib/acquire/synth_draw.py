"""Drawing the SYNTHETIC images: one class style each, one lesion, many photos of it.

NOT medical images: see `synth` for what the classes look like and why.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from skinlib.layout import CLASSES

WIDTH, HEIGHT = 300, 225  # 4:3 like the HAM10000 images, small so decoding stays cheap
SKIN_TONES = np.array([(0.93, 0.78, 0.70), (0.90, 0.72, 0.62), (0.84, 0.66, 0.55), (0.76, 0.58, 0.46)])


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


def make_lesion(label: int, rng: np.random.Generator) -> Lesion:
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


def draw_view(lesion: Lesion, rng: np.random.Generator) -> Image.Image:
    """One photo of a lesion: new position, rotation, scale, lighting, hairs, maybe a dark vignette.

    One picture drawn layer by layer (skin, lesion, blotches, vessels, scale, then the hairs and
    vignette of `_hairs_and_field`), in the order they overlap; each layer is a few lines.
    """
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

    return _hairs_and_field(image, draw, rng)


def _hairs_and_field(image: Image.Image, draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> Image.Image:
    """The top layers of a photo: a few hairs across it, sometimes the dermatoscope's dark edge, and noise."""
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
