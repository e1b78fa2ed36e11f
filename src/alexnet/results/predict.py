"""Top-k predictions for image files (Figure 4, left) or stored images."""

from __future__ import annotations

import numpy as np
import torch

from ..data.images import BadImage, center_view, load_for_store
from .inference import Loaded


def _top(probs: torch.Tensor, classes: list[str], k: int) -> list[list[dict]]:
    k = min(k, probs.shape[1])
    p, idx = probs.topk(k, dim=1)
    return [
        [{"index": int(i), "name": classes[int(i)], "prob": float(q)} for q, i in zip(pr, ix)]
        for pr, ix in zip(p.tolist(), idx.tolist(), strict=True)
    ]


@torch.no_grad()
def predict_files(
    loaded: Loaded, paths: list[str], top: int = 5, batch_size: int = 32
) -> list[dict]:
    """One entry per path: {image, top} or {image, error}; a bad file never stops the
    rest. Images go through the net `batch_size` at a time: memory stays bounded."""
    results = [{"image": str(p)} for p in paths]
    for start in range(0, len(paths), batch_size):
        slots, inputs = [], []
        for slot in range(start, min(start + batch_size, len(paths))):
            try:
                inputs.append(loaded.preprocess_files([paths[slot]]))
                slots.append(slot)
            except BadImage as e:
                results[slot]["error"] = str(e)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                results[slot]["error"] = "no such file"
        if slots:
            probs = loaded.model(torch.cat(inputs).to(loaded.device)).float().softmax(1).cpu()
            for slot, t in zip(slots, _top(probs, loaded.classes, top), strict=True):
                results[slot]["top"] = t
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
    """Figure 4 (left) for predict_files' successful results, written atomically."""
    from ..runtime.files import atomic_write_bytes
    from .figures import predictions_png

    png = predictions_png([display_image(r["image"]) for r in results], [r["top"] for r in results])
    atomic_write_bytes(path, png)
