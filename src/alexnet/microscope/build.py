"""`alexnet microscope`: every asked unit of a net, its top dataset patches and its feature
visualisation, as a static site (site.py) written under one folder, which owns its
files and resumes:

    OUT/microscope.json             the scan: weights, data, each unit's top patches and
                                    response distribution (the key a rerun compares)
    OUT/img/src/INDEX.jpg           an image the net saw (its centre crop), once each
    OUT/img/LAYER/UNIT/top-K.png    the patch under the unit's K-th strongest response
    OUT/img/LAYER/UNIT/vis.png      its feature visualisation (visualize.py)
    OUT/img/LAYER/UNIT/kernel.png   conv1's kernel
    OUT/img/LAYER/vis.json          the recipe the layer's visualisations were drawn with

One pass over the data gives every asked unit's top patches (results/units.py's scan);
then each layer's units are visualised a batch at a time, each image written as its
batch ends. A rerun of the same command skips the scan when its key matches and every
picture already there: a stopped run goes on where it stopped.
"""

from __future__ import annotations

import io
import json
import math
import re
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.images import BadImage, center_view
from ..data.store import Store, is_store
from ..model.info import layer_rows, min_input_size
from ..results.features import extract, parse_layers
from ..results.figures import kernels_png
from ..results.units import MAX_TOP, parse_units, patches, scan, stimuli_of
from ..runtime.errors import UsageError
from ..runtime.files import atomic_write_bytes
from ..runtime.printed import Printed
from . import site as pages
from .config import MicroscopeConfig
from .visualize import VIEW_MARGIN, Recipe, unit_seed, visualize

MARKER = "microscope.json"
SCHEMA = 1
DISTRIBUTION_IMAGES = 2000  # images sampled, evenly through the data, for each histogram
BINS = 30


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Site:
    """The output folder: refuses one that holds anything but a microscope, and knows
    where each picture and page goes."""

    def __init__(self, out: str | Path):
        self.root = Path(out)

    def claim(self, weights: str) -> dict | None:
        """The scan already there (None if none), refusing a folder of other things or
        the microscope of other weights. Nothing is written until the first picture."""
        marker = self.root / MARKER
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"--out {self.root}: a file, not a folder")
        if marker.is_file():
            try:
                saved = json.loads(marker.read_text())
                key = saved["key"]
            except (OSError, ValueError, KeyError, TypeError):
                raise UsageError(
                    f"--out {self.root}: its {MARKER} is damaged; remove the folder or name another"
                ) from None
            if key.get("weights") != weights:
                raise UsageError(
                    f"--out {self.root} holds the microscope of {key.get('weights')}; "
                    "name another folder"
                )
            return saved
        if self.root.is_dir() and any(self.root.iterdir()):
            raise UsageError(
                f"--out {self.root}: the folder holds other files; name a new or empty one"
            )
        if not self.root.parent.is_dir():
            raise UsageError(f"--out {self.root}: {self.root.parent} is not a folder")
        return None

    def unit_dir(self, slug: str, unit: int) -> str:
        return f"img/{slug}/{unit}"

    def path(self, rel: str) -> Path:
        return self.root / rel

    def write(self, rel: str, data: bytes | str) -> None:
        """A file under the folder, whole or not at all (a stopped run leaves no half
        picture for its rerun to take as done)."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data.encode() if isinstance(data, str) else data)

    def write_png(self, rel: str, pixels: np.ndarray) -> None:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG")
        self.write(rel, buf.getvalue())


def slug_of(layer: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", layer)


# ------------------------------------------------------------------ what is asked
def _requests(loaded, cfg: MicroscopeConfig) -> list[dict]:
    """Each asked layer: its name, units, width and the module whose output is
    visualised (before the ReLU where the layer has one), checked before any work."""
    names = [n.strip() for n in cfg.layers.split(",") if n.strip()]
    requests = parse_layers(loaded.model, names)
    crop = loaded.transform("cpu").crop
    blank = torch.zeros(1, 3, crop, crop, device=loaded.device)
    acts = extract(loaded.model, blank, requests, autocast_dtype=loaded.amp)
    widths = {k: v.shape[1] for k, v in acts.items()}
    out = []
    for r in requests:
        width = widths[r.name]
        units = list(range(width)) if cfg.units == "all" else _units(cfg.units, width, r.name)
        out.append(
            {
                "layer": r.name,
                "slug": slug_of(r.name),
                "units": units,
                "spec": ",".join(map(str, units)),
                "vis_module": _vis_module(loaded.model, r),
                "offset": width if r.tower == 1 else 0,
            }
        )
    return out


def _units(spec: str, width: int, layer: str) -> list[int]:
    try:
        return parse_units(spec, width)
    except UsageError as e:
        raise UsageError(f"{e} ({layer} has {width})") from None


def _vis_module(model, request) -> str:
    """The module a layer's visualisation maximises: the convolution or fully connected
    layer itself for a learned layer (before its ReLU), else the module read."""
    base = request.name.split(":")[0].split(".tower")[0]
    try:
        (pre,) = parse_layers(model, [f"{base}:pre"])
        return pre.module
    except UsageError:
        return request.module


# ------------------------------------------------------------------ the scan
def _scan_key(cfg: MicroscopeConfig, loaded, requests: list[dict]) -> dict:
    path = Path(loaded.path) if loaded.path else None
    stat = path.stat() if path and path.is_file() else None
    return {
        "schema": SCHEMA,
        "weights": cfg.weights,
        "weights_file": [str(path), stat.st_size, stat.st_mtime_ns] if stat else None,
        "data": str(Path(cfg.data).resolve()),
        "split": cfg.split,
        "top": cfg.top,
        "layers": {r["layer"]: r["spec"] for r in requests},
        "precision": loaded.plan.precision if loaded.plan else "fp32",
    }


class _Distributions:
    """Each unit's strongest response on images sampled evenly through the data."""

    def __init__(self, images: int):
        self.every = max(1, math.ceil(images / DISTRIBUTION_IMAGES))
        self.kept: dict[str, list[torch.Tensor]] = {}

    def __call__(self, layer: str, values: torch.Tensor, first: int) -> None:
        rows = [i for i in range(len(values)) if (first + i) % self.every == 0]
        self.kept.setdefault(layer, []).append(values[rows].float())

    def of(self, layer: str) -> list[dict]:
        values = torch.cat(self.kept[layer]).numpy()
        return [_histogram(values[:, j]) for j in range(values.shape[1])]


