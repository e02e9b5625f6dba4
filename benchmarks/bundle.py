"""The course bundle: its size per image, the time to make and restore it, and training from it.

    python -m benchmarks.bundle [--n 300] [--workers 2] [--real DIR] [--out FILE]

For each set of JPEGs (SYNTHETIC lesion-like images at 600x450, 1024x1024 and 4000x3000, the
sizes of ISIC 2019's three archives, and the real sample images when `--real` names a folder
of them, default $SKINLIB_TEST_DATA/isic2019-sample):

1. `prepare` the images into a cache, then `make_bundle` (bytes per image, seconds);
2. `restore_bundle` into an empty folder, standing in for Colab's local disk (the bundle is
   read from this machine's disk, not from Google Drive: the Drive copy is not timed here),
   then `prepare` the restored folder (seconds for both);
3. in the same run, images/s that a DataLoader with `--workers` processes delivers at 224x224
   with training augmentation: the stock pipeline (Pillow + torchvision per sample on the
   original JPEGs) against CachedDataset on the cache made from the restored bundle
   (skipped for the 4000x3000 set, where the stock pipeline alone would take minutes), and the
   CPU time per image of the loader's processes (workers and main), which other jobs on the
   machine change far less than the images per second.

Then the size of the full ISIC 2019 bundle: the bytes per image measured for each size,
weighted by how many of the 25,331 images come from each archive (counted in the real
metadata: 10,015 HAM10000 at 600x450, 12,413 BCN_20000 at 1024x1024, 2,903 MSK and older
ones, larger). Prints a table and writes JSON (default benchmarks/results/bundle.json).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path


from benchmarks.common import (format_table, machine_info, mean_file_bytes, with_one_torch_thread, write_dataset,
                               write_json)
from benchmarks.input_pipeline import StockDataset, images_per_second, make_loader
from skinlib.acquire.bundle import make_bundle, restore_bundle
from skinlib.storage.cache import CachedDataset
from skinlib.storage.prepare import prepare
from skinlib.data import load_index

# Images of the full ISIC 2019 per archive, counted by lesion-id prefix in the real metadata.
ISIC_2019_MIX = {"600x450": 10_015, "1024x1024": 12_413, "4000x3000": 2_903}
SETS = {"600x450": (600, 450), "1024x1024": (1024, 1024), "4000x3000": (4000, 3000)}
SMOKE_SETS = {"600x450": (60, 45), "1024x1024": (102, 102), "4000x3000": (400, 300)}
NO_PIPELINE = {"4000x3000"}
TARGET_GB, TARGET_IMAGES_PER_S = 1.5, 1000


def run_set(name: str, data_dir: Path, args, work: Path, *, pipeline: bool) -> dict:
    serial = 1 if args.smoke else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = load_index(data_dir)
    row = {"set": name, "n": len(frame), "mean_file_kb": mean_file_bytes(data_dir) / 1e3}
    cache = work / name / "cache"
    row["prepare_s"] = prepare(data_dir, cache, workers=serial, progress=False).seconds
    report = make_bundle(data_dir, cache, work / name / "drive" / "bundle.zip", dataset=name, progress=False)
    row["bundle_s"], row["bundle_kb_per_image"] = report.seconds, report.nbytes / len(frame) / 1e3

    started = time.perf_counter()
    restored = restore_bundle(report.path, work / name / "local" / "data")
    row["restore_s"] = time.perf_counter() - started
    restored_cache = work / name / "local" / "prepared"
    row["open_s"] = prepare(restored, restored_cache, workers=serial, progress=False).seconds
    row["restore_ms_per_image"] = 1e3 * (row["restore_s"] + row["open_s"]) / len(frame)
    if pipeline:
        stock = make_loader(StockDataset(frame, args.size), args.batch_size, args.workers)
        timed = images_per_second(stock, args.min_seconds, args.min_batches)
        row["stock_images_per_s"], row["stock_cpu_ms_per_image"] = timed["images_per_s"], timed["cpu_ms_per_image"]
        del stock
        restored_frame = load_index(restored)
        bundled = make_loader(CachedDataset(restored_cache, restored_frame, train=True, size=args.size),
                              args.batch_size, args.workers, seeded=True)
        timed = images_per_second(bundled, args.min_seconds, args.min_batches)
        row["bundle_images_per_s"], row["bundle_cpu_ms_per_image"] = timed["images_per_s"], timed["cpu_ms_per_image"]
        del bundled
    return row


def full_bundle_bytes(rows: list[dict]) -> float:
    """Bytes of the full ISIC 2019 bundle: measured bytes per image of each size times its count
    (the real images' figure for 600x450 when they were measured: `reversed` lets it win)."""
    per_image = {row["set"].removeprefix("real "): row["bundle_kb_per_image"] * 1e3 for row in reversed(rows)}
    return sum(per_image[name] * count for name, count in ISIC_2019_MIX.items())


COLUMNS = [
    ("set", "set", ""), ("n", "images", "d"), ("mean_file_kb", "JPEG KB", ".0f"),
    ("bundle_kb_per_image", "bundle KB/img", ".1f"), ("bundle_s", "bundle s", ".1f"),
    ("restore_s", "restore s", ".2f"), ("open_s", "prepare s", ".2f"),
    ("restore_ms_per_image", "restore+prepare ms/img", ".2f"),
    ("stock_images_per_s", "stock img/s", ".0f"), ("bundle_images_per_s", "from bundle img/s", ".0f"),
    ("stock_cpu_ms_per_image", "stock CPU ms/img", ".2f"), ("bundle_cpu_ms_per_image", "bundle CPU ms/img", ".2f"),
]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bundle", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=300, help="SYNTHETIC images per set (default: %(default)s; "
                   "a sixth of that at 4000x3000)")
    p.add_argument("--real", type=Path, default=None,
                   help="a folder of real images in the ISIC 2019 layout (default: $SKINLIB_TEST_DATA/isic2019-sample)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--size", type=int, default=224, help="training crop (default: %(default)s)")
    p.add_argument("--min-seconds", type=float, default=5.0, help="time each pipeline at least this long")
    p.add_argument("--min-batches", type=int, default=10)
    p.add_argument("--sets", default=",".join(SETS), help="which synthetic sets (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: benchmarks/results/bundle.json)")
    p.add_argument("--smoke", action="store_true", help="tiny images, no worker processes: checks that it runs")
    args = p.parse_args(argv)
    if args.real is None and os.environ.get("SKINLIB_TEST_DATA"):
        sample = Path(os.environ["SKINLIB_TEST_DATA"]) / "isic2019-sample"
        args.real = sample if sample.is_dir() else None
    if args.smoke:
        args.n, args.workers, args.batch_size, args.size = 16, 0, 4, 48
        args.min_seconds, args.min_batches = 0.0, 2
    return args


def main(argv=None) -> int:
    return with_one_torch_thread(run, parse_args(argv))


def run(args: argparse.Namespace) -> int:
    rows, load_before = [], os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="skinlib-bench-") as tmp:
        work = Path(tmp)
        if args.real is not None and not args.smoke:
            print(f"[real 600x450] {args.real} ...", file=sys.stderr, flush=True)
            rows.append(run_set("real 600x450", args.real, args, work, pipeline=True))
        chosen = args.sets.split(",")
        for name, (width, height) in (SMOKE_SETS if args.smoke else SETS).items():
            if name not in chosen:
                continue
            n = args.n if name not in NO_PIPELINE else max(8, args.n // 6)
            print(f"[{name}] generating {n} SYNTHETIC JPEGs ...", file=sys.stderr, flush=True)
            data = write_dataset(work / name / "data", n, width, height, workers=1 if args.smoke else None)
            rows.append(run_set(name, data, args, work, pipeline=name not in NO_PIPELINE))
    measured = {row["set"].removeprefix("real ") for row in rows}
    full = full_bundle_bytes(rows) if measured >= set(ISIC_2019_MIX) else None
    real = next((row for row in rows if row["set"] == "real 600x450"), None)
    result = {"benchmark": "bundle", "machine": machine_info(),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "sets": rows, "isic2019_mix": ISIC_2019_MIX, "full_isic2019_bundle_bytes": full,
              "full_isic2019_restore_s": None if full is None else sum(
                  row["restore_ms_per_image"] * ISIC_2019_MIX[row["set"]] / 1e3
                  for row in rows if row["set"] in ISIC_2019_MIX),
              # other processes on the machine slow every figure: the 1-minute load before and after
              "load_average": [load_before[0], os.getloadavg()[0]],
              "synthetic": True, "real_images": real is not None}
    print(format_table(rows, COLUMNS))
    m = result["machine"]
    print(f"\n{m['cpus_available']} CPUs ({m['cpu_model']}), {args.workers} DataLoader workers, batch "
          f"{args.batch_size}, crop {args.size}; SYNTHETIC images except the 'real' set")
    print(f"load average (1 min) {result['load_average'][0]:.1f} before, {result['load_average'][1]:.1f} after")
    for row in rows:
        if "bundle_images_per_s" in row:
            rate = row["bundle_images_per_s"]
            print(f"{row['set']}: training input from the restored bundle {rate:.0f} images/s, stock "
                  f"{row['stock_images_per_s']:.0f} (target at least {TARGET_IMAGES_PER_S}: "
                  f"{'met' if rate >= TARGET_IMAGES_PER_S else 'NOT met'} in this run)")
    if real is not None:
        print(f"real 600x450 images: {real['bundle_kb_per_image']:.1f} KB per image in the bundle")
    if full is not None:
        per_image = {row["set"].removeprefix("real "): row["bundle_kb_per_image"] for row in reversed(rows)}
        terms = " + ".join(f"{count:,} x {per_image[name]:.1f} KB" for name, count in ISIC_2019_MIX.items())
        print(f"full ISIC 2019 bundle: {full / 1e9:.2f} GB (target at most {TARGET_GB} GB) = {terms}")
        print(f"restoring and preparing it, extrapolated from the ms per image: "
              f"{result['full_isic2019_restore_s']:.0f} s (local disk; reading it from Google Drive adds its transfer)")
    print(f"wrote {write_json(result, 'bundle', args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
