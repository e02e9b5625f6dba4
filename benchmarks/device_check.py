"""One command that checks the GPU path: every GPU figure the README lacks, in one run.

    python -m benchmarks.device_check            # on one GPU: under 8 minutes
    python -m benchmarks.device_check --smoke    # on a CPU in about a minute: checks that it runs

Parts, in order (`--skip` leaves some out); all data SYNTHETIC:

  steps        training step on in-device batches (benchmarks/train_step.py): the report's
               settings (fp32, NCHW, batch 64) against skinlib's (mixed precision,
               channels_last, batch 256), ResNet-50 and SimpleCNN, with and without torch.compile
  end_to_end   one epoch from a prepared cache of 5,000 SYNTHETIC 1024x1024 JPEGs, the DataLoader
               confined to 2 CPU cores (Colab's), against the in-GPU rate of `steps`
  course_epoch one ResNet-50 training epoch over 20,000 cached images at the course's settings
               (batch 64, 2 cores), so the 25-epoch course run can be stated
  notebooks    notebooks 02 and 03 at their full settings on the synthetic set, timed
               (tools/run_notebooks.py; ResNet-50 from random weights: the GPU machine may
               have no network for ImageNet's)
  torchrun     `torchrun --standalone --nproc_per_node 1 -m skinlib train` for one epoch

Targets, checked on a CUDA GPU only: skinlib's ResNet-50 step >= 4.5x the report's; the 2-core
end-to-end epoch >= 0.8 of the in-GPU rate. Prints one table (card, torch version, every ratio
against its target) and writes one JSON (default benchmarks/results/device_check.json). Exit
status 1 if a part failed or a target was missed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

from benchmarks import train_step
from benchmarks.common import format_table, machine_info, write_dataset, write_json
from skinlib.storage.cache import CachedDataset
from skinlib.storage.prepare import prepare
from skinlib.data import load_index
from skinlib.device import autocast_dtype, select_device
from skinlib.loaders import loader_options
from skinlib.sampling import SeededItems, ShuffleWithSeeds

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"resnet50_step_speedup": 4.5, "end_to_end_ratio": 0.8}
NOTEBOOKS = ("02_training_and_testing", "03_resnet50_transfer_learning")
COURSE_EPOCHS = 25


@dataclass
class Settings:
    models: tuple[str, ...] = ("resnet50", "simplecnn")
    compile: bool = True
    batch: int = 256  # skinlib's batch in the step benchmark and end to end
    seed_batch: int = 64  # the report's
    image_size: int = 224
    steps: int = 30
    warmup: int = 5
    e2e_images: int = 5000
    e2e_side: int = 1024
    e2e_batches: int | None = None  # None: the whole set
    course_images: int = 20_000
    course_batch: int = 64  # TrainConfig's default: what the course trains with
    cores: int = 2
    workers: int = 2
    train_args: tuple[str, ...] = ()  # extra `skinlib train` options for the torchrun part


FULL = Settings()
# Tiny sizes: every part runs on a CPU in seconds and its numbers mean nothing. No SimpleCNN
# (108 M parameters: seconds per CPU step) and no torch.compile (minutes of C++ compilation).
SMOKE = Settings(models=("resnet50",), compile=False, batch=4, seed_batch=2, image_size=32,
                 steps=1, warmup=1, e2e_images=64, e2e_side=128, e2e_batches=2, course_images=8,
                 course_batch=4,
                 cores=1, workers=1,
                 train_args=("--device", "cpu", "--batch-size", "2", "--max-batches", "1"))


@dataclass
class Context:
    args: argparse.Namespace
    settings: Settings
    device: torch.device
    work: Path
    in_gpu: dict = field(default_factory=dict)  # model -> skinlib's in-device images/s
    data: Path | None = None
    cache: Path | None = None


def row(check: str, value: float | None, unit: str, *, ratio: float | None = None,
        target: float | None = None, note: str = "") -> dict:
    return {"check": check, "value": value, "unit": unit, "ratio": ratio, "target": target,
            "note": note}


# ---------------------------------------------------------------- parts
def part_steps(ctx: Context) -> list[dict]:
    s, device = ctx.settings, ctx.device
    amp = autocast_dtype(device)
    rows = []
    for name in s.models:
        size = train_step.FIXED_SIZE.get(name, s.image_size)
        timing = dict(size=size, steps=s.steps, warmup=s.warmup)
        seed = train_step.time_steps(train_step.build(name, device, False), device,
                                     batch=s.seed_batch, amp_dtype=None, channels_last=False,
                                     uint8=False, **timing)["images_per_s"]
        rows.append(row(f"{name} step, report: fp32 NCHW batch {s.seed_batch}", seed, "img/s"))
        variants = [False, True] if s.compile else [False]
        for compiled in variants:
            model = train_step.build(name, device, True)
            if compiled:
                model = torch.compile(model)
            ours = train_step.time_steps(model, device, batch=s.batch, amp_dtype=amp,
                                         channels_last=True, uint8=True, **timing)["images_per_s"]
            if not compiled:
                ctx.in_gpu[name] = ours
            target = TARGETS["resnet50_step_speedup"] if name == "resnet50" and not compiled else None
            rows.append(row(f"{name} step, skinlib: {_dtype(amp)} channels_last batch {s.batch}"
                            f"{' + torch.compile' if compiled else ''}", ours, "img/s",
                            ratio=ours / seed, target=target, note="ratio: against the report's"))
            del model
            _free(device)
    return rows


def _prepared(ctx: Context) -> tuple[Path, Path, pd.DataFrame]:
    """The SYNTHETIC 1024x1024 JPEGs and their prepared cache (made once per run)."""
    s = ctx.settings
    if ctx.data is None:
        started = time.perf_counter()
        workers = 1 if ctx.args.smoke else None  # None: every CPU
        ctx.data = write_dataset(ctx.work / "jpegs", s.e2e_images, s.e2e_side, s.e2e_side,
                                 workers=workers)
        ctx.cache = ctx.work / "cache"
        prepare(ctx.data, ctx.cache, workers=workers, progress=False)
        print(f"  {s.e2e_images} SYNTHETIC {s.e2e_side}x{s.e2e_side} JPEGs written and prepared "
              f"in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the benchmark set has no lesion ids to warn about
        frame = load_index(ctx.data)
    return ctx.data, ctx.cache, frame


def part_end_to_end(ctx: Context) -> list[dict]:
    s, device = ctx.settings, ctx.device
    _, cache, frame = _prepared(ctx)
    amp = autocast_dtype(device)
    model = train_step.build("resnet50", device, True)
    if "resnet50" not in ctx.in_gpu:  # `steps` was skipped
        ctx.in_gpu["resnet50"] = train_step.time_steps(
            model, device, batch=s.batch, size=s.image_size, steps=s.steps, warmup=s.warmup,
            amp_dtype=amp, channels_last=True, uint8=True)["images_per_s"]
    result = train_step.end_to_end(model, device, cache, frame, batch=s.batch, size=s.image_size,
                                   amp_dtype=amp, channels_last=True, cores=s.cores,
                                   workers=s.workers,
                                   max_batches=s.e2e_batches or len(frame) // s.batch)
    _free(device)
    rate = result["images_per_s"]
    return [row(f"resnet50 end to end, {result['images']} of {len(frame)} cached {s.e2e_side}px "
                f"JPEGs, {s.cores} CPU cores, {s.workers} workers, batch {s.batch}", rate, "img/s",
                ratio=rate / ctx.in_gpu["resnet50"], target=TARGETS["end_to_end_ratio"],
                note="ratio: against the in-GPU rate")]


def part_course_epoch(ctx: Context) -> list[dict]:
    s, device = ctx.settings, ctx.device
    _, cache, frame = _prepared(ctx)
    # The cache holds e2e_images images; the epoch draws each several times with its own seed,
    # which reads the memory map exactly as 20,000 distinct rows would.
    repeats = -(-s.course_images // len(frame))
    frame = pd.concat([frame] * repeats, ignore_index=True).iloc[:s.course_images]
    dataset = CachedDataset(cache, frame, train=True, size=s.image_size)
    amp = autocast_dtype(device)
    model = train_step.build("resnet50", device, True)
    with train_step.confined_to(s.cores):
        loader = DataLoader(SeededItems(dataset), batch_size=s.course_batch,
                            sampler=ShuffleWithSeeds(len(dataset), torch.Generator().manual_seed(0)),
                            **loader_options(s.workers, device=device))
        train_step.run_epoch(model, loader, device, amp_dtype=amp, channels_last=True,
                             max_batches=10)  # warm-up: workers, cuDNN autotuning
        result = train_step.run_epoch(model, loader, device, amp_dtype=amp, channels_last=True)
        del loader
    _free(device)
    seconds = result["seconds"]
    return [row(f"resnet50 training epoch over {len(frame):,} cached images, batch "
                f"{s.course_batch}, {s.cores} CPU cores", seconds, "s",
                note=f"{result['images_per_s']:.0f} img/s"),
            row(f"{COURSE_EPOCHS}-epoch course run at that rate (training passes only)",
                COURSE_EPOCHS * seconds / 60, "min", note="ISIC 2019 trains on about 17,700 images")]


def part_notebooks(ctx: Context) -> list[dict]:
    mode = "--smoke" if ctx.args.smoke else "--full"
    env = {k: v for k, v in os.environ.items() if k != "SKINLIB_DATA"}  # the synthetic set
    # No network on many GPU machines: ResNet-50 starts from random weights. The synthetic set
    # is generated inside the work folder, not in ~/.cache.
    env.update(SKINLIB_PRETRAINED="0", SKINLIB_CACHE=str(ctx.work / "skinlib-cache"))
    rows = []
    for name in NOTEBOOKS:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(ROOT / "tools" / "run_notebooks.py"), mode,
                               "--out", str(ctx.work / "notebooks"), name],
                              env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed: {_last_line(done)}")
        rows.append(row(f"notebook {name} ({mode[2:]} settings, SYNTHETIC, random ResNet-50 "
                        f"weights)", seconds, "s", note="kernel start included"))
    return rows


def part_torchrun(ctx: Context) -> list[dict]:
    data, cache, frame = _prepared(ctx)
    out = ctx.work / "torchrun-run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               "-m", "skinlib", "train", "--data", str(data), "--cache", str(cache),
               "--model", "resnet50", "--no-pretrained", "--epochs", "1", "--out", str(out),
               "--workers", str(ctx.settings.workers), "--quiet", *ctx.settings.train_args]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"torchrun exited with {done.returncode}: {_last_line(done)}")
    record = json.loads((out / "metrics.json").read_text())
    epoch = record["history"][0]
    return [row(f"torchrun, 1 process, resnet50, 1 epoch over {record['split_sizes']['train']} "
                f"training images", seconds, "s",
                note=f"{epoch['images_per_s']:.0f} img/s in the epoch; start-up included")]


PARTS = {"steps": part_steps, "end_to_end": part_end_to_end, "course_epoch": part_course_epoch,
         "notebooks": part_notebooks, "torchrun": part_torchrun}


def _dtype(amp: torch.dtype | None) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp, "fp32")


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _last_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


# ---------------------------------------------------------------- verdicts and report
def verdict(r: dict, device: torch.device) -> str:
    if r.get("error"):
        return "FAILED"
    if r["target"] is None:
        return ""
    if device.type != "cuda":
        return "not checked (no GPU)"
    return "met" if r["ratio"] >= r["target"] else "MISSED"


COLUMNS = [("check", "check", ""), ("value", "measured", ".1f"), ("unit", "", ""),
           ("ratio", "ratio", ".2f"), ("target", "target", ".1f"), ("verdict", "verdict", ""),
           ("note", "note", "")]


def card(device: torch.device) -> str:
    if device.type != "cuda":
        return f"no GPU ({device})"
    props = torch.cuda.get_device_properties(device)
    return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.device_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes on any device (about a minute on a CPU; numbers mean nothing)")
    p.add_argument("--device", default=None, help="cuda, cpu ... (default: best available)")
    p.add_argument("--skip", default="", help=f"parts to leave out, comma-separated: {', '.join(PARTS)}")
    p.add_argument("--work", type=Path, default=None,
                   help="folder for images, cache and runs (default: a temporary one, removed)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON file (default: benchmarks/results/device_check.json)")
    args = p.parse_args(argv)
    unknown = sorted(set(filter(None, args.skip.split(","))) - set(PARTS))
    if unknown:
        p.error(f"--skip: unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.smoke:
        torch.set_num_threads(1)  # a busy 2-core machine runs one thread faster than two
    try:
        with tempfile.TemporaryDirectory(prefix="skinlib-device-check-") as tmp:
            return run(args, args.work or Path(tmp))
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace, work: Path) -> int:
    started = time.perf_counter()
    device = select_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    ctx = Context(args, SMOKE if args.smoke else FULL, device, work)
    rows, seconds = [], {}
    for name, part in PARTS.items():
        if name in args.skip.split(","):
            continue
        print(f"[{name}] ...", file=sys.stderr, flush=True)
        part_started = time.perf_counter()
        try:
            rows += part(ctx)
        except Exception as err:  # keep the other parts' figures; the table says what failed
            message = " ".join(str(err).split()) or type(err).__name__
            rows.append({**row(f"{name}: {message}", None, ""), "error": True})
        seconds[name] = time.perf_counter() - part_started
    for r in rows:
        r["verdict"] = verdict(r, device)
    result = {
        "benchmark": "device_check", "smoke": args.smoke, "synthetic": True,
        "card": card(device), "machine": machine_info(device), "targets": TARGETS,
        "settings": dataclasses.asdict(ctx.settings), "rows": rows, "part_seconds": seconds,
        "total_seconds": time.perf_counter() - started,
    }
    print(f"\n{result['card']}; torch {torch.__version__}; {result['machine']['cpu_model']}, "
          f"{result['machine']['cpus_available']} CPUs; {time.strftime('%Y-%m-%d')}; SYNTHETIC data"
          f"{'; SMOKE run: the numbers mean nothing' if args.smoke else ''}")
    print(format_table(rows, COLUMNS))
    print(f"total {result['total_seconds'] / 60:.1f} min; wrote {write_json(result, 'device_check', args.out)}")
    bad = [r for r in rows if r["verdict"] in ("FAILED", "MISSED")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