def _histogram(v: np.ndarray) -> dict:
    lo, hi = float(v.min()), float(v.max())
    counts, edges = np.histogram(v, bins=BINS, range=(lo, hi if hi > lo else lo + 1))
    return {
        "images": int(v.size),
        "counts": counts.tolist(),
        "edges": [float(x) for x in edges],
        "mean": float(v.mean()),
        "active": float((v > 0).mean()),
    }


def _scanned(cfg, loaded, stimuli, requests: list[dict]) -> tuple[list[dict], dict]:
    """The scan's per-layer results (with each unit's distribution) and, for drawing
    the patches, the raw results units.scan returns."""
    dist = _Distributions(len(stimuli.ids))
    layers = {r["layer"]: r["spec"] for r in requests}
    t0 = time.perf_counter()
    results = scan(loaded, stimuli, layers, cfg.top, cfg.batch_size, on_values=dist)
    _say(
        f"scan: {len(stimuli.ids):,} images, {len(layers)} layers in {time.perf_counter() - t0:.0f} s"
    )
    saved = []
    for r, result in zip(requests, results):
        for unit, d in zip(result["units"], dist.of(r["layer"])):
            unit["distribution"] = d
        saved.append({k: v for k, v in result.items() if not k.startswith("_")})
    return saved, {r["layer"]: result for r, result in zip(requests, results)}


# ------------------------------------------------------------------ the pictures
def _write_sources(site: Site, stimuli, raw: dict, crop: int, image_size: int) -> None:
    """Each image that is some unit's top one, as the net saw it, once."""
    wanted = sorted(
        {t["index"] for result in raw.values() for u in result["units"] for t in u["top"]}
    )
    for index in wanted:
        rel = f"img/src/{index}.jpg"
        if site.path(rel).is_file():
            continue
        try:
            view = center_view(stimuli.image(index, image_size), crop)
        except BadImage as e:
            raise UsageError(f"{stimuli.ids[index]}: {e}") from None
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(view)).save(buf, format="JPEG", quality=90)
        site.write(rel, buf.getvalue())


def _write_patches(site: Site, request: dict, result: dict) -> None:
    if result["receptive_field"] is None:
        return  # a fully connected unit sees the whole image: its source is its patch
    todo = [
        (u["unit"], k)
        for u in result["units"]
        for k in range(len(u["top"]))
        if not site.path(f"{site.unit_dir(request['slug'], u['unit'])}/top-{k}.png").is_file()
    ]
    if not todo:
        return
    for unit, row in zip(result["units"], patches(result)):
        for k, patch in enumerate(row):
            site.write_png(f"{site.unit_dir(request['slug'], unit['unit'])}/top-{k}.png", patch)


