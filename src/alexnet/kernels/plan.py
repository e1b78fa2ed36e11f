"""The execution plan: what a run computes in and with which kernels, decided once.

Device, precision and the CPU's facts go in; out come the autocast dtype, how the
weights are held (float32, or cast once to the low precision for inference), and which
fast kernels replace which of the plain model's modules. Every verb that runs a net
asks `resolve_plan` and applies the plan to its model; the model itself (model/) never
asks what machine it is on.

What the plan picks, and why (figures in docs/benchmarks.md):
- "lrn" (kernels/lrn.py) on a CPU, in every precision: the plain formula's autograd
  graph costs far more there than the fused passes.
- "linear" (kernels/linear.py) on an AMD CPU with AVX-512, where the weights are float32:
  MKL runs its AVX2 code there, oneDNN its AVX-512 code.
- none under torch.compile, which fuses the plain formula itself, and none on a GPU,
  where the kernels have not been measured against the formula.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..model.lrn import LocalResponseNorm
from ..options import KERNELS
from ..runtime.device import cpu_flags, cpu_model, cpu_vendor, resolve_precision
from ..runtime.errors import UsageError
from .linear import OneDNNLinear, available, sharing
from .lrn import FastLRN

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Plan:
    """How one run computes (see the module docstring); `apply` puts it into a model."""

    device: str
    precision: str  # fp32, bf16 or fp16: never "auto"
    weights: str  # "float32" (autocast casts them per op) or "cast" (held in the precision)
    kernels: tuple[str, ...]  # which fast kernels replace the plain modules
    hardware: str  # the CPU's model, or the GPU's name

    @property
    def amp(self) -> torch.dtype | None:
        """The autocast dtype (None: float32)."""
        return DTYPES[self.precision]

    @property
    def weight_dtype(self) -> torch.dtype:
        return self.amp if self.weights == "cast" else torch.float32

    def line(self) -> str:
        """The plan in one line, as `train` prints it when it starts."""
        held = (
            "float32 weights" if self.weights == "float32" else f"weights held in {self.precision}"
        )
        autocast = "no autocast" if self.amp is None else f"autocast {self.precision}"
        kernels = ", ".join(self.kernels) or "none (the plain model)"
        return f"plan: {self.device} ({self.hardware}), {autocast}, {held}, kernels: {kernels}"

    def as_dict(self) -> dict:
        """What environment.json records of it."""
        return {**asdict(self), "kernels": list(self.kernels)}

    def apply(self, model: nn.Module) -> nn.Module:
        """Put the plan into `model`, in place: its kernels in place of the plain modules
        (sharing their parameters), its weights in the plan's dtype. Returns it."""
        replace_modules(model, lambda module: _fast_form(module, self.kernels))
        if self.weights == "cast":
            model.to(self.weight_dtype)
        return model


def resolve_plan(
    device: torch.device,
    precision: str = "auto",
    kernels: str = "auto",
    train: bool = True,
    compile: bool = False,
) -> Plan:
    """The plan for a run on `device` in `precision` ("auto": runtime.device decides),
    training or not; `kernels`: "auto", "none" or a comma list of options.KERNELS."""
    precision = resolve_precision(precision, device)
    weights = "cast" if not train and precision != "fp32" else "float32"
    if kernels == "auto":
        chosen = _auto_kernels(device, precision, compile)
    else:
        chosen = _named_kernels(kernels)
    return Plan(str(device), precision, weights, chosen, _hardware(device))


def _auto_kernels(device: torch.device, precision: str, compile: bool) -> tuple[str, ...]:
    if device.type != "cpu" or compile:
        return ()
    picked = ["lrn"]
    if precision == "fp32" and onednn_faster():
        picked.append("linear")
    return tuple(picked)


def onednn_faster() -> bool:
    """Whether float32 products are faster through oneDNN on this CPU: an AMD CPU with
    AVX-512 (kernels/linear.py)."""
    return cpu_vendor() == "AuthenticAMD" and "avx512f" in cpu_flags() and available()


def _named_kernels(kernels: str) -> tuple[str, ...]:
    if kernels == "none":
        return ()
    names = tuple(k.strip() for k in kernels.split(",") if k.strip())
    for name in names:
        if name not in KERNELS:
            raise UsageError(
                f"--kernels: unknown kernel {name!r}; choose auto, none or from {', '.join(KERNELS)}"
            )
    if "linear" in names and not available():
        raise UsageError("--kernels linear: this PyTorch build has no oneDNN matmul")
    return tuple(k for k in KERNELS if k in names)


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model() if device.type == "cpu" else device.type


def replace_modules(model: nn.Module, form) -> nn.Module:
    """Each submodule of `model` for which form(module) gives another module replaced by
    it, in place (form returns None to keep one). Returns the model."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            other = form(child)
            if other is not None:
                setattr(parent, name, other)
    return model


def _fast_form(module: nn.Module, kernels: tuple[str, ...]) -> nn.Module | None:
    if "lrn" in kernels and type(module) is LocalResponseNorm:
        return FastLRN.like(module)
    if "linear" in kernels and type(module) is nn.Linear:
        return OneDNNLinear.like(module)
    return None


def plain(model: nn.Module) -> nn.Module:
    """`model` with the plain modules back in place of any kernel, in place."""

    def plain_form(module: nn.Module) -> nn.Module | None:
        if isinstance(module, FastLRN):
            return LocalResponseNorm.like(module)
        if isinstance(module, OneDNNLinear):
            return sharing(nn.Linear, module)
        return None

    return replace_modules(model, plain_form)
