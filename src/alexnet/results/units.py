"""What each unit sees: `alexnet units`, Zeiler and Fergus's Figure 2 for any net.

One streaming pass over the images keeps, for each asked unit of a layer, the K images
that excite it most (a running top-K: K x units numbers, never all activations). For a
convolutional map a unit's response to an image is its strongest position, and the patch
shown is the input under that position's receptive field (model/receptive.py), clipped
at the image's border; a fully connected unit sees the whole image.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.images import BadImage, center_view, is_image_name, load_for_store
from ..data.store import Store, is_store
from ..model.receptive import Field, receptive_fields
from ..runtime.errors import UsageError
from ..runtime.files import atomic_write_bytes, check_output_file
from ..runtime.printed import Printed
from .feature_files import preprocessed_batches
from .features import extract, parse_layers

MAX_TOP = 100
DEFAULT_UNITS = "0-15"


def parse_units(spec: str, count: int) -> list[int]:
    """'0-15', '3,7,10-12' -> unit indices, each checked against the layer's `count`."""
    units = []
    for part in (p.strip() for p in spec.split(",")):
        lo, _, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise UsageError(f"--units {spec}: write units as 3, 0-15 or 3,7,10-12") from None
        if not 0 <= first <= last < count:
            raise UsageError(f"--units {spec}: the layer has units 0-{count - 1}")
        units += range(first, last + 1)
    if len(set(units)) != len(units):
        raise UsageError(f"--units {spec} names a unit twice")
    return units


class TopK:
    """A running top-K per unit: the K largest responses seen so far, the index of each
    one's image and its position (y, x; -1 for a vector unit)."""

    def __init__(self, units: int, k: int):
        self.k = k
        self.values = torch.full((units, 0), -torch.inf)
        self.images = torch.zeros((units, 0), dtype=torch.long)
        self.positions = torch.zeros((units, 0, 2), dtype=torch.long)

    def update(self, values: torch.Tensor, positions: torch.Tensor, first_image: int) -> None:
        """values (n, units), positions (n, units, 2) of a batch whose first image is
        number first_image."""
        n = values.shape[0]
        images = torch.arange(first_image, first_image + n).expand(values.shape[1], n)
        all_v = torch.cat([self.values, values.T], dim=1)
        all_i = torch.cat([self.images, images], dim=1)
        all_p = torch.cat([self.positions, positions.transpose(0, 1)], dim=1)
        keep = min(self.k, all_v.shape[1])
        # ties go to the image met first: a stable order on (-value, image)
        order = torch.argsort(-all_v, dim=1, stable=True)[:, :keep]
        self.values = all_v.gather(1, order)
        self.images = all_i.gather(1, order)
        self.positions = all_p.gather(1, order[..., None].expand(-1, -1, 2))


@dataclass
class Stimuli:
    ids: list[str]
    source: object  # a store split, or a list of file paths

    def image(self, index: int, size: int) -> np.ndarray:
        """The stored-size image (size x size x 3 uint8) the net's input was cut from."""
        if isinstance(self.source, list):
            return load_for_store(self.source[index], size)
        return self.source.image(index)


