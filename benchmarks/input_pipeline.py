"""Images per second an input pipeline delivers to a training loop, on this machine's CPUs.

    python -m benchmarks.input_pipeline [--n 300] [--workers 2] [--out FILE]

On the same SYNTHETIC lesion-like JPEGs (a 1024x1024 set like BCN_20000 and a 600x450 set
like HAM10000, quality 90), with training augmentation at 224x224, batches of 64, in a
DataLoader with `--workers` processes, the loop only counts the batches (no model):

- stock:   Pillow open + RandomResizedCrop(224) + flips + ToTensor + Normalize per sample
- cached:  `skinlib.storage.prepare.prepare` once, then CachedDataset (memory-mapped uint8 rows,
           the training augmentation `skinlib.augment.TrainAugment` on uint8: crop, flips,
           rotation by any angle and colour jitter, one OpenCV warp and one colour matrix;
           each image's draws seeded by the sampler as in training; normalisation happens
           on the GPU)
- jpeg256: the alternative cache format: each prepared 256x256 image saved as a small JPEG
           (quality 90), decoded per sample, then the same uint8 augmentation

For each pipeline also the CPU time per image of the loader's processes (workers and
main), which other jobs on the machine change far less than the images per second.
It also times `prepare` and reports the cache's size, and the size of a full ISIC 2019
cache. Prints a table and writes JSON (default benchmarks/results/input_pipeline.json).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from benchmarks.common import (format_table, machine_info, mean_file_bytes, with_one_torch_thread, write_dataset,
                               write_json)
from skinlib.augment import TrainAugment
from skinlib.storage.cache import CachedDataset, cache_bytes, open_cache
from skinlib.storage.prepare import prepare
from skinlib.data import IMAGENET_MEAN, IMAGENET_STD, load_index
from skinlib.loaders import loader_options
from skinlib.sampling import SeededItems, ShuffleWithSeeds

ISIC_2019_IMAGES = 25_331
SETS = {"1024x1024": (1024, 1024), "600x450": (600, 450)}
SMOKE_SETS = {"256x256": (256, 256), "150x112": (150, 112)}


class StockDataset(Dataset):
    """The usual first pipeline: decode the JPEG with Pillow, augment and normalise on the CPU."""

    def __init__(self, frame: pd.DataFrame, size: int):
        self.paths, self.labels = frame["path"].tolist(), frame["label"].tolist()
        self.transform = transforms.Compose([
            transforms.RandomResizedCrop(size),
            transforms.RandomHorizontalFlip(),
            transforms.RandomVerticalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB")), self.labels[i]


class SmallJpegDataset(Dataset):
    """Prepared images stored as small JPEGs: decode each, then the same uint8 augmentation."""

    def __init__(self, paths: list[str], labels: list[int], size: int):
        self.paths, self.labels = paths, labels
        self.transform = TrainAugment(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as image:
            return self.transform(np.asarray(image.convert("RGB"))), self.labels[i]


def write_small_jpegs(cache_dir: Path, out_dir: Path, quality: int = 90) -> tuple[list[str], int, float]:
    """Save every cache row as a JPEG; return (paths, total bytes, seconds)."""
    start = time.perf_counter()
    cache = open_cache(cache_dir)
    images = cache.images()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for row, name in zip(cache.index["row"], cache.index["image"]):
        path = out_dir / f"{name}.jpg"
        Image.fromarray(np.asarray(images[row])).save(path, "JPEG", quality=quality)
        paths.append(str(path))
    return paths, sum(Path(p).stat().st_size for p in paths), time.perf_counter() - start


def images_per_second(loader: DataLoader, min_seconds: float, min_batches: int) -> dict:
    """Iterate `loader` (epoch after epoch) for at least `min_seconds` and `min_batches`.

    The first batch is not timed: it pays for starting the worker processes. Also measured:
    the CPU time the loader's processes (its workers and this one) spent per image, which
    other jobs on the machine change far less than the images per second (None where
    /proc is not there to read it).
    """
    epoch = iter(loader)
    next(epoch)
    processes = [os.getpid()] + [worker.pid for worker in getattr(epoch, "_workers", [])]
    cpu_before = cpu_seconds(processes)
    images = batches = 0
    start = time.perf_counter()
    while True:
        for x, _ in epoch:
            images += x.shape[0]
            batches += 1
            if batches >= min_batches and time.perf_counter() - start >= min_seconds:
                seconds = time.perf_counter() - start
                cpu_after = cpu_seconds(processes)
                cpu_ms = None if None in (cpu_before, cpu_after) else 1e3 * (cpu_after - cpu_before) / images
                return {"images_per_s": images / seconds, "images": images, "seconds": seconds,
                        "cpu_ms_per_image": cpu_ms}
        epoch = iter(loader)  # persistent workers: no new processes


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds of the processes `pids` so far, from /proc (Linux); else None."""
    try:
        total = 0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
        return total / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def make_loader(dataset: Dataset, batch_size: int, workers: int, *, seeded: bool = False) -> DataLoader:
    """A shuffling loader with training's DataLoader options (`loaders.loader_options`: persistent
    workers, prefetching, no pinned memory on a CPU). `seeded`: the order and a seed per image
    from ShuffleWithSeeds, as skinlib trains."""
    options = loader_options(workers, device="cpu")
    if seeded:
        options["sampler"] = ShuffleWithSeeds(len(dataset), torch.Generator().manual_seed(0))
        dataset = SeededItems(dataset)
    else:
        options["shuffle"] = True
    return DataLoader(dataset, batch_size=batch_size, drop_last=True, **options)


