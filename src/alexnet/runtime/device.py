"""The device a command runs on and the precision it computes in."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import warnings

import torch
from torch import nn

from ..options import PRECISIONS, check_choice
from .errors import Notice, UsageError


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


NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo: bf16 computed in hardware
NATIVE_FP16_FLAGS = ("amx_fp16", "avx512_fp16")  # the same for fp16


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux's /proc/cpuinfo); empty where it cannot be read."""
    return set((_cpuinfo("flags") or "").split())


def _cpuinfo(field: str) -> str | None:
    """A field of the first CPU in Linux's /proc/cpuinfo; None where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.split(":", 1)[0].strip() == field:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name, as lscpu prints it."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_vendor() -> str:
    """The CPU's vendor as /proc/cpuinfo names it (GenuineIntel, AuthenticAMD); "" where
    unknown."""
    return _cpuinfo("vendor_id") or ""


def native_bf16_cpu() -> bool:
    """Whether the CPU computes bf16 itself (AMX or AVX512-BF16): only there does bf16
    beat float32 (an AVX2-only CPU emulates it, and is slower in bf16)."""
    return bool(cpu_flags() & set(NATIVE_BF16_FLAGS))


def cpu_info() -> dict:
    """What a CPU figure needs beside it: model, torch's ISA level, native bf16 units."""
    flags = cpu_flags()
    return {
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        **{f: f in flags for f in NATIVE_BF16_FLAGS},
    }


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "auto" -> bf16 on CUDA and on a CPU with native bf16 (AMX, AVX512-BF16), where
    `alexnet bench train` measured it faster (docs/benchmarks.md); fp32 elsewhere.
    An explicit choice is returned as it is."""
    check_choice("--precision", precision, PRECISIONS)
    if precision != "auto":
        if device.type == "cpu":
            _note_if_emulated(precision)
        return precision
    if device.type == "cuda" or (device.type == "cpu" and native_bf16_cpu()):
        return "bf16"
    return "fp32"


def _note_if_emulated(precision: str) -> None:
    """Warn (a Notice) where a low precision asked for by name is one this CPU emulates:
    oneDNN has no bf16 or fp16 convolution without the units, so PyTorch falls back to
    slow generic kernels (bf16 on an AVX2 EPYC: 23x slower than fp32 for training, 10x
    for inference; docs/benchmarks.md)."""
    units = {"bf16": NATIVE_BF16_FLAGS, "fp16": NATIVE_FP16_FLAGS}.get(precision)
    flags = cpu_flags()  # empty where unknown (no /proc/cpuinfo, or an ARM CPU's): say nothing
    if units is None or not flags or flags & set(units):
        return
    warnings.warn(
        Notice(
            f"--precision {precision}: this CPU ({cpu_model()}) has no {' or '.join(units)}, "
            f"so {precision} is emulated and runs many times slower than fp32 "
            "(--precision auto chooses fp32 here)"
        ),
        stacklevel=2,
    )


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None for float32; "auto" as resolve_precision decides."""
    precision = resolve_precision(precision, device)
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


def environment(device: torch.device, world_size: int = 1, precision: str | None = None) -> dict:
    """Versions and hardware, recorded beside every run and benchmark (with the
    precision it computes in, resolved: never "auto")."""
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
        **cpu_info(),
        "device": str(device),
        "world_size": world_size,
        "malloc_tuned": allocator_tuned(),  # see allocator.py
    }
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if precision is not None:
        env["precision"] = precision
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env