def stimuli_of(data: str, split: str) -> Stimuli:
    if is_store(data):
        view = Store(data).split(split)
        if len(view) == 0:
            raise UsageError(f"--data {data}: the {split} split has no images")
        return Stimuli(list(view.keys), view)
    root = Path(data)
    if not root.is_dir():
        raise UsageError(f"--data {data}: neither a prepared store nor a folder of images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_name(p))
    if not files:
        raise UsageError(f"--data {data}: no image files below it")
    return Stimuli([str(p.relative_to(root)) for p in files], [str(p) for p in files])


def _field(model, module: str) -> Field | None:
    """The receptive field of a module's units: None for the fully connected layers."""
    fields = receptive_fields(model.features)
    if module.startswith("features."):
        return fields[module.split(".", 1)[1]]
    if module == "avgpool":  # the identity at the trained size: pool5's units
        return list(fields.values())[-1]
    return None


def top_units(
    weights: str,
    data: str,
    layer: str,
    units: str = DEFAULT_UNITS,
    top: int = 9,
    split: str = "val",
    batch_size: int = 64,
    device="cpu",
    precision: str = "fp32",
) -> dict:
    """For each unit of `layer`: its `top` images over the data, with the position and
    input box of its strongest response (see the module docstring)."""
    from ..weights.load import load_for_inference

    if not 1 <= top <= MAX_TOP:
        raise UsageError(f"--top must be between 1 and {MAX_TOP}, not {top}")
    stimuli = stimuli_of(data, split)
    loaded = load_for_inference(weights, device, precision, kernels="auto")
    (result,) = scan(loaded, stimuli, {layer: units}, top, batch_size)
    return result


def scan(
    loaded,
    stimuli: Stimuli,
    layers: dict[str, str],
    top: int,
    batch_size: int = 64,
    on_values=None,
):
    """One pass over the stimuli for several layers at once ({layer: units spec}): a
    result per layer, as top_units returns it. on_values(layer, values, first_image), if
    given, sees each batch's strongest responses (n, units) as they pass."""
    requests = parse_layers(loaded.model, list(layers))
    chosen: dict[str, list[int]] = {}
    states: dict[str, TopK] = {}
    for start, x in preprocessed_batches(loaded, stimuli.source, stimuli.ids, batch_size, 1):
        acts = extract(loaded.model, x, requests, autocast_dtype=loaded.amp)
        for name, a in acts.items():
            if name not in chosen:
                chosen[name] = parse_units(layers[name], a.shape[1])
                states[name] = TopK(len(chosen[name]), top)
            values, positions = _strongest(a[:, chosen[name]])
            states[name].update(values, positions, start)
            if on_values is not None:
                on_values(name, values, start)
    crop = loaded.transform("cpu").crop
    results = []
    for r in requests:
        field = _field(loaded.model, r.module)
        rows = enumerate(chosen[r.name])
        results.append(
            {
                "weights": loaded.source or loaded.path,
                "layer": r.name,
                "module": r.module,
                "input_crop": crop,
                "receptive_field": None if field is None else field.__dict__,
                "images": len(stimuli.ids),
                "units": [
                    _unit_record(u, states[r.name], i, stimuli, field, crop) for i, u in rows
                ],
                "_stimuli": stimuli,
                "_image_size": loaded.image_size,
            }
        )
    return results


def _strongest(acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(each unit's strongest response per image (n, units), its position (n, units, 2):
    (-1, -1) for a vector unit)."""
    if acts.dim() == 4:
        values, where = acts.flatten(2).max(dim=2)
        positions = torch.stack([where // acts.shape[3], where % acts.shape[3]], dim=2)
        return values, positions
    return acts, torch.full((*acts.shape, 2), -1, dtype=torch.long)


def _unit_record(unit: int, state: TopK, row: int, stimuli, field, crop: int) -> dict:
    top = []
    for value, image, (y, x) in zip(
        state.values[row].tolist(), state.images[row].tolist(), state.positions[row].tolist()
    ):
        box = (0, 0, crop, crop) if field is None else field.box(y, x, crop)
        top.append(
            {
                "image": stimuli.ids[image],
                "index": image,
                "activation": value,
                "position": None if y < 0 else [y, x],
                "box": list(box),  # top, left, bottom, right in the net's input
            }
        )
    return {"unit": unit, "top": top}


def patches(result: dict, whole: bool = False) -> list[list[np.ndarray]]:
    """For each unit, the input patch under each of its top responses (or the whole
    input with the box drawn, `whole`), as the net saw it before normalisation."""
    stimuli, crop = result["_stimuli"], result["input_crop"]
    out = []
    for unit in result["units"]:
        row = []
        for t in unit["top"]:
            try:
                view = center_view(stimuli.image(t["index"], result["_image_size"]), crop)
            except BadImage as e:
                raise UsageError(f"{t['image']}: {e}") from None
            top, left, bottom, right = t["box"]
            row.append(_outlined(view, t["box"]) if whole else view[top:bottom, left:right])
        out.append(row)
    return out


def _outlined(view: np.ndarray, box) -> np.ndarray:
    img = view.copy()
    top, left, bottom, right = box
    colour = np.array([255, 220, 0], np.uint8)
    for r in (top, max(top, bottom - 1)):
        img[r, left:right] = colour
    for c in (left, max(left, right - 1)):
        img[top:bottom, c] = colour
    return img


def draw_units(result: dict, whole: bool = False) -> bytes:
    """The figure, a row per unit of its top patches (Zeiler and Fergus's Figure 2), PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = patches(result, whole)
    k = max(len(r) for r in rows)
    fig, axes = plt.subplots(
        len(rows), k, figsize=(1.1 * k + 0.8, 1.1 * len(rows) + 0.6), squeeze=False
    )
    for ax_row, unit, row in zip(axes, result["units"], rows):
        for ax in ax_row:
            ax.axis("off")
        for ax, patch, t in zip(ax_row, row, unit["top"]):
            ax.imshow(patch, interpolation="nearest")
            ax.set_title(f"{t['activation']:.3g}", fontsize=6)
        ax_row[0].text(
            -0.15,
            0.5,
            f"unit {unit['unit']}",
            transform=ax_row[0].transAxes,
            ha="right",
            va="center",
            fontsize=7,
        )
    rf = result["receptive_field"]
    where = f"receptive field {rf['size']} px" if rf else "whole image"
    fig.suptitle(
        f"{result['weights']}: {result['layer']}, top {k} of {result['images']} images ({where})",
        fontsize=8,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def public(result: dict) -> dict:
    """The result without its internal fields: what --json prints."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


def write_units(result: dict, out: str, whole: bool = False) -> Path:
    """The figure as .png, or .html: the figure and the table of responses, one page."""
    path = Path(out)
    png = draw_units(result, whole)
    if path.suffix.lower() == ".png":
        atomic_write_bytes(path, png)
        return path
    rows = "".join(
        f"<tr><td>{u['unit']}</td><td>{html.escape(t['image'])}</td><td>{t['activation']:.4g}"
        f"</td><td>{t['position']}</td></tr>"
        for u in result["units"]
        for t in u["top"]
    )
    page = (
        "<!doctype html><meta charset=utf-8><title>units</title>"
        f"<h1>{html.escape(result['layer'])}</h1>"
        f"<img src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        "<table><tr><th>unit<th>image<th>activation<th>position</tr>"
        f"{rows}</table><script type=application/json id=units>"
        f"{html.escape(json.dumps(public(result)))}</script>"
    )
    atomic_write_bytes(path, page.encode())
    return path


def check_units_output(out: str, reads: list[str]) -> None:
    """A .png or .html output that is not one of the inputs, checked before the pass."""
    if Path(out).suffix.lower() not in (".png", ".html"):
        raise UsageError(f"--out {out}: name it .png or .html")
    check_output_file(out, reads=reads)


def units_command(cfg) -> Printed:
    """`alexnet units` (cfg: UnitsConfig): the figure or page written, and its units."""
    check_units_output(cfg.out, reads=[cfg.weights])
    options = {k: getattr(cfg, k) for k in ("units", "top", "split", "batch_size", "device")}
    r = top_units(cfg.weights, cfg.data, cfg.layer, precision=cfg.precision, **options)
    out = write_units(r, cfg.out, cfg.whole)
    line = f"{out}: {len(r['units'])} units of {r['layer']}, top {cfg.top} of {r['images']} images"
    return Printed({**public(r), "out": str(out)}, [line])
