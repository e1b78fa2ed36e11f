"""Evaluation of a model on a store split: centre crop or the paper's ten crops (§4.1)."""

from __future__ import annotations

import torch
from tqdm import tqdm

from ..data.augment import BatchTransform
from ..data.loader import eval_batches
from ..data.store import StoreSplit
from ..options import CROPS, check_choice
from ..runtime.device import autocast
from .metrics import Tally


@torch.no_grad()
def evaluate_split(
    model: torch.nn.Module,
    split: StoreSplit,
    transform: BatchTransform,
    num_classes: int,
    crops: int = 1,
    batch_size: int = 128,
    workers: int = 0,
    rank: int = 0,
    world: int = 1,
    progress: bool = False,
    autocast_dtype: torch.dtype | None = None,
    group=None,
) -> dict:
    """Top-1/top-5 error and per-class accuracy. With crops=10 the softmax outputs of
    the ten patches are averaged per image, as in §4.1."""
    check_choice("crops", crops, CROPS)
    was_training = model.training
    model.eval()
    tally = Tally(num_classes)
    device = transform.device
    batches = eval_batches(split, batch_size, workers, rank, world)
    for images, labels in tqdm(
        batches, desc=f"eval x{crops}", unit="batch", disable=not progress, leave=False
    ):
        n = len(images)
        x = transform(images, transform.views(n, crops, split.size))
        with autocast(device, autocast_dtype):
            logits = model(x)
        probs = logits.float().softmax(dim=1)
        if crops == 10:
            probs = probs.view(n, 10, -1).mean(dim=1)
        tally.update(probs, labels)
    tally.all_reduce(group)
    model.train(was_training)
    return {"crops": crops, **tally.result()}


def evaluate_checkpoint(
    ckpt: str,
    data: str,
    split: str = "val",
    crops: int = 10,
    batch_size: int = 64,
    workers: int = 2,
    device: str = "auto",
    progress: bool = False,
) -> dict:
    """`alexnet evaluate`: a checkpoint on a store's split, per class under the store's
    names. The store must hold the classes the checkpoint was trained on."""
    from ..data.store import Store
    from ..runtime.device import pick_device
    from ..runtime.errors import UsageError
    from .inference import load_for_inference

    loaded = load_for_inference(ckpt, pick_device(device))
    store = Store(data)
    ids = [str(c["id"]) for c in store.classes]
    if store.num_classes != loaded.num_classes or (loaded.class_ids and loaded.class_ids != ids):
        raise UsageError(
            f"{data} holds other classes than {ckpt} was trained on "
            f"({store.num_classes} vs {loaded.num_classes} classes)"
        )
    r = evaluate_split(
        loaded.model,
        store.split(split),
        loaded.transform(),
        loaded.num_classes,
        crops=crops,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
    )
    r["per_class"] = {c["name"]: a for c, a in zip(store.classes, r["per_class"], strict=True)}
    return r
