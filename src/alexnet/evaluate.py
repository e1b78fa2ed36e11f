"""Evaluation of a model on a store split: centre crop or the paper's ten crops (§4.1)."""

from __future__ import annotations

import torch
from tqdm import tqdm

from .data.augment import Normalizer, center_params, ten_crop_params
from .data.loader import eval_batches
from .data.store import StoreSplit
from .metrics import Tally


@torch.no_grad()
def evaluate_split(
    model: torch.nn.Module, split: StoreSplit, normalizer: Normalizer, num_classes: int,
    crops: int = 1, batch_size: int = 128, workers: int = 0, rank: int = 0,
    world: int = 1, progress: bool = False, autocast_dtype: torch.dtype | None = None,
    group=None,
) -> dict:  # fmt: skip
    """Top-1/top-5 error and per-class accuracy. With crops=10 the softmax outputs of
    the ten patches are averaged per image, as in §4.1."""
    if crops not in (1, 10):
        raise ValueError(f"crops must be 1 or 10, not {crops}")
    was_training = model.training
    model.eval()
    tally = Tally(num_classes)
    device = normalizer.device
    batches = eval_batches(split, batch_size, workers, rank, world)
    for images, labels in tqdm(batches, desc=f"eval x{crops}", unit="batch", disable=not progress,
                               leave=False):  # fmt: skip
        n = len(images)
        params = center_params(n, split.size) if crops == 1 else ten_crop_params(n, split.size)
        x = normalizer(images, params)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(x)
        probs = logits.float().softmax(dim=1)
        if crops == 10:
            probs = probs.view(n, 10, -1).mean(dim=1)
        tally.update(probs, labels)
    tally.all_reduce(group)
    model.train(was_training)
    return {"crops": crops, **tally.result()}
