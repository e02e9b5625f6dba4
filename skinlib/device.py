"""The device to train on, and the mixed precision it supports.

The device is chosen once with `select_device` and passed to every function; nothing in
skinlib reads a global device. `autocast_dtype` and `make_scaler` give the one
mixed-precision code path of the training loop its settings.
"""
from __future__ import annotations

import ctypes
import os
import signal

import torch

from skinlib.errors import SkinlibError


def available_cpus() -> int:
    """CPUs this process may run on (respects taskset / container CPU sets where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def die_with_parent(parent: int) -> None:
    """Worker initializer: end this process when `parent` ends (Linux's PR_SET_PDEATHSIG).

    Without it, the workers of a `prepare` killed outright wait on their queue forever, and the
    processes of a torchrun killed outright go on training.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: nothing to set
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class DeviceUnavailable(SkinlibError, RuntimeError):
    """The device asked for does not exist on this machine."""


def select_device(name: str | None = None, *, announce: bool = True) -> torch.device:
    """The device to train on: `name` if given ("cuda", "cuda:1", "mps", "cpu"), else the best
    available (CUDA, then Apple MPS, then CPU). Prints one line saying which, unless told not to."""
    if name is None:
        if torch.cuda.is_available():
            device = torch.device("cuda")
        elif _mps_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
    else:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DeviceUnavailable(f"device {name!r} was asked for but CUDA is not available here "
                               f"(in Colab: Runtime > Change runtime type > GPU)")
        if device.type == "mps" and not _mps_available():
            raise DeviceUnavailable(f"device {name!r} was asked for but Apple MPS is not available here")
    if announce:
        print(f"Using device: {describe_device(device)}")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def describe_device(device: torch.device) -> str:
    """A one-line description, e.g. 'cuda (NVIDIA T4, compute capability 7.5, fp16 autocast)'."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        dtype = autocast_dtype(device)
        return (f"cuda ({torch.cuda.get_device_name(device)}, compute capability {major}.{minor}, "
                f"{_DTYPE_NAMES[dtype]} autocast)")
    if device.type == "mps":
        return "mps (Apple GPU, float32)"
    return f"cpu ({torch.get_num_threads()} threads, float32)"


_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "no"}


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype for `device`, or None for plain float32.

    bfloat16 on CUDA GPUs of compute capability 8.0 or newer (A100, L4, H100); float16 with a
    GradScaler on older ones (T4, V100). The capability is checked rather than
    `torch.cuda.is_bf16_supported()`, which answers True on a T4 where bf16 is emulated and slow.
    CPU and MPS train in float32.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def make_scaler(device: torch.device, amp_dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A GradScaler that is enabled only for float16 on CUDA (bf16 and float32 need no scaling).

    A disabled scaler passes everything through, so the training step has one code path.
    """
    device = torch.device(device)
    return _grad_scaler(device, enabled=device.type == "cuda" and amp_dtype == torch.float16)


def _grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3
        return torch.amp.GradScaler(device.type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)
