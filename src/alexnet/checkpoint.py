"""Checkpoints: plain dicts of state dicts and primitives, written atomically and read
with weights_only=True. Wrappers (DDP, torch.compile) are unwrapped before saving."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .errors import UsageError
from .files import atomic_write


def unwrap(model: nn.Module) -> nn.Module:
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def save_atomic(obj: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: torch.save(obj, fh))


def load(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle, zip and unsafe-type errors alike
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"{path} is not a readable checkpoint ({msg})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path} is not a checkpoint (a {type(obj).__name__}, not a dict)")
    return obj
