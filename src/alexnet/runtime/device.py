"""The device a command runs on and the precision it computes in."""

from __future__ import annotations

import contextlib
import os
import platform
import sys

import torch
from torch import nn

from ..options import PRECISIONS, check_choice
from .errors import UsageError


def pick_device(name: str = "auto") -> torch.device:
    """ "auto": cuda, then mps, then cpu. An explicit device that is not there is a
    UsageError (one line, exit 2), never a CUDA traceback later on."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(
            f"--device: unknown device {name!r} (auto, cpu, cuda, cuda:N or mps)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA device is available")
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps asked for, but MPS is not available")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device: unsupported device {name!r} (auto, cpu, cuda, cuda:N or mps)")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None for float32; bf16 on cuda when "auto"."""
    check_choice("--precision", precision, PRECISIONS)
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast when a low precision is asked for, else nothing."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def precision_name(dtype: torch.dtype | None) -> str:
    """An autocast dtype's name, as benchmarks report it."""
    return str(dtype).replace("torch.", "") if dtype else "fp32"


def model_device(model: nn.Module) -> torch.device:
    """Where a model's parameters live."""
    return next(model.parameters()).device


def synchronizer(device: torch.device):
    """What waits for the device's queued work, so a timer stops when the work does."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def environment(device: torch.device, world_size: int = 1) -> dict:
    """Versions and hardware, recorded beside every run and benchmark."""
    from .. import __version__
    from .allocator import allocator_tuned

    env = {
        "alexnet": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": str(device),
        "world_size": world_size,
        "malloc_tuned": allocator_tuned(),  # see allocator.py
    }
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env
