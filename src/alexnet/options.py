"""Every enumerated choice of the library, spelled once.

Importable without torch: the command line builds its flags (choices, defaults,
help) from these names, and the modules that act on a choice import it from here.
"""

from __future__ import annotations

from dataclasses import MISSING, field, fields
from typing import Literal, get_args

Variant = Literal["paper", "one-tower", "torchvision", "caffe", "six-conv"]
Init = Literal["paper", "caffe", "torch", "kaiming"]
Activation = Literal["relu", "tanh"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]  # auto: bf16 on cuda and AMX/AVX512-BF16 CPUs
Decode = Literal["auto", "workers", "device"]  # where a JPEG store is decoded
Schedule = Literal["plateau", "step", "warmup-cosine", "constant"]
Optimizer = Literal["paper-sgd", "sgd", "adamw"]
StoreFormat = Literal["auto", "raw", "jpeg"]
Freeze = Literal["features", "fc7"]  # fine-tuning: train the classifier only, or fc8 only
ExportFormat = Literal["onnx", "torch-export", "safetensors"]
Kernel = Literal["lrn", "linear"]  # the fast kernels the execution plan may put in (kernels/)

VARIANTS: tuple[str, ...] = get_args(Variant)
INITS: tuple[str, ...] = get_args(Init)
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
PRECISIONS: tuple[str, ...] = get_args(Precision)
DECODES: tuple[str, ...] = get_args(Decode)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
STORE_FORMATS: tuple[str, ...] = get_args(StoreFormat)
FREEZES: tuple[str, ...] = get_args(Freeze)
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)
KERNELS: tuple[str, ...] = get_args(Kernel)
KERNELS_HELP = (
    "fast kernels in place of the formula's modules: auto (what the execution plan picks "
    f"for this device and precision), none (the plain model), or a comma list of {', '.join(KERNELS)}"
)
# an exported file's number type: named, never "auto" (a file outlives the CPU it was made on)
EXPORT_PRECISIONS = ("fp32", "bf16", "fp16")
CROPS = (1, 10)  # evaluation views: the centre, or §4.1's ten patches (docs/paper.md)
# evaluation's forward pass counts patches, so that ten crops do not hold ten times the maps
PATCHES_PER_PASS = 128
MODEL_PARALLEL = (1, 2)  # 2: the paper's two towers on two processes (§3.2)


WEIGHTS_HELP = (
    "our checkpoint (.pt, .safetensors), torchvision's AlexNet .pth, a .caffemodel, or "
    "'torchvision' / 'caffe': the published ImageNet nets (torch.hub's cache, downloaded once)"
)
DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"


def check_choice(name: str, value, choices) -> None:
    """Raise ValueError naming the option and its choices when `value` is not one."""
    if value not in choices:
        listed = ", ".join(str(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}, not {value!r}")


def option(
    default=MISSING,
    help: str = "",
    choices=None,
    cli: bool = True,
    metavar: str | None = None,
    flag: str | None = None,
):
    """A config dataclass field carrying what its command-line flag needs to know.
    No default: a positional argument. `flag` names a flag other than --field-name."""
    meta = {"help": help, "choices": choices, "cli": cli, "metavar": metavar, "flag": flag}
    return field(default=default, metadata=meta)


def check_choices(config) -> None:
    """Raise ValueError for the first field of a config dataclass whose value is not one
    of its option's choices (None, a field left to be decided, passes), naming the flag."""
    for f in fields(config):
        choices, value = f.metadata.get("choices"), getattr(config, f.name)
        if choices is None or value is None:
            continue
        name = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        for one in value if isinstance(value, list) else [value]:
            check_choice(name, one, choices)


def check_at_least(config, **lows) -> None:
    """Raise ValueError for the first field below its lower bound (None passes)."""
    for name, low in lows.items():
        value = getattr(config, name)
        if value is not None and value < low:
            bound = "non-negative" if low == 0 else f"at least {low}"
            raise ValueError(f"--{name.replace('_', '-')} must be {bound}, not {value}")
