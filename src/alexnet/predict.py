"""Top-k predictions for image files (Figure 4, left) or stored images."""

from __future__ import annotations

import numpy as np
import torch

from .data.augment import center_params
from .data.images import BadImage, center_view, load_for_store
from .inference import Loaded


def _top(probs: torch.Tensor, classes: list[str], k: int) -> list[list[dict]]:
    k = min(k, probs.shape[1])
    p, idx = probs.topk(k, dim=1)
    return [
        [{"index": int(i), "name": classes[int(i)], "prob": float(q)} for q, i in zip(pr, ix)]
        for pr, ix in zip(p.tolist(), idx.tolist(), strict=True)
    ]


@torch.no_grad()
def predict_files(loaded: Loaded, paths: list[str], top: int = 5) -> list[dict]:
    """One entry per path: {image, top} or {image, error}; a bad file never stops the rest."""
    results, good = [], []
    for p in paths:
        try:
            x = loaded.preprocess_files([p])
        except BadImage as e:
            results.append({"image": str(p), "error": str(e)})
            continue
        except (FileNotFoundError, IsADirectoryError):
            results.append({"image": str(p), "error": "no such file"})
            continue
        results.append({"image": str(p)})
        good.append((len(results) - 1, x))
    if good:
        device = next(loaded.model.parameters()).device
        x = torch.cat([g[1] for g in good]).to(device)
        probs = loaded.model(x).float().softmax(1).cpu()
        for (slot, _), t in zip(good, _top(probs, loaded.classes, top), strict=True):
            results[slot]["top"] = t
    return results


def display_image(path: str) -> np.ndarray:
    """What the net looked at: the 224 centre of the 256 store image."""
    return center_view(load_for_store(path))


@torch.no_grad()
def predict_stored(loaded: Loaded, images: np.ndarray, top: int = 5) -> list[list[dict]]:
    """Predictions for (N, 256, 256, 3) uint8 store images, centre crop."""
    device = next(loaded.model.parameters()).device
    x = loaded.normalizer(device)(torch.from_numpy(images), center_params(len(images)))
    return _top(loaded.model(x).float().softmax(1).cpu(), loaded.classes, top)
