"""Activations of any layer for any images: `alexnet features`, and `Pretrained.extract`.

For the people who study AlexNet itself (representational similarity, brain-score style
mappings). A layer is named as `alexnet info` names it (`features.conv1`,
`classifier.fc6`, `features.pool5`, torchvision's `features.0`, ...) or by the paper's
short names: `conv1` ... `conv5`, `fc6` ... `fc8` for the learned layers (and, in our
variants, the other children of `features` and `classifier`: `norm1`, `pool5`, ...).

Pre- or post-ReLU is part of the name: `conv1` is the layer's activations, after its
ReLU; `conv1:pre` is the convolution's output before it. One name carries its own
choice, so one pass can read both (`conv1:pre,conv1`), which a global flag could not.
The values before an in-place ReLU are copied in the hook, before the ReLU overwrites
them. `conv2.tower0` / `.tower1` (any suffix order with `:pre`) is the first or second
half of a layer's maps or neurons in the two-tower nets: what each GPU held (§3.2).

Images are preprocessed as the weights were trained (the loaded weights' own transform);
ten crops (§4.1) average each image's activations over its ten views. Spatial pooling
(mean or max over positions) applies to maps, not to vectors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..model.net import learned_layers
from ..runtime.device import autocast
from ..runtime.errors import UsageError
from .features_config import POOLINGS

TWO_TOWER_VARIANTS = ("paper", "caffe")
_NAME = re.compile(r"^(?P<layer>[A-Za-z0-9_.]+?)(?P<tower>\.tower[01])?(?P<pre>:pre)?$")


@dataclass(frozen=True)
class LayerRequest:
    """One requested activation: the module it comes from and how it is cut."""

    name: str  # as the user wrote it: the output's key
    module: str  # the module path whose output is read
    tower: int | None  # 0 / 1: that half of the channels (dim 1)


def layer_names(model: nn.Module) -> dict[str, str]:
    """Every name a layer may be asked by -> its module path (post-ReLU for the learned
    layers' short names)."""
    names = {}
    for path, _ in _leaves(model):
        names[path] = path
        if model.variant != "torchvision" and "." in path:
            names[path.split(".", 1)[1]] = path  # norm1, pool5, relu6, ...
    for short, module in learned_layers(model):
        names[short] = _after_relu(model, module)
    return names


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    out = [(f"features.{n}", m) for n, m in model.features.named_children()]
    out.append(("avgpool", model.avgpool))
    return out + [(f"classifier.{n}", m) for n, m in model.classifier.named_children()]


def _after_relu(model: nn.Module, module: nn.Module) -> str:
    """The module path of a learned layer's activation (its ReLU, or itself for fc8)."""
    leaves = _leaves(model)
    for i, (path, m) in enumerate(leaves):
        if m is module:
            nxt = leaves[i + 1] if i + 1 < len(leaves) else None
            return nxt[0] if nxt and isinstance(nxt[1], (nn.ReLU, nn.Tanh)) else path
    raise KeyError(module)


def _module_path(model: nn.Module, module: nn.Module) -> str:
    return next(p for p, m in _leaves(model) if m is module)


def parse_layers(model: nn.Module, spec: str | Iterable[str]) -> list[LayerRequest]:
    """'conv1,fc7:pre' (or a list, or 'all': every learned layer after its ReLU) ->
    the requests; UsageError naming an unknown layer and the names there are."""
    names = layer_names(model)
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    if items == ["all"]:
        items = [short for short, _ in learned_layers(model)]
    requests = []
    for raw in (i.strip() for i in items):
        m = _NAME.match(raw)
        base = m["layer"] if m else raw
        if not m or base not in names:
            known = ", ".join([s for s, _ in learned_layers(model)] + ["all", "NAME:pre"])
            raise UsageError(
                f"--layers: no layer {raw!r} in the {model.variant} net ({known}, or any "
                "name `alexnet info` lists)"
            )
        path = names[base]
        if m["pre"]:
            path = _pre_relu_path(model, base, path)
        tower = None
        if m["tower"]:
            if model.variant not in TWO_TOWER_VARIANTS:
                raise UsageError(f"--layers {raw}: the {model.variant} net has one tower")
            tower = int(m["tower"][-1])
        requests.append(LayerRequest(raw, path, tower))
    if len({r.name for r in requests}) != len(requests):
        raise UsageError("--layers names a layer twice")
    return requests


def _pre_relu_path(model: nn.Module, base: str, path: str) -> str:
    learned = dict(learned_layers(model))
    if base in learned:
        return _module_path(model, learned[base])
    module = dict(_leaves(model))[path]
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        return path
    raise UsageError(f"--layers {base}:pre: only a convolution or a fully connected layer has one")


@torch.no_grad()
def extract(
    model: nn.Module,
    x: torch.Tensor,
    layers: list[LayerRequest],
    pooling: str = "none",
    crops: int = 1,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """One forward pass of a preprocessed batch -> {name: float32 activations}. With
    crops=10 the batch holds ten views per image, averaged per image."""
    if pooling not in POOLINGS:
        raise UsageError(f"--pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    modules = dict(_leaves(model))
    wanted = {r.module for r in layers}
    seen: dict[str, torch.Tensor] = {}

    def hook(path):
        def record(mod, inputs, out):
            seen[path] = out.detach().float().clone()  # before an in-place ReLU writes over it

        return record

    handles = [modules[p].register_forward_hook(hook(p)) for p in wanted]
    if "avgpool" in wanted:  # the identity at 6x6 maps is skipped: its input is its output
        handles.append(model.features.register_forward_hook(hook("features")))
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        x = x.to(device)
        with autocast(device, autocast_dtype):
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = {}
    for r in layers:
        t = seen.get(r.module, seen.get("features")) if r.module == "avgpool" else seen[r.module]
        if r.tower is not None:
            half = t.shape[1] // 2
            t = t[:, :half] if r.tower == 0 else t[:, half:]
        if t.dim() == 4 and pooling != "none":
            t = t.mean(dim=(2, 3)) if pooling == "mean" else t.amax(dim=(2, 3))
        if crops > 1:
            t = t.view(-1, crops, *t.shape[1:]).mean(dim=1)
        out[r.name] = t.cpu().contiguous()
    return out


def batches_of(items: list, size: int) -> Iterator[list]:
    """Consecutive slices of `items`, `size` at a time."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