def _write_kernels(site: Site, loaded, requests: list[dict]) -> None:
    """Figure 3 for the index, and each asked conv1 unit's kernel (each scaled to its
    own range, as Figure 3 shows them)."""
    (conv1,) = parse_layers(loaded.model, ["conv1:pre"])
    weight = loaded.model.get_submodule(conv1.module).weight.detach().float().cpu()
    if loaded.norm.get("channels") == "bgr":
        weight = weight.flip(1)  # shown in RGB
    if not site.path("img/kernels.png").is_file():
        site.write("img/kernels.png", kernels_png(loaded.model))
    for r in requests:
        if r["vis_module"] != conv1.module:
            continue
        for unit in r["units"]:
            rel = f"{site.unit_dir(r['slug'], unit)}/kernel.png"
            if not site.path(rel).is_file():
                w = weight[unit + r["offset"]]
                w = (w - w.min()) / (w.max() - w.min()).clamp(min=1e-12)
                site.write_png(rel, (w.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


# ------------------------------------------------------------------ visualisations
def _visualise_layer(site: Site, loaded, request: dict, recipe: Recipe, batch: int):
    """Draw the layer's missing visualisations, a batch of units at a time."""
    key = {"recipe": asdict(recipe), "module": request["vis_module"]}
    key_path = site.path(f"img/{request['slug']}/vis.json")
    if key_path.is_file() and json.loads(key_path.read_text()) != key:
        for unit in request["units"]:  # drawn another way: drawn again
            site.path(f"{site.unit_dir(request['slug'], unit)}/vis.png").unlink(missing_ok=True)
    site.write(f"img/{request['slug']}/vis.json", json.dumps(key, sort_keys=True))
    todo = [
        u
        for u in request["units"]
        if not site.path(f"{site.unit_dir(request['slug'], u)}/vis.png").is_file()
    ]
    module = loaded.model.get_submodule(request["vis_module"])
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        t0 = time.perf_counter()
        seeds = [unit_seed(recipe.seed, request["layer"], u) for u in chunk]
        channels = [u + request["offset"] for u in chunk]
        images = visualize(loaded.model, module, channels, seeds, loaded.norm, recipe, loaded.amp)
        for u, image in zip(chunk, images):
            pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            site.write_png(f"{site.unit_dir(request['slug'], u)}/vis.png", pixels)
        done = len(request["units"]) - len(todo) + start + len(chunk)
        _say(
            f"{request['layer']}: units {chunk[0]}-{chunk[-1]} visualised in "
            f"{time.perf_counter() - t0:.0f} s ({done} of {len(request['units'])})"
        )


def _layer_recipe(loaded, request: dict, recipe: Recipe) -> Recipe:
    """The recipe's images for a map (at least as large as the net takes); for a fully
    connected layer, whose units see one whole input, images whose views are the net's
    own crop."""
    if not request["vis_module"].startswith("features"):
        return replace(recipe, size=loaded.transform("cpu").crop - 2 * VIEW_MARGIN)
    least = min_input_size(loaded.model.variant, loaded.model.options) - 2 * VIEW_MARGIN
    return replace(recipe, size=max(recipe.size, least))


# ------------------------------------------------------------------ the manifest
def _manifest(site: Site, scanned: list[dict], requests: list[dict], loaded) -> list[dict]:
    """Per layer: its units, each with what its pages show, paths relative to OUT."""
    layers = []
    for r, result in zip(requests, scanned):
        units = []
        for u in result["units"]:
            folder = site.unit_dir(r["slug"], u["unit"])
            fc = result["receptive_field"] is None
            top = [
                {
                    **{k: t[k] for k in ("image", "activation", "box")},
                    "source": f"img/src/{t['index']}.jpg",
                    "patch": f"img/src/{t['index']}.jpg" if fc else f"{folder}/top-{k}.png",
                }
                for k, t in enumerate(u["top"])
            ]
            vis = f"{folder}/vis.png"
            kernel = f"{folder}/kernel.png"
            units.append(
                {
                    "layer": r["layer"],
                    "unit": u["unit"],
                    "label": _label(loaded, r, u["unit"]),
                    "page": f"units/{r['slug']}/{u['unit']}.html",
                    "visualization": vis if site.path(vis).is_file() else None,
                    "kernel": kernel if site.path(kernel).is_file() else None,
                    "strongest": top[0]["patch"] if top else None,
                    "top": top,
                    "distribution": u["distribution"],
                }
            )
        field = result["receptive_field"]
        layers.append(
            {
                "layer": r["layer"],
                "slug": r["slug"],
                "page": f"layers/{r['slug']}.html",
                "receptive_field": None if field is None else field["size"],
                "input_crop": result["input_crop"],
                "units": units,
                "drawn": sum(u["visualization"] is not None for u in units),
            }
        )
    return layers


def _label(loaded, request: dict, unit: int) -> str:
    """fc8's units by their classes (whatever the variant calls fc8: torchvision's
    classifier.6 too), the others by number."""
    (fc8,) = parse_layers(loaded.model, ["fc8:pre"])
    if request["vis_module"] == fc8.module and ".tower" not in request["layer"]:
        return f"unit {unit}: {loaded.classes[unit]}"
    return f"unit {unit}"


def _write_pages(site: Site, about: dict, layers: list[dict]) -> None:
    info = {**about, "layers": layers}
    site.write("style.css", pages.STYLE)
    site.write("index.html", pages.index_page(info))
    for layer in layers:
        units = layer["units"]
        site.write(layer["page"], pages.layer_page(info, layer, units))
        for i, u in enumerate(units):
            prev = units[i - 1]["unit"] if i else None
            nxt = units[i + 1]["unit"] if i + 1 < len(units) else None
            text = pages.unit_page(info, layer, u, (prev, nxt))
            site.write(u["page"], text)


# ------------------------------------------------------------------ the whole
def build_microscope(cfg: MicroscopeConfig) -> dict:
    """Scan, draw and write the site; returns the manifest (see microscope_command)."""
    from ..weights.load import load_for_inference

    if not 1 <= cfg.top <= MAX_TOP:
        raise UsageError(f"--top must be between 1 and {MAX_TOP}, not {cfg.top}")
    site = Site(cfg.out)
    saved = site.claim(cfg.weights)
    stimuli = stimuli_of(cfg.data, cfg.split)
    loaded = load_for_inference(cfg.weights, cfg.device, cfg.precision, kernels="auto")
    if is_store(cfg.data):
        loaded.check_store(Store(cfg.data), classes=False)
    requests = _requests(loaded, cfg)
    crop = loaded.transform("cpu").crop
    key = _scan_key(cfg, loaded, requests)
    if saved is not None and saved["key"] == key:
        scanned, raw = saved["layers"], None
        _say(f"scan: as {site.root / MARKER} holds it")
    else:
        scanned, raw = _scanned(cfg, loaded, stimuli, requests)
        site.write(MARKER, json.dumps({"key": key, "layers": scanned}))
    if raw is None:  # the patches of a saved scan are drawn from its records again
        raw = _raw_of(scanned, stimuli, loaded.image_size)
    _write_sources(site, stimuli, raw, crop, loaded.image_size)
    for r in requests:
        _write_patches(site, r, raw[r["layer"]])
    _write_kernels(site, loaded, requests)
    recipe = Recipe(size=cfg.size, steps=cfg.steps, seed=cfg.seed)
    about = _about(cfg, loaded, stimuli, recipe, crop)
    _write_pages(site, about, _manifest(site, scanned, requests, loaded))
    if cfg.steps:
        for r in requests:
            _visualise_layer(site, loaded, r, _layer_recipe(loaded, r, recipe), cfg.vis_batch)
            _write_pages(site, about, _manifest(site, scanned, requests, loaded))
    layers = _manifest(site, scanned, requests, loaded)
    return {**about, "out": str(site.root), "layers": layers}


def _raw_of(scanned: list[dict], stimuli, image_size: int) -> dict:
    return {s["layer"]: {**s, "_stimuli": stimuli, "_image_size": image_size} for s in scanned}


def _about(cfg, loaded, stimuli, recipe: Recipe, crop: int) -> dict:
    drawn = (
        f"{recipe.steps} Adam steps at rate {recipe.lr:g} on {recipe.size}-pixel images "
        f"(fully connected layers: the net's {crop}-pixel input), seed {recipe.seed}"
        if recipe.steps
        else "none drawn (--steps 0)"
    )
    return {
        "weights": cfg.weights,
        "variant": loaded.model.variant,
        "num_classes": loaded.num_classes,
        "data": cfg.data,
        "split": cfg.split if is_store(cfg.data) else None,
        "images": len(stimuli.ids),
        "recipe": asdict(recipe),
        "recipe_line": drawn,
        "missing_vis": "not drawn: --steps 0"
        if not recipe.steps
        else "not drawn yet: run the command again to finish",
        "table": layer_rows(loaded.model, crop),
    }


def microscope_command(cfg: MicroscopeConfig) -> Printed:
    """`alexnet microscope`: the site written; --json prints its manifest."""
    m = build_microscope(cfg)
    units = [
        {k: u[k] for k in ("layer", "unit", "page", "visualization", "top")}
        for layer in m["layers"]
        for u in layer["units"]
    ]
    data = {k: m[k] for k in ("weights", "data", "split", "images", "out", "recipe")}
    data["layers"] = [{k: lay[k] for k in ("layer", "page", "drawn")} for lay in m["layers"]]
    data["units"] = units
    drawn = sum(lay["drawn"] for lay in m["layers"])
    line = (
        f"{Path(m['out']) / 'index.html'}: {len(units)} units of {len(m['layers'])} layer(s), "
        f"top {cfg.top} of {m['images']:,} images, {drawn} feature visualisations"
    )
    return Printed(data, [line])
