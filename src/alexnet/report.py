"""`alexnet report`: one self-contained HTML page for a run, every image inline."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import torch

from .data.images import center_view
from .data.store import Store
from .errors import UsageError
from .evaluate import evaluate_split
from .figures import curves_png, kernels_png, neighbors_png, predictions_png
from .files import atomic_write_bytes
from .inference import load_for_inference
from .predict import predict_stored
from .retrieval import features, nearest, split_features

# §6 and the reference points of PAPER.md, for the table beside ours.
PAPER_ROWS = [
    ("AlexNet, 1 CNN, ILSVRC-2012 val (paper §6)", 0.407, 0.182, "10 crops"),
    ("AlexNet, ILSVRC-2010 test (paper §6)", 0.375, 0.170, "10 crops"),
    ("cuda-convnet2 one-GPU net, 90 epochs", 0.425, 0.198, "1 crop"),
    ("cuda-convnet2 one-GPU net, 90 epochs", 0.404, 0.182, "10 crops"),
    ("Caffe bvlc_alexnet", 0.429, 0.198, "1 crop"),
    ("torchvision alexnet", 0.43478, 0.20934, "1 crop"),
]


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def build_report(run_dir: str | Path, out: str | Path | None = None, samples: int = 8,
                 k: int = 5, device="cpu", eval_limit: int | None = 1000,
                 gallery_limit: int = 1000) -> Path:  # fmt: skip
    """eval_limit: at most this many validation images in the error table (a seeded
    choice, stated on the page; None for all); gallery_limit likewise for neighbours."""
    run = Path(run_dir)
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise UsageError(f"{run} is not a run directory (no metrics.jsonl)")
    history = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    ckpt = run / "checkpoints" / "best.pt"
    if not ckpt.is_file():
        ckpt = run / "checkpoints" / "last.pt"
    if not history or not ckpt.is_file():
        raise UsageError(f"{run} has no finished epoch to report on")
    config = json.loads((run / "config.json").read_text())
    loaded = load_for_inference(ckpt, device)
    store = Store(config["data"])
    val = store.split("val")
    norm = loaded.normalizer(device)

    rng = np.random.default_rng(0)
    subset = val
    if eval_limit is not None and len(val) > eval_limit:
        subset = val.subset(np.sort(rng.choice(len(val), size=eval_limit, replace=False)))
    results = [evaluate_split(loaded.model, subset, norm, loaded.num_classes, crops=c)
               for c in (1, 10)]  # fmt: skip
    pick = np.sort(rng.choice(len(val), size=min(samples, len(val)), replace=False))
    images = val.batch(pick)
    tops = predict_stored(loaded, images, top=5)
    truths = [loaded.classes[int(val.labels[i])] for i in pick]
    crops = [center_view(im) for im in images]

    train = store.split("train")
    gallery_idx = np.sort(
        rng.choice(len(train), size=min(len(train), gallery_limit), replace=False)
    )
    gal = torch.from_numpy(split_features(loaded, train.subset(gallery_idx)))
    q = features(loaded, torch.from_numpy(images[: min(4, len(images))]))
    _, nn_idx = nearest(q, gal, k)
    rows = [[center_view(train.image(int(gallery_idx[j]))) for j in r] for r in nn_idx.tolist()]
    row_labels = [[loaded.classes[int(train.labels[gallery_idx[j]])] for j in r]
                  for r in nn_idx.tolist()]  # fmt: skip

    last = history[-1]
    table = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{c}</td><td>{t1:.1%}</td><td>{t5:.1%}</td></tr>"
        for n, t1, t5, c in PAPER_ROWS
    )
    ours = "".join(
        f"<tr class='ours'><td>this run ({html.escape(run.name)}, {r['images']} of "
        f"{len(val)} val images)</td>"
        f"<td>{r['crops']} crop{'s' if r['crops'] > 1 else ''}</td>"
        f"<td>{r['top1_error']:.1%}</td><td>{r['top5_error']:.1%}</td></tr>"
        for r in results
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>alexnet report: {html.escape(run.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
h1 {{ font-size: 1.6em; }} h2 {{ margin-top: 1.6em; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 4px 12px; border-bottom: 1px solid #eee; }}
tr.ours {{ background: #eef6ff; font-weight: bold; }}
img {{ max-width: 100%; }} .note {{ color: #666; font-size: 0.9em; }}
</style></head><body>
<h1>AlexNet run <code>{html.escape(str(run))}</code></h1>
<p>variant <b>{html.escape(config["variant"])}</b>, recipe <b>{html.escape(config["recipe"])}</b>,
{len(history)} epoch(s), {store.num_classes} classes, data <code>{html.escape(config["data"])}</code>.
Last epoch: validation top-1 error {last["val_top1_error"]:.1%}, top-5 error {last["val_top5_error"]:.1%}.</p>
<h2>Training curves</h2>
{_img(curves_png(history), "training curves")}
<h2>Error rates beside the paper's</h2>
<table><tr><th>model</th><th>test views</th><th>top-1 error</th><th>top-5 error</th></tr>
{ours}{table}</table>
<p class="note">The paper's figures are on ImageNet's 1000 classes; ours are on this run's
validation split. Ten crops: the four corners and the centre and their reflections, softmax
outputs averaged (§4.1).</p>
<h2>First-layer kernels (Figure 3)</h2>
{_img(kernels_png(loaded.model), "conv1 kernels")}
<p class="note">Each 11x11x3 kernel scaled to its own range. With two towers, the top block is
tower 1 (GPU 1 in the paper), the bottom block tower 2.</p>
<h2>Top-5 predictions on validation images (Figure 4, left)</h2>
{_img(predictions_png(crops, tops, truths), "predictions")}
<h2>Nearest neighbours in the last hidden layer (Figure 4, right)</h2>
{_img(neighbors_png(crops[: len(rows)], rows, row_labels), "nearest neighbours")}
<p class="note">Gallery: {len(gallery_idx)} training images; Euclidean distance between
their 4096-d fc7 activations and the query's.</p>
</body></html>
"""
    out_path = Path(out) if out else run / "report.html"
    atomic_write_bytes(out_path, page.encode())
    return out_path
