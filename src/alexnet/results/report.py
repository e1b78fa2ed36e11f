"""`alexnet report`: one self-contained HTML page for a run, every image inline.

`collect_report` gathers what the page shows (evaluation, samples, neighbours) into a
`ReportData`; `render_report` turns that into HTML; `build_report` does both and
writes the page atomically."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.images import center_view
from ..data.store import Store
from ..evaluation.embed import split_features
from ..evaluation.split import evaluate_split
from ..kernels.plan import resolve_plan
from ..model.net import learned_layers
from ..runtime.device import pick_device, precision_name
from ..runtime.errors import UsageError
from ..runtime.files import atomic_write_bytes, check_output_file
from ..runtime.printed import Printed
from ..weights.load import load_for_inference
from ..weights.rundir import RunDir
from .explain import draw as draw_explanations
from .explain import occlusion_map, probabilities
from .figures import (
    colour_index,
    colour_lines,
    curves_png,
    kernels_png,
    neighbors_png,
    predictions_png,
)
from .paper_rows import PaperRow, matching_rows, store_dataset
from .predict import predict_stored
from .retrieval import features, nearest
from .units import Stimuli, draw_units, scan


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


@dataclass
class ReportData:
    """What the page shows, gathered from a run directory; `render_report` draws it."""

    run: Path
    config: dict
    history: list[dict]
    num_classes: int
    val_images: int
    checkpoint: str  # the file the page's evaluations ran ("best.pt" or "last.pt")
    results: list[dict]  # evaluate_split's, for 1 and 10 crops
    dataset: str | None  # the ILSVRC the store holds, where known
    paper: list[PaperRow]  # the published rows those results stand beside
    kernels: bytes  # PNG
    colour: list[str]  # the colour index per tower, a line each
    crops: list[np.ndarray]  # the sampled validation images, centre crops
    tops: list[list[dict]]
    truths: list[str]
    neighbor_rows: list[list[np.ndarray]]
    neighbor_labels: list[list[str]]
    gallery_size: int
    units: list[tuple[str, bytes]]  # (conv layer, PNG of its units' top patches)
    units_images: int  # the validation images the units were ranked over
    occlusion: bytes  # PNG: occlusion maps of the first predictions' images
    precision: str = "float32"  # what the error table was computed in


def build_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    samples: int = 8,
    k: int = 5,
    device="cpu",
    eval_limit: int | None = 1000,
    gallery_limit: int = 1000,
) -> Path:
    """eval_limit: at most this many validation images in the error table (a seeded
    choice, stated on the page; None for all); gallery_limit likewise for neighbours."""
    if out is not None:  # the run's own report.html is the one file it may write there
        own = run_dir if Path(out).resolve() == RunDir(run_dir).report.resolve() else None
        check_output_file(out, own_dir=own)
    data = collect_report(run_dir, samples, k, pick_device(str(device)), eval_limit, gallery_limit)
    out_path = Path(out) if out else RunDir(run_dir).report
    atomic_write_bytes(out_path, render_report(data).encode())
    return out_path


def _read_run(run: RunDir) -> tuple[list[dict], dict, Path]:
    if not run.metrics.is_file():
        raise UsageError(f"{run.root} is not a run directory (no metrics.jsonl)")
    try:
        config = json.loads(run.config.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{run.config} is unreadable ({e})") from None
    missing = [k for k in CONFIG_KEYS if not isinstance(config, dict) or k not in config]
    if missing:
        raise UsageError(f"{run.config} is damaged: it has no {missing[0]!r}")
    history = [r for r in _metrics_rows(run.metrics) if not r.get("partial")]  # mid-epoch stops
    ckpt = run.best_or_last()
    if not history or not ckpt.is_file():
        raise UsageError(f"{run.root} has no finished epoch to report on")
    return history, config, ckpt


EPOCH_KEYS = ("epoch", "train_loss", "val_top1_error", "val_top5_error", "lr")  # what is drawn
CONFIG_KEYS = ("data", "variant", "recipe")


def _metrics_rows(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise UsageError(f"{path}, line {number}: not a JSON record") from None
        if not isinstance(row, dict):
            raise UsageError(f"{path}, line {number}: not an epoch's record")
        missing = [k for k in EPOCH_KEYS if k not in row]
        if missing and not row.get("partial"):
            raise UsageError(f"{path}, line {number}: an epoch's record without {missing[0]!r}")
        rows.append(row)
    return rows


def collect_report(
    run_dir, samples: int, k: int, device, eval_limit: int | None, gallery_limit: int
) -> ReportData:
    """Everything the page shows, gathered from a run directory (see ReportData)."""
    run = RunDir(run_dir)
    history, config, ckpt = _read_run(run)
    loaded = load_for_inference(ckpt, device, kernels="auto")
    store = Store(config["data"])
    val, train = store.split("val"), store.split("train")
    rng = np.random.default_rng(0)
    subset = val
    if eval_limit is not None and len(val) > eval_limit:
        subset = val.subset(np.sort(rng.choice(len(val), size=eval_limit, replace=False)))
    tf = loaded.transform(device)
    # one pass of ten crops gives both rows on the same images (its centre patch is the
    # one crop), in the precision the run validated in (auto: bf16 where the CPU has it;
    # the weights stay float32, as in training's validation)
    amp = resolve_plan(device, "auto", "none", train=True).amp
    ten = evaluate_split(loaded.model, subset, tf, loaded.num_classes, crops=10, autocast_dtype=amp)
    results = [{"crops": 1, **ten.pop("centre")}, ten]
    pick = np.sort(rng.choice(len(val), size=min(samples, len(val)), replace=False))
    images = val.batch(pick)
    gallery_idx = np.sort(
        rng.choice(len(train), size=min(len(train), gallery_limit), replace=False)
    )
    gal = split_features(loaded.model, train.subset(gallery_idx), loaded.transform())[0].cpu()
    _, nn_idx = nearest(features(loaded, torch.from_numpy(images[:4])), gal, k)
    rows = [[gallery_idx[j] for j in r] for r in nn_idx.tolist()]
    dataset = store_dataset(store)
    unit_view = subset
    if len(subset) > UNITS_LIMIT:
        unit_view = subset.subset(np.arange(UNITS_LIMIT))
    units = _unit_figures(loaded, unit_view)
    return ReportData(
        run=run.root,
        config=config,
        history=history,
        num_classes=store.num_classes,
        val_images=len(val),
        checkpoint=ckpt.name,
        results=results,
        dataset=dataset,
        paper=[
            row
            for r in results
            for row in matching_rows(dataset, "val", r["crops"], [loaded.model.variant])
        ],
        kernels=kernels_png(loaded.model),
        colour=colour_lines(colour_index(loaded.model)),
        crops=[center_view(im) for im in images],
        tops=predict_stored(loaded, images, top=5),
        truths=[loaded.classes[int(val.labels[i])] for i in pick],
        neighbor_rows=[[center_view(train.image(int(i))) for i in r] for r in rows],
        neighbor_labels=[[loaded.classes[int(train.labels[i])] for i in r] for r in rows],
        gallery_size=len(gallery_idx),
        units=units,
        units_images=len(unit_view),
        occlusion=_occlusion_figure(loaded, images[:OCCLUDED], tf),
        precision=precision_name(amp),
    )


UNITS_LIMIT = 300  # validation images the report ranks units over
UNITS_SHOWN = "0-3"  # of each conv layer
UNITS_TOP = 5
OCCLUDED = 4  # images of the predictions figure with an occlusion map


def _unit_figures(loaded, view) -> list[tuple[str, bytes]]:
    """Each conv layer's first units with their top patches (Zeiler and Fergus's Figure 2),
    in one pass over the validation images."""
    conv = [name for name, m in learned_layers(loaded.model) if isinstance(m, torch.nn.Conv2d)]
    stimuli = Stimuli(list(view.keys), view)
    results = scan(loaded, stimuli, {name: UNITS_SHOWN for name in conv}, UNITS_TOP)
    return [(r["layer"], draw_units(r)) for r in results]


def _occlusion_figure(loaded, images: np.ndarray, tf) -> bytes:
    """Occlusion maps (Zeiler and Fergus's Figure 7) of stored images, for each one's top
    class: a 48-pixel grey square every 32 pixels."""
    x = tf(torch.from_numpy(images), tf.views(len(images)))
    maps = []
    for image, xi in zip(images, x):
        probs = probabilities(loaded.model, xi[None])[0]
        t = int(probs.argmax())
        maps.append(
            {
                "seen": center_view(image, tf.crop),
                "map": occlusion_map(loaded.model, xi, t, size=48, stride=32),
                "target": loaded.classes[t],
                "probability": float(probs[t]),
                "method": "occlusion",
            }
        )
    return draw_explanations(maps)


def _error_rows(d: ReportData) -> str:
    which = "all" if d.results[0]["images"] == d.val_images else f"{d.results[0]['images']} of"
    ours = "".join(
        f"<tr class='ours'><td>this run's {d.checkpoint} ({which} {d.val_images} val images)</td>"
        f"<td>{r['crops']} crop{'s' if r['crops'] > 1 else ''}</td>"
        f"<td>{r['top1_error']:.1%}</td><td>{_top5(d, r['top5_error'])}</td></tr>"
        for r in d.results
    )
    paper = "".join(
        f"<tr><td>{html.escape(r.source)}: {html.escape(r.model)}, {r.dataset} {r.split}</td>"
        f"<td>{r.crops} crop{'s' if r.crops > 1 else ''}</td>"
        f"<td>{'-' if r.top1_error is None else f'{r.top1_error:.1%}'}</td>"
        f"<td>{r.top5_error:.1%}</td></tr>"
        for r in d.paper
    )
    return ours + paper


def _top5(d: ReportData, error: float) -> str:
    """Top-5 error, or a dash where it says nothing: with 5 classes or fewer it is 0."""
    return f"{error:.1%}" if d.num_classes > 5 else "-"


def _best_epoch(history: list[dict]) -> dict:
    return min(history, key=lambda h: (h["val_top1_error"], h["epoch"]))  # the first, as saved


def _paper_note(d: ReportData) -> str:
    if d.paper:
        return (
            f"The published rows are those of {d.dataset}'s validation split with the same "
            "test views (Tables 1 and 2 of the paper, and later public nets)."
        )
    if d.dataset is None:
        return (
            "No published row is shown: the paper's tables and the later public figures are "
            "on ILSVRC-2010 or ILSVRC-2012, and this run's data is neither."
        )
    return (
        f"No published row is on {d.dataset}'s validation split with these test views "
        "(Table 1 is on ILSVRC-2010's test split: alexnet evaluate --split test)."
    )


def render_report(d: ReportData) -> str:
    """The self-contained HTML page: every image inline, no script, no external file."""
    last, cfg = d.history[-1], d.config
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>alexnet report: {html.escape(d.run.name)}</title>
<style>{STYLE}</style></head><body>
<h1>AlexNet run <code>{html.escape(str(d.run))}</code></h1>
<p>variant <b>{html.escape(cfg["variant"])}</b>, recipe <b>{html.escape(cfg["recipe"])}</b>,
{len(d.history)} epoch(s), {d.num_classes} classes, data <code>{html.escape(cfg["data"])}</code>.
Measured during training on the validation split (centre crop): last
epoch ({last["epoch"]}, last.pt) top-1 error {last["val_top1_error"]:.1%}, top-5 error {
        _top5(d, last["val_top5_error"])
    }; best epoch ({_best_epoch(d.history)["epoch"]},
best.pt) top-1 error {_best_epoch(d.history)["val_top1_error"]:.1%}. The table below
evaluates {d.checkpoint} again on the same images with one and ten crops, in one pass of ten
(its centre patch is the one crop), in {d.precision}.</p>
<h2>Training curves</h2>
{_img(curves_png(d.history), "training curves")}
<h2>Error rates beside the paper's</h2>
<table><tr><th>model</th><th>test views</th><th>top-1 error</th><th>top-5 error</th></tr>
{_error_rows(d)}</table>
<p class="note">{_paper_note(d)} Ten crops: the four corners and the centre and their
reflections, softmax outputs averaged (§4.1).</p>
<h2>First-layer kernels (Figure 3)</h2>
{_img(d.kernels, "conv1 kernels")}
<p class="note">Each 11x11x3 kernel scaled to its own range. With two towers, the top block is
tower 1 (GPU 1 in the paper), the bottom block tower 2. The bar under each kernel is its
colour index: the share of its energy outside its greyscale component (0 for the same
pattern in R, G and B, 2/3 for independent channels).</p>
<p>{"<br>".join(html.escape(line) for line in d.colour)}</p>
<p class="note">The paper's claim (Figure 3): the 48 kernels of GPU 1 are largely
colour-agnostic, the 48 of GPU 2 largely colour-specific; in these numbers, a low index in
tower 1 and a high one in tower 2.</p>
<h2>Top-5 predictions on validation images (Figure 4, left)</h2>
{_img(predictions_png(d.crops, d.tops, d.truths), "predictions")}
<h2>Nearest neighbours in the last hidden layer (Figure 4, right)</h2>
{
        _img(
            neighbors_png(d.crops[: len(d.neighbor_rows)], d.neighbor_rows, d.neighbor_labels),
            "nearest neighbours",
        )
    }
<p class="note">Gallery: {d.gallery_size} training images; Euclidean distance between
their 4096-d fc7 activations and the query's.</p>
<h2>What units see (Zeiler and Fergus, Figure 2)</h2>
<p class="note">For units {UNITS_SHOWN} of each convolutional layer, the {UNITS_TOP} of
{d.units_images} validation images that excite it most, each cut to the receptive field of
the unit's strongest position (clipped at the border); the number over a patch is the
response. <code>alexnet units</code> does this for any layer and units.</p>
{"".join(f"<h3>{html.escape(layer)}</h3>" + _img(png, layer + " units") for layer, png in d.units)}
<h2>Occlusion (Zeiler and Fergus, Figure 7)</h2>
{_img(d.occlusion, "occlusion maps")}
<p class="note">A grey 48-pixel square slid over each image 32 pixels at a time: the map is
how far the probability of the net's top class falls with the square there, high where the
net's evidence is. <code>alexnet explain</code> draws these, and GradCAM and integrated
gradients, for any image.</p>
</body></html>
"""


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; } td, th { padding: 4px 12px; border-bottom: 1px solid #eee; }
tr.ours { background: #eef6ff; font-weight: bold; }
img { max-width: 100%; } .note { color: #666; font-size: 0.9em; }
"""


def report_command(cfg) -> Printed:
    """`alexnet report` (cfg: ReportConfig): the page written."""
    path = build_report(cfg.run_dir, cfg.out, device=cfg.device)
    return Printed(str(path), [str(path)])
