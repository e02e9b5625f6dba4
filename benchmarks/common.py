"""Shared pieces of the benchmarks: SYNTHETIC lesion-like JPEGs, machine facts, tables, JSON."""
from __future__ import annotations

import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from skinlib.data import CLASSES, GROUND_TRUTH_CSV, IMAGES_DIR, METADATA_CSV
from skinlib.device import available_cpus

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------- synthetic images
def _smooth_field(rng: np.random.Generator, cells: int, width: int, height: int) -> np.ndarray:
    """A smooth random field in [0, 1] of shape (height, width): a coarse grid, bicubic-upsampled."""
    coarse = rng.random((cells, cells), dtype=np.float32)
    image = Image.fromarray((coarse * 255).astype(np.uint8))
    return np.asarray(image.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32) / 255


def lesion_image(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A SYNTHETIC dermoscopy-like RGB uint8 image: skin, a darker irregular blob, texture, noise.

    Not a picture of anything: it exists so that JPEG files have realistic sizes and decode
    costs (smooth regions, edges, fine texture and sensor-like noise), unlike pure noise
    (incompressible, far too large) or flat colour (tiny, decodes too fast). At quality 90 a
    1024x1024 image is about 250 KB, a 600x450 one about 65 KB.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = width * rng.uniform(0.4, 0.6), height * rng.uniform(0.4, 0.6)
    radius = min(width, height) * rng.uniform(0.2, 0.35)
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = (1 + 0.15 * np.sin(3 * angle + rng.uniform(0, 6))
              + 0.08 * np.sin(7 * angle + rng.uniform(0, 6)))
    distance = np.hypot((xx - cx) / 1.2, yy - cy) / (radius * wobble)
    mask = (1 / (1 + np.exp((distance - 1) * 12)))[..., None]
    skin = np.array([225, 180, 160], np.float32) * (0.85 + 0.3 * _smooth_field(rng, 6, width, height))[..., None]
    spot = np.array([110, 70, 50], np.float32) * (0.7 + 0.6 * _smooth_field(rng, 24, width, height))[..., None]
    image = skin * (1 - mask) + spot * mask
    image += 18 * (_smooth_field(rng, max(width, height) // 8, width, height)[..., None] - 0.5)
    image += rng.standard_normal(image.shape, dtype=np.float32) * 7
    return np.clip(image, 0, 255).astype(np.uint8)


def _write_images(task: tuple[list[str], int, int, int, int]) -> None:
    paths, width, height, quality, seed = task
    rng = np.random.default_rng(seed)
    for path in paths:
        Image.fromarray(lesion_image(width, height, rng)).save(path, "JPEG", quality=quality)


def write_dataset(out_dir: str | os.PathLike, n: int, width: int, height: int, *, quality: int = 90,
                  seed: int = 0, workers: int | None = None) -> Path:
    """Write n SYNTHETIC lesion-like JPEGs in the ISIC 2019 layout (both CSVs, SYNTHETIC.txt).

    Labels cycle through the classes; every image is its own lesion. Generated in parallel.
    """
    out = Path(out_dir)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    names = [f"SYN_{i:07d}" for i in range(n)]
    paths = [str(out / IMAGES_DIR / f"{name}.jpg") for name in names]
    workers = workers or available_cpus()
    per_task = max(1, -(-n // (4 * workers)))
    tasks = [(paths[i:i + per_task], width, height, quality, seed * 100_003 + i)
             for i in range(0, n, per_task)]
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_images, tasks))
    else:
        for task in tasks:
            _write_images(task)
    rows = ["image," + ",".join(CLASSES) + ",UNK"]
    for i, name in enumerate(names):
        onehot = ["1.0" if k == i % len(CLASSES) else "0.0" for k in range(len(CLASSES))]
        rows.append(",".join([name, *onehot, "0.0"]))
    (out / GROUND_TRUTH_CSV).write_text("\n".join(rows) + "\n")
    meta = ["image,age_approx,anatom_site_general,lesion_id,sex"]
    meta += [f"{name},50.0,back,SYN_LESION_{i:07d},female" for i, name in enumerate(names)]
    (out / METADATA_CSV).write_text("\n".join(meta) + "\n")
    (out / "SYNTHETIC.txt").write_text(
        f"SYNTHETIC benchmark images ({n} lesion-like JPEGs, {width}x{height}, quality {quality}); "
        "not dermoscopy, not ISIC data.\n")
    return out


def mean_file_bytes(data_dir: Path) -> float:
    files = list((Path(data_dir) / IMAGES_DIR).glob("*.jpg"))
    return float(np.mean([f.stat().st_size for f in files]))


# ---------------------------------------------------------------- machine, tables, JSON
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | None = None) -> dict:
    info = {
        "cpus_available": available_cpus(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if device is not None:
        info["device"] = str(device)
        if device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(device)
    return info


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A plain-text table; columns are (key, header, format spec)."""
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        cells.append([("" if row.get(key) is None else format(row[key], spec))
                      for key, _, spec in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if k else c.ljust(w) for k, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(result: dict, name: str, out: str | os.PathLike | None) -> Path:
    """Write `result` to `out`, or to benchmarks/results/<name>.json."""
    path = Path(out) if out else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def with_one_torch_thread(run, args) -> int:
    """`run(args)` with torch limited to one thread: a loop that does no maths stays off the cores
    its DataLoader workers use."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)
