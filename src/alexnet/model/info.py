"""The paper's Figure 2 in text: every layer with its output shape, parameters and MACs.

Shapes come from a forward pass on the meta device, so no memory is allocated and
the numbers are those of the real modules, not of a second description of them.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .lrn import LocalResponseNorm
from .net import (
    CAFFE_MEAN_BGR,
    AlexNet,
    count_parameters,
    create_model,
    input_crop,
)
from .receptive import receptive_fields

# what bvlc_alexnet does otherwise than the paper (docs/paper.md, "Caffe's AlexNet")
CAFFE_DIFFERENCES = (
    "biases 0.1 where the paper has 1 (its training fillers; fc6 and fc7 weights N(0, 0.005^2))",
    "no PCA lighting in its training",
    "227x227 crops (the paper: 224, with cuda-convnet's rounding up)",
    "LRN k = 1 (the paper: 2)",
    "conv1 is ungrouped, so LRN 1's window crosses the towers (the paper: each GPU's own maps)",
    "BGR input, 0..255 minus a per-channel mean (the paper: RGB minus the mean image)",
    "max-pooling rounds its output size up (ceil mode)",
)


@dataclass
class LayerInfo:
    """One row of the layer table."""

    name: str
    kind: str
    output_shape: list[int]  # without the batch dimension
    params: int
    macs: int


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        return out[0].numel() * k
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return 0


def layer_table(model: AlexNet, input_size: int) -> list[LayerInfo]:
    """One row per module; raises ValueError naming the last layer before a too-small
    input empties the maps."""
    if input_size < 1:
        raise ValueError(f"input size must be positive, not {input_size}")
    if any(p.device.type != "meta" for p in model.parameters()):
        model = copy.deepcopy(model).to("meta", torch.float32)  # weights held in bf16 too
    leaves = [(f"features.{n}", m) for n, m in model.features.named_children()]
    leaves.append(("avgpool", model.avgpool))
    leaves += [(f"classifier.{n}", m) for n, m in model.classifier.named_children()]
    rows: list[LayerInfo] = []

    def record(name: str):
        def hook(mod, inputs, out):
            params = sum(p.numel() for p in mod.parameters(recurse=False))
            rows.append(
                LayerInfo(name, type(mod).__name__, list(out.shape[1:]), params, _macs(mod, out))
            )

        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in leaves]
    try:
        with torch.no_grad():
            model.eval()(torch.empty(1, 3, input_size, input_size, device="meta"))
    except RuntimeError as e:
        last = rows[-1].name if rows else "the input"
        raise ValueError(
            f"input size {input_size} is too small for the {model.variant} net: "
            f"the maps are empty after {last} ({str(e).splitlines()[0]})"
        ) from None
    finally:
        for h in hooks:
            h.remove()
    return rows


def min_input_size(variant: str = "paper", options=None) -> int:
    """The smallest square input the net computes an output for (the pooling to 6x6
    takes any map of 1x1 or more): a bisection over layer_table on the meta device."""
    with torch.device("meta"):
        model = create_model(variant, num_classes=1, **(asdict(options) if options else {}))
    low, high = 1, input_crop(variant)  # the trained size works
    while low < high:
        mid = (low + high) // 2
        try:
            layer_table(model, mid)
            high = mid
        except ValueError:
            low = mid + 1
    return low


def lrn_info(model: AlexNet) -> list[dict]:
    """Each LRN layer's constants, the coefficient on the window sum as it is computed:
    b = a / (k + coefficient * sum of a^2 over size maps) ** beta."""
    return [
        {
            "name": name,
            "size": m.size,
            "k": m.k,
            "beta": m.beta,
            "coefficient_on_sum": m.alpha,
            "window_within": "each tower's maps" if m.groups > 1 else "all maps",
        }
        for name, m in model.features.named_children()
        if isinstance(m, LocalResponseNorm)
    ]


def model_info(
    variant: str = "paper", input_size: int | None = None, num_classes: int = 1000
) -> dict:
    """The layer table of a variant at an input size (default: the size it is trained
    on), with totals, its LRN constants and its input: what `alexnet info` prints."""
    input_size = input_size or input_crop(variant)
    with torch.device("meta"):
        model = create_model(variant, num_classes=num_classes)
    rows = layer_table(model, input_size)
    lrn = lrn_info(model)
    info = {
        "variant": variant,
        "input_size": input_size,
        "num_classes": num_classes,
        "params": count_parameters(model),
        "macs": sum(r.macs for r in rows),
        "min_input_size": min_input_size(variant),
        "layers": layer_rows(model, input_size, rows),
        "lrn": lrn,
        # which convention the coefficient follows (None: a net without LRN)
        "lrn_alpha_over_n": model.options.lrn_alpha_over_n if lrn else None,
    }
    if variant == "caffe":
        info["input"] = {
            "crop": input_crop(variant),
            "channels": "bgr",
            "mean_bgr": list(CAFFE_MEAN_BGR),
            "scale": "0..255",
        }
        info["differs_from_paper"] = list(CAFFE_DIFFERENCES)
    return info


def layer_rows(model: AlexNet, input_size: int, rows: list[LayerInfo] | None = None) -> list[dict]:
    """The layer table as `alexnet info` gives it: each row with its receptive field."""
    fields = receptive_fields(model.features)
    rows = layer_table(model, input_size) if rows is None else rows
    return [{**asdict(r), "receptive_field": _field(fields, r.name)} for r in rows]


def _field(fields: dict, name: str) -> int | None:
    """The side of the input square a layer's unit sees (None: fully connected)."""
    if name.startswith("features."):
        return fields[name.split(".", 1)[1]].size
    return None


def format_info(info: dict) -> str:
    """model_info's result as the text table `alexnet info` prints."""
    lines = [
        f"AlexNet variant {info['variant']!r}, input 3x{info['input_size']}x{info['input_size']}, "
        f"{info['num_classes']} classes",
        f"{'layer':<22}{'type':<20}{'output':>16}{'params':>14}{'MACs':>16}{'field':>7}",
    ]
    for r in info["layers"]:
        shape = "x".join(str(d) for d in r["output_shape"])
        field = "" if r["receptive_field"] is None else str(r["receptive_field"])
        lines.append(
            f"{r['name']:<22}{r['kind']:<20}{shape:>16}{r['params']:>14,}{r['macs']:>16,}{field:>7}"
        )
    lines.append("-" * 95)
    lines.append(f"{'total':<58}{info['params']:>14,}{info['macs']:>16,}")
    lines.append("field: the side of the input square a unit sees (its receptive field)")
    lines.append(f"smallest input: {info['min_input_size']}x{info['min_input_size']}")
    if info.get("lrn_alpha_over_n") is not None:
        how = (
            "alpha / n, as cuda-convnet computed it"
            if info["lrn_alpha_over_n"]
            else "alpha undivided, as the paper prints it"
        )
        lines.append(f"LRN coefficient: {how}")
    for n in info["lrn"]:
        lines.append(
            f"{n['name']}: b = a / ({n['k']:g} + {n['coefficient_on_sum']:.3g} * sum of a^2 over "
            f"{n['size']} maps)^{n['beta']:g}, window within {n['window_within']}"
        )
    if "input" in info:
        i = info["input"]
        mean = ", ".join(f"{v:.3f}" for v in i["mean_bgr"])
        lines.append(f"input: {i['crop']}x{i['crop']} crops, BGR, 0..255 minus ({mean})")
    if info.get("differs_from_paper"):
        lines.append("differs from the paper:")
        lines += [f"  - {d}" for d in info["differs_from_paper"]]
    return "\n".join(lines)