def run_set(name: str, width: int, height: int, args, work: Path) -> dict:
    serial = 1 if args.smoke else None  # smoke: no process pools, they cost more than they save
    data_dir = write_dataset(work / name / "data", args.n, width, height, seed=args.seed, workers=serial)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = load_index(data_dir)
    row = {"set": name, "width": width, "height": height, "n": args.n,
           "mean_file_kb": mean_file_bytes(data_dir) / 1024}

    stock = make_loader(StockDataset(frame, args.size), args.batch_size, args.workers)
    timed = images_per_second(stock, args.min_seconds, args.min_batches)
    row["stock_images_per_s"], row["stock_cpu_ms_per_image"] = timed["images_per_s"], timed["cpu_ms_per_image"]
    del stock

    cache_dir = work / name / "cache"
    report = prepare(data_dir, cache_dir, size=args.cache_size, workers=serial, progress=False)
    row["prepare_seconds"] = report.seconds
    row["prepare_images_per_s"] = report.n_decoded / report.seconds
    row["cache_mb"] = report.nbytes / 1e6
    cached = make_loader(CachedDataset(cache_dir, frame, train=True, size=args.size),
                         args.batch_size, args.workers, seeded=True)
    timed = images_per_second(cached, args.min_seconds, args.min_batches)
    row["cached_images_per_s"], row["cached_cpu_ms_per_image"] = timed["images_per_s"], timed["cpu_ms_per_image"]
    del cached

    paths, nbytes, seconds = write_small_jpegs(cache_dir, work / name / "jpeg256")
    row["jpeg256_write_seconds"] = seconds
    row["jpeg256_mb"] = nbytes / 1e6
    small = make_loader(SmallJpegDataset(paths, frame["label"].tolist(), args.size),
                        args.batch_size, args.workers)
    row["jpeg256_images_per_s"] = images_per_second(small, args.min_seconds, args.min_batches)["images_per_s"]
    del small

    row["speedup"] = row["cached_images_per_s"] / row["stock_images_per_s"]
    return row


COLUMNS = [
    ("set", "set", ""), ("mean_file_kb", "JPEG KB", ".0f"),
    ("stock_images_per_s", "stock img/s", ".0f"),
    ("cached_images_per_s", "cached img/s", ".0f"),
    ("stock_cpu_ms_per_image", "stock CPU ms/img", ".2f"), ("cached_cpu_ms_per_image", "cached CPU ms/img", ".2f"),
    ("speedup", "cached/stock", ".1f"),
    ("jpeg256_images_per_s", "jpeg256 img/s", ".0f"),
    ("prepare_seconds", "prepare s", ".1f"), ("prepare_images_per_s", "prepare img/s", ".0f"),
    ("cache_mb", "cache MB", ".1f"), ("jpeg256_mb", "jpeg256 MB", ".1f"),
]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.input_pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=300, help="images per set (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--size", type=int, default=224, help="training crop (default: %(default)s)")
    p.add_argument("--cache-size", type=int, default=256, help="prepare --size (default: %(default)s)")
    p.add_argument("--min-seconds", type=float, default=5.0, help="time each pipeline at least this long")
    p.add_argument("--min-batches", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=None, help="folder for the images (default: a temporary one)")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: benchmarks/results/input_pipeline.json)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny images, few of them, no worker processes: checks that it runs, times nothing useful")
    args = p.parse_args(argv)
    if args.smoke:
        args.n, args.workers, args.batch_size = 16, 0, 4
        args.size, args.cache_size, args.min_seconds, args.min_batches = 48, 64, 0.0, 2
    return args


def main(argv=None) -> int:
    return with_one_torch_thread(run, parse_args(argv))


def run(args: argparse.Namespace) -> int:
    sets, load_before = SMOKE_SETS if args.smoke else SETS, os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="skinlib-bench-") as tmp:
        work = args.work or Path(tmp)
        rows = []
        for name, (width, height) in sets.items():
            print(f"[{name}] generating {args.n} SYNTHETIC JPEGs and timing the pipelines ...",
                  file=sys.stderr, flush=True)
            rows.append(run_set(name, width, height, args, work))
    result = {
        "benchmark": "input_pipeline",
        "machine": machine_info(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sets": rows,
        "full_isic2019_cache_bytes": cache_bytes(ISIC_2019_IMAGES, args.cache_size),
        # other processes on the machine slow every figure: the 1-minute load before and after
        "load_average": [load_before[0], os.getloadavg()[0]],
        "synthetic": True,
    }
    print(format_table(rows, COLUMNS))
    m = result["machine"]
    print(f"\n{m['cpus_available']} CPUs ({m['cpu_model']}), {args.workers} DataLoader workers, "
          f"batch {args.batch_size}, crop {args.size}, cache S={args.cache_size}, "
          f"{args.n} SYNTHETIC images per set")
    print(f"load average (1 min) {result['load_average'][0]:.1f} before, {result['load_average'][1]:.1f} after")
    print(f"full ISIC 2019 cache at S={args.cache_size}: {ISIC_2019_IMAGES:,} x {args.cache_size}^2 x 3 "
          f"= {result['full_isic2019_cache_bytes'] / 1e9:.2f} GB")
    print(f"wrote {write_json(result, 'input_pipeline', args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
