"""A model on a store split: softmax probabilities and top-1/top-5 error, with the
centre crop or the paper's ten crops (§4.1, docs/paper.md)."""

from __future__ import annotations

import torch
from tqdm import tqdm

from ..data.augment import BatchTransform
from ..data.loader import eval_batches
from ..data.store import StoreSplit
from ..options import CROPS, PATCHES_PER_PASS, check_choice
from ..runtime.device import autocast
from .metrics import Tally


@torch.no_grad()
def split_probabilities(
    model: torch.nn.Module,
    split: StoreSplit,
    transform: BatchTransform,
    crops: int = 1,
    batch_size: int = PATCHES_PER_PASS,
    workers: int = 0,
    rank: int = 0,
    world: int = 1,
    progress: bool = False,
    autocast_dtype: torch.dtype | None = None,
    outputs: list[int] | None = None,
):
    """(softmax probabilities, labels) per batch of a split, in store order; with crops=10
    each image's ten patches are averaged (§4.1). The model is left in eval mode.
    `outputs`: the softmax over these of the net's outputs only, in this order (an
    ImageNet net on a store of some of its classes).

    batch_size counts patches per forward pass, so ten crops read a tenth as many images
    a batch: the memory of a pass does not grow tenfold (128 images of ten crops held
    11 GB of conv1 and LRN maps at once on a CPU)."""
    check_choice("crops", crops, CROPS)
    model.eval()
    device = transform.device
    batches = eval_batches(split, max(1, batch_size // crops), workers, rank, world)
    for images, labels in tqdm(
        batches, desc=f"eval x{crops}", unit="batch", disable=not progress, leave=False
    ):
        n = len(images)
        x = transform(images, transform.views(n, crops, split.size))
        with autocast(device, autocast_dtype):
            logits = model(x)
        if outputs is not None:
            logits = logits[:, outputs]
        probs = logits.float().softmax(dim=1)
        if crops == 10:
            probs = probs.view(n, 10, -1).mean(dim=1)
        yield probs, labels


@torch.no_grad()
def evaluate_split(
    model: torch.nn.Module,
    split: StoreSplit,
    transform: BatchTransform,
    num_classes: int,
    crops: int = 1,
    batch_size: int = PATCHES_PER_PASS,
    workers: int = 0,
    rank: int = 0,
    world: int = 1,
    progress: bool = False,
    autocast_dtype: torch.dtype | None = None,
    group=None,
) -> dict:
    """Top-1/top-5 error and per-class accuracy. With crops=10 the softmax outputs of
    the ten patches are averaged per image, as in §4.1."""
    was_training = model.training
    tally = Tally(num_classes)
    for probs, labels in split_probabilities(
        model, split, transform, crops, batch_size, workers, rank, world, progress, autocast_dtype
    ):
        tally.update(probs, labels)
    tally.all_reduce(group)
    model.train(was_training)
    return {"crops": crops, **tally.result()}
