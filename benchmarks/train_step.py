"""Training images per second: the seed's settings against skinlib's, and end to end from a cache.

    python -m benchmarks.train_step [--models simplecnn,resnet50] [--compile] [--out FILE]
    python -m benchmarks.train_step --smoke      # CPU, tiny sizes: checks that it runs

For each model, with `skinlib.engine.train_one_epoch` (Adam, gradient clipping 0.1) on
synthetic batches that already sit on the device (so no input pipeline is involved):

- seed:    float32, NCHW, batch 64, no torch.compile (float inputs, normalised beforehand)
- skinlib: mixed precision (`device.autocast_dtype`: bf16 on Ampere or newer, fp16 on a T4),
           channels_last, batch `--batch-size` (256), uint8 inputs normalised on the device,
           torch.compile with `--compile`

then end to end: one epoch of `--e2e-images` SYNTHETIC images prepared with
`skinlib.storage.prepare.prepare`, read through CachedDataset and skinlib's DataLoader options
(`loaders.loader_options`) with the whole process confined to `--cores` CPU cores (2, as in
Colab), skinlib's settings. The epoch after a warm-up epoch is timed.

Targets on a GPU: skinlib's ResNet-50 step >= 4.5x the seed's; end-to-end >= 0.8 of the
synthetic skinlib throughput. Prints both ratios; JSON to benchmarks/results/train_step.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from benchmarks.common import format_table, machine_info, write_dataset, write_json
from skinlib import engine, models
from skinlib.augment import EVAL_CROP_FRACTION
from skinlib.storage.cache import CachedDataset
from skinlib.storage.prepare import prepare
from skinlib.data import IMAGENET_MEAN, IMAGENET_STD, load_index
from skinlib.device import autocast_dtype, make_scaler, select_device
from skinlib.loaders import loader_options
from skinlib.sampling import SeededItems, ShuffleWithSeeds

LR, WEIGHT_DECAY, GRAD_CLIP = 7e-4, 1.5e-4, 0.1
SEED_BATCH = 64
DEFAULT_MODELS = "simplecnn,resnet50"
# SimpleCNN's fully connected layer fixes its input at 224x224, whatever --image-size says.
FIXED_SIZE = {"simplecnn": 224}


def build(name: str, device: torch.device, channels_last: bool) -> torch.nn.Module:
    model = models.SimpleCNN() if name == "simplecnn" else models.resnet50(pretrained=False)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def synthetic_batches(n_batches: int, batch: int, size: int, device: torch.device,
                      uint8: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One random batch on the device, repeated: the step sees no input pipeline at all."""
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    if not uint8:  # the seed's loader hands over normalised float32 tensors
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        images = (images.float() / 255 - mean) / std
    targets = torch.randint(0, 8, (batch,), device=device)
    return [(images, targets)] * n_batches


def run_epoch(model, loader, device, *, amp_dtype, channels_last, max_batches=None) -> dict:
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    result = engine.train_one_epoch(
        model, loader, optimizer, device, grad_clip=GRAD_CLIP,
        scaler=make_scaler(device, amp_dtype),
        options=engine.LoopOptions(amp_dtype, channels_last, progress=False, max_batches=max_batches))
    return {"images_per_s": result["images_per_s"], "images": result["images"],
            "seconds": result["seconds"]}


def time_steps(model, device, *, batch, size, steps, warmup, amp_dtype, channels_last, uint8) -> dict:
    """Warm-up epoch (cuDNN autotuning, compilation), then a timed epoch of `steps` batches."""
    run_epoch(model, synthetic_batches(warmup, batch, size, device, uint8), device,
              amp_dtype=amp_dtype, channels_last=channels_last)
    return run_epoch(model, synthetic_batches(steps, batch, size, device, uint8), device,
                     amp_dtype=amp_dtype, channels_last=channels_last)


@contextmanager
def confined_to(cores: int):
    """Run the block (and the DataLoader workers it starts) on `cores` CPU cores only."""
    if not hasattr(os, "sched_setaffinity"):
        warnings.warn("this OS cannot confine a process to some cores; the end-to-end epoch uses all")
        yield sorted(range(os.cpu_count() or 1))
        return
    before = os.sched_getaffinity(0)
    chosen = set(sorted(before)[:cores])
    threads = torch.get_num_threads()
    os.sched_setaffinity(0, chosen)
    torch.set_num_threads(len(chosen))
    try:
        yield sorted(chosen)
    finally:
        os.sched_setaffinity(0, before)
        torch.set_num_threads(threads)


