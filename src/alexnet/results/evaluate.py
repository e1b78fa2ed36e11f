"""`alexnet evaluate`: a checkpoint, or an ensemble of them, on a store split, beside
the paper's rows (the evaluation itself is alexnet.evaluation.split's)."""

from __future__ import annotations

import torch

from ..evaluation.metrics import Tally
from ..evaluation.split import ViewTally, view_probabilities
from ..options import PATCHES_PER_PASS
from ..runtime.device import pick_device, precision_name
from ..runtime.printed import Printed
from .paper_rows import matching_rows, store_dataset


def _beside_the_paper(r: dict, store, split: str, variants: list[str]) -> dict:
    """r with the paper's rows it can be set beside, and the dataset they were matched on."""
    dataset = store_dataset(store)
    rows = matching_rows(dataset, split, r["crops"], variants)
    return {**r, "split": split, "dataset": dataset, "paper": [row.as_dict() for row in rows]}


def evaluate_ensemble(
    ckpts: list[str],
    data: str,
    split: str = "val",
    crops: int = 10,
    batch_size: int = PATCHES_PER_PASS,
    workers: int = 2,
    device: str = "auto",
    progress: bool = False,
    precision: str = "fp32",
) -> dict:
    """Several nets' predictions averaged (the paper's "5 CNNs", §6): each net's softmax,
    its own crops averaged first and its own preprocessing, then the mean over nets.
    One net is in memory at a time; the running sum of probabilities is N x classes.
    Each net's own errors are reported beside the ensemble's."""
    from ..data.folders import store_for
    from ..data.store import ALL_SPLITS, Store, is_store
    from ..weights.load import load_for_inference

    if not is_store(data):  # an image folder, evaluated whole from its cached store
        data, split = store_for(data), ALL_SPLITS
    store = Store(data)
    view = store.split(split)
    total = torch.zeros(len(view), store.num_classes)
    labels = torch.from_numpy(view.labels.astype("int64"))
    members, variants, subsets = [], [], []
    for ckpt in ckpts:
        loaded = load_for_inference(ckpt, pick_device(device), precision, kernels="auto")
        outputs = loaded.check_store(store)
        if outputs is not None:
            subsets.append({"checkpoint": str(ckpt), "of": loaded.num_classes})
        variants.append(loaded.model.variant)
        amp = loaded.amp
        errors = _add_probabilities(
            total, loaded, view, outputs, crops, batch_size, workers, progress
        )
        members.append({"checkpoint": str(ckpt), **errors})
        del loaded  # one net in memory at a time
    ensemble = Tally(store.num_classes)
    ensemble.update(total / len(ckpts), labels)
    r = ensemble.result()
    r["per_class"] = {c["name"]: a for c, a in zip(store.classes, r["per_class"], strict=True)}
    r = {"crops": crops, "nets": len(ckpts), "members": members, **r}
    r["precision"] = precision_name(amp)  # every net ran in it
    if subsets:
        # an ImageNet net on some of its classes: its softmax over the store's classes
        r["class_subset"] = {"classes": store.num_classes, "nets": subsets}
    return _beside_the_paper(r, store, split, variants)


def _add_probabilities(
    total: torch.Tensor, loaded, view, outputs, crops, batch_size, workers, progress
) -> dict:
    """One net's softmax over the split added into `total` (images x classes); returns
    the net's own top-1 and top-5 error (and each view's top-1 error for ten crops)."""
    tally, start = ViewTally(total.shape[1], crops), 0
    for views, y in view_probabilities(
        loaded.model,
        view,
        loaded.transform(),
        crops,
        batch_size,
        workers,
        progress=progress,
        autocast_dtype=loaded.amp,
        outputs=outputs,
    ):
        total[start : start + len(y)] += tally.update(views, y).cpu()
        start += len(y)
    r = tally.result()
    return {k: r[k] for k in ("top1_error", "top5_error", "views") if k in r}


def evaluate_checkpoint(
    ckpt: str,
    data: str,
    split: str = "val",
    crops: int = 10,
    batch_size: int = PATCHES_PER_PASS,
    workers: int = 2,
    device: str = "auto",
    progress: bool = False,
    precision: str = "fp32",
) -> dict:
    """`alexnet evaluate`: a checkpoint on a store's split, per class under the store's
    names (an ensemble of one, without the ensemble's fields). The store must hold the
    classes the checkpoint was trained on, or, for a 1,000-class ImageNet net, some of
    ILSVRC-2012's (its softmax is then over those alone: `class_subset` says so)."""
    r = evaluate_ensemble(
        [ckpt], data, split, crops, batch_size, workers, device, progress, precision
    )
    views = r["members"][0].get("views")
    r = {k: v for k, v in r.items() if k not in ("nets", "members")}
    return r if views is None else {**r, "views": views}


def evaluate_command(cfg, progress: bool = False) -> Printed:
    """`alexnet evaluate`: one net or the mean of several (cfg: EvaluateConfig)."""
    options = {k: v for k, v in vars(cfg).items() if k != "ckpts"}
    if len(cfg.ckpts) > 1:
        r = evaluate_ensemble(cfg.ckpts, **options, progress=progress)
    else:
        r = evaluate_checkpoint(cfg.ckpts[0], **options, progress=progress)
    notes = []
    subset = r.get("class_subset")
    if subset:
        of = subset["nets"][0]["of"]
        notes.append(
            f"evaluate: the store holds {subset['classes']} of ImageNet's {of:,} classes; "
            "the softmax is over those alone"
        )
    return Printed(r, evaluation_lines(r), notes)


def evaluation_lines(r: dict) -> list[str]:
    """An evaluation as text: each member, the errors, the paper's rows, per class."""
    lines = [
        f"{m['checkpoint']}: top-1 error {m['top1_error']:.4f}, top-5 error {m['top5_error']:.4f}"
        for m in r.get("members", [])
    ]
    nets = f"the mean of {r['nets']} nets, " if "nets" in r else ""
    lines.append(
        f"{r['images']} images, {r['crops']} crop(s), {r['precision']}, {nets}"
        f"top-1 error {r['top1_error']:.4f}, top-5 error {r['top5_error']:.4f}"
    )
    if "views" in r:
        lines.append("each view alone (§4.1's patches), top-1 error:")
        lines += [f"  {name:<22} {err:.4f}" for name, err in r["views"].items()]
    for row in r["paper"]:
        top1 = "-" if row["top1_error"] is None else f"{row['top1_error']:.3f}"
        lines.append(
            f"  beside {row['source']}, {row['model']} ({row['dataset']} {row['split']}): "
            f"top-1 error {top1}, top-5 error {row['top5_error']:.3f}"
        )
    lines.append(
        "per-class top-1 accuracy (the share of each class's images whose first guess is right):"
    )
    lines += [
        f"  {name:<30} {'-' if acc is None else f'{acc:.3f}'}"
        for name, acc in r["per_class"].items()
    ]
    return lines
