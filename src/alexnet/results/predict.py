"""Top-k predictions for image files (Figure 4, left) or stored images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.folders import store_for
from ..data.images import BadImage, center_view, load_for_store
from ..data.store import Store, class_ids
from ..runtime.device import autocast
from ..runtime.errors import UsageError
from ..runtime.printed import Printed
from ..weights.load import Loaded, load_for_inference


def _top(probs: torch.Tensor, classes: list[str], k: int) -> list[list[dict]]:
    k = min(k, probs.shape[1])
    p, idx = probs.topk(k, dim=1)
    return [
        [{"index": int(i), "name": classes[int(i)], "prob": float(q)} for q, i in zip(pr, ix)]
        for pr, ix in zip(p.tolist(), idx.tolist(), strict=True)
    ]


@torch.no_grad()
def file_probabilities(
    loaded: Loaded, paths: list[str], batch_size: int = 32, outputs: list[int] | None = None
) -> tuple[torch.Tensor, dict[int, str]]:
    """(len(paths) x classes softmax probabilities, {position: error} of the files that
    could not be read, whose rows stay 0). A bad file never stops the rest; images go
    through the net `batch_size` at a time, so memory stays bounded. `outputs`: the
    softmax over these of the net's outputs only (an ImageNet net on some classes)."""
    probs = torch.zeros(len(paths), len(outputs) if outputs else loaded.num_classes)
    errors: dict[int, str] = {}
    for start in range(0, len(paths), batch_size):
        slots, inputs = [], []
        for slot in range(start, min(start + batch_size, len(paths))):
            try:
                inputs.append(loaded.preprocess_files([paths[slot]]))
                slots.append(slot)
            except BadImage as e:
                errors[slot] = str(e)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                errors[slot] = "no such file"
        if slots:
            with autocast(loaded.device, loaded.amp):
                logits = loaded.model(torch.cat(inputs).to(loaded.device))
            if outputs is not None:
                logits = logits[:, outputs]
            probs[slots] = logits.float().softmax(1).cpu()
    return probs, errors


def _results(paths, probs: torch.Tensor, errors: dict, classes: list[str], top: int) -> list[dict]:
    tops = _top(probs, classes, top)
    return [
        {"image": str(p), "error": errors[i]} if i in errors else {"image": str(p), "top": tops[i]}
        for i, p in enumerate(paths)
    ]


def predict_ensemble(
    ckpts: list[str],
    paths: list[str],
    top: int = 5,
    batch_size: int = 32,
    device="cpu",
    precision: str = "fp32",
    data: str | None = None,
) -> list[dict]:
    """The nets' softmax averaged (§6's "CNNs"), each net with its own preprocessing, one
    net in memory at a time. Each entry: {image, top: the ensemble's, members: [{checkpoint,
    top}]} or {image, error}; one net is simply itself. The nets must predict the same
    classes (by id where known). `data` (a store or an image folder): predict among its
    classes, which for an ImageNet net may be some of ImageNet's (its softmax over those)."""
    total, members, first, subset = None, [], None, None
    store = None if data is None else Store(store_for(data))
    for ckpt in ckpts:
        loaded = load_for_inference(ckpt, device, precision, kernels="auto")
        outputs = None if store is None else loaded.check_store(store)
        names = loaded.classes if store is None else [c["name"] for c in store.classes]
        classes = (loaded.class_ids or loaded.classes, names)
        if store is not None:
            classes = (class_ids(store.classes), names)
        if first is None:
            first = (str(ckpt), *classes)
        elif classes[0] != first[1]:
            raise UsageError(f"{ckpt} predicts other classes than {first[0]}")
        if outputs is not None:
            subset = {"classes": len(outputs), "of": loaded.num_classes}
        probs, errors = file_probabilities(loaded, paths, batch_size, outputs)
        total = probs if total is None else total + probs
        members.append((str(ckpt), _top(probs, names, top)))
        del loaded  # one net in memory at a time
    results = _results(paths, total / len(ckpts), errors, first[2], top)
    for slot, r in enumerate(results):
        if "top" in r:
            r["members"] = [{"checkpoint": c, "top": tops[slot]} for c, tops in members]
            if subset:
                r["class_subset"] = subset
    return results


def display_image(path: str) -> np.ndarray:
    """What the net looked at: the 224 centre of the 256 store image."""
    return center_view(load_for_store(path))


@torch.no_grad()
def predict_stored(loaded: Loaded, images: np.ndarray, top: int = 5) -> list[list[dict]]:
    """Predictions for (N, 256, 256, 3) uint8 store images, centre crop."""
    device = loaded.device
    transform = loaded.transform(device)
    x = transform(torch.from_numpy(images), transform.views(len(images)))
    return _top(loaded.model(x).float().softmax(1).cpu(), loaded.classes, top)


def write_predictions_figure(path: str, results: list[dict]) -> None:
    """Figure 4 (left) for predict_ensemble's successful results, written atomically."""
    from ..runtime.files import atomic_write_bytes
    from .figures import predictions_png

    png = predictions_png(
        [display_image(r["image"]) for r in results],
        [r["top"] for r in results],
        titles=[Path(r["image"]).name for r in results],
    )
    atomic_write_bytes(path, png)


def predict_command(cfg) -> Printed:
    """`alexnet predict` (cfg: PredictConfig): leading image arguments that name weights
    join the ensemble. A bad image is a note of its own; the others are predicted, and
    the exit status says that one failed."""
    from ..runtime.files import check_output_file
    from ..weights.load import names_weights

    ckpts, images = [cfg.ckpt], list(cfg.images)
    while len(images) > 1 and names_weights(images[0]):
        ckpts.append(images.pop(0))
    if cfg.figure:
        check_output_file(cfg.figure, reads=[*ckpts, *images])
    options = {k: getattr(cfg, k) for k in ("top", "batch_size", "device", "precision", "data")}
    results = predict_ensemble(ckpts, images, **options)
    if len(ckpts) == 1:
        for r in results:
            r.pop("members", None)
    failed = [r for r in results if "error" in r]
    notes = []
    subset = next((r["class_subset"] for r in results if "class_subset" in r), None)
    if subset:
        notes.append(
            f"predict: {cfg.data} holds {subset['classes']} of ImageNet's {subset['of']:,} "
            "classes; the softmax is over those alone"
        )
    notes += [f"alexnet: error: {r['image']}: {r['error']}" for r in failed]
    mean = f" (the mean of {len(ckpts)} nets)" if len(ckpts) > 1 else ""
    lines = []
    for r in results:
        if "top" in r:
            lines.append(r["image"] + mean)
            lines += [f"  {t['prob']:6.1%}  {t['name']}" for t in r["top"]]
    ok = [r for r in results if "top" in r]
    if cfg.figure and ok:
        write_predictions_figure(cfg.figure, ok)
        lines.append(f"figure: {cfg.figure}")
    return Printed(results, lines, notes, code=2 if failed else 0)