def end_to_end(model, device, cache_dir: Path, frame, *, batch, size, amp_dtype, channels_last,
               cores: int, workers: int, max_batches: int | None) -> dict:
    """Warm-up epoch, then one timed epoch read from the cache, on `cores` CPU cores."""
    dataset = CachedDataset(cache_dir, frame, train=True, size=size)
    with confined_to(cores) as used:
        loader = DataLoader(SeededItems(dataset), batch_size=batch, drop_last=True,
                            sampler=ShuffleWithSeeds(len(dataset), torch.Generator().manual_seed(0)),
                            **loader_options(workers, device=device))
        run_epoch(model, loader, device, amp_dtype=amp_dtype, channels_last=channels_last,
                  max_batches=max_batches)
        result = run_epoch(model, loader, device, amp_dtype=amp_dtype,
                           channels_last=channels_last, max_batches=max_batches)
        del loader  # stops the persistent workers while still confined
    result["cores"] = used
    return result


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    p.add_argument("--batch-size", type=int, default=256, help="skinlib's batch (default: %(default)s)")
    p.add_argument("--seed-batch-size", type=int, default=SEED_BATCH)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=30, help="timed steps (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default: %(default)s)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model for skinlib's run")
    p.add_argument("--e2e-images", type=int, default=4096,
                   help="images in the end-to-end epoch (default: %(default)s)")
    p.add_argument("--cores", type=int, default=2, help="CPU cores for the end-to-end epoch")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers, end to end")
    p.add_argument("--no-e2e", dest="e2e", action="store_false", help="skip the end-to-end epoch")
    p.add_argument("--work", type=Path, default=None, help="folder for the images and cache")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: benchmarks/results/train_step.json)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes and few steps (runs on a CPU in seconds; times nothing useful)")
    args = p.parse_args(argv)
    if args.smoke:
        # ResNet-50 only: SimpleCNN is fixed at 224x224 and its 108 M parameters make even
        # one CPU step slow. One thread: on a busy 2-core machine, two threads are slower.
        args.models = "resnet50" if args.models == DEFAULT_MODELS else args.models
        args.batch_size, args.seed_batch_size, args.image_size = 4, 2, 32
        args.steps, args.warmup, args.e2e_images, args.workers, args.cores = 1, 1, 8, 1, 1
    return args


COLUMNS = [
    ("model", "model", ""), ("image_size", "size", "d"),
    ("seed_images_per_s", "seed img/s", ".1f"), ("skinlib_images_per_s", "skinlib img/s", ".1f"),
    ("step_speedup", "skinlib/seed", ".2f"),
    ("e2e_images_per_s", "end-to-end img/s", ".1f"), ("e2e_ratio", "e2e/synthetic", ".2f"),
]


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.smoke:
        torch.set_num_threads(1)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> int:
    device = select_device(args.device)
    amp_dtype = autocast_dtype(device)
    names = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(names) - {"simplecnn", "resnet50"})
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from simplecnn, resnet50")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    sizes = {name: FIXED_SIZE.get(name, args.image_size) for name in names}
    rows = []
    with tempfile.TemporaryDirectory(prefix="skinlib-bench-") as tmp:
        work = args.work or Path(tmp)
        cache_dir = frame = None
        if args.e2e:
            # 600x450 sources (HAM10000-like): the cache rows are S x S whatever the source size
            cache_size = max(256, round(max(sizes.values()) / EVAL_CROP_FRACTION))
            data_dir = write_dataset(work / "data", args.e2e_images, 600, 450,
                                     workers=1 if args.smoke else None)
            cache_dir = work / "cache"
            prepare(data_dir, cache_dir, size=cache_size, workers=1 if args.smoke else None,
                    progress=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                frame = load_index(data_dir)
        for name in names:
            size = sizes[name]
            print(f"[{name}] timing on {device} ...", file=sys.stderr, flush=True)
            row = {"model": name, "image_size": size, "amp_dtype": str(amp_dtype),
                   "batch_size": args.batch_size, "seed_batch_size": args.seed_batch_size,
                   "compile": args.compile}
            seed = time_steps(build(name, device, False), device, batch=args.seed_batch_size,
                              size=size, steps=args.steps, warmup=args.warmup, amp_dtype=None,
                              channels_last=False, uint8=False)
            model = build(name, device, True)
            if args.compile:
                model = torch.compile(model)
            ours = time_steps(model, device, batch=args.batch_size, size=size, steps=args.steps,
                              warmup=args.warmup, amp_dtype=amp_dtype, channels_last=True, uint8=True)
            row["seed_images_per_s"] = seed["images_per_s"]
            row["skinlib_images_per_s"] = ours["images_per_s"]
            row["step_speedup"] = ours["images_per_s"] / seed["images_per_s"]
            if args.e2e:
                max_batches = args.e2e_images // args.batch_size
                e2e = end_to_end(model, device, cache_dir, frame, batch=args.batch_size, size=size,
                                 amp_dtype=amp_dtype, channels_last=True, cores=args.cores,
                                 workers=args.workers, max_batches=max_batches)
                row["e2e_images_per_s"] = e2e["images_per_s"]
                row["e2e_cores"] = e2e["cores"]
                row["e2e_ratio"] = e2e["images_per_s"] / ours["images_per_s"]
            rows.append(row)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    result = {
        "benchmark": "train_step",
        "machine": machine_info(device),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "targets": {"resnet50_step_speedup": 4.5, "e2e_ratio": 0.8, "apply_to": "CUDA GPUs"},
        "models": rows,
        "synthetic": True,
    }
    print(format_table(rows, COLUMNS))
    print(f"\ndevice {device} ({result['machine'].get('gpu', result['machine']['cpu_model'])}), "
          f"mixed precision {amp_dtype}, seed batch {args.seed_batch_size} fp32 NCHW, skinlib batch "
          f"{args.batch_size} channels_last{' compiled' if args.compile else ''}; end to end on "
          f"{args.cores} cores with {args.workers} workers, SYNTHETIC data")
    if device.type != "cuda":
        print("(not a CUDA GPU: the targets, ResNet-50 step >= 4.5x and end-to-end >= 0.8, "
              "apply to GPUs and are not checked here)")
    print(f"wrote {write_json(result, 'train_step', args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
