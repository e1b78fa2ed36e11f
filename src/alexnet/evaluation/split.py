"""A model on a store split: softmax probabilities and top-1/top-5 error, with the
centre crop or the paper's ten crops (§4.1, docs/paper.md)."""

from __future__ import annotations

import torch
from tqdm import tqdm

from ..data.augment import TEN_CROP_VIEWS, BatchTransform
from ..data.loader import eval_batches
from ..data.store import StoreSplit
from ..options import CROPS, PATCHES_PER_PASS, check_choice
from ..runtime.device import autocast
from .metrics import Tally


@torch.no_grad()
def view_probabilities(
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
    """(softmax probabilities of each view, labels) per batch of a split, in store order:
    probabilities (images, crops, classes), the views in TEN_CROP_VIEWS's order for ten
    crops. The model is left in eval mode. `outputs`: the softmax over these of the net's
    outputs only, in this order (an ImageNet net on a store of some of its classes).

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
        yield logits.float().softmax(dim=1).view(n, crops, -1), labels


def split_probabilities(*args, **kwargs):
    """view_probabilities with its arguments, each image's views averaged (§4.1):
    (softmax probabilities (images, classes), labels) per batch."""
    for probs, labels in view_probabilities(*args, **kwargs):
        yield probs.mean(dim=1), labels


class ViewTally:
    """The tally of the averaged views and, for ten crops, one per view: how much each
    patch alone gets right, beside their mean (which patches a dataset's framing favours)."""

    def __init__(self, num_classes: int, crops: int):
        self.mean = Tally(num_classes)
        self.views = [Tally(num_classes) for _ in range(crops)] if crops > 1 else []

    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Count a batch of view_probabilities; returns its averaged probabilities."""
        for i, tally in enumerate(self.views):
            tally.update(probs[:, i], labels)
        mean = probs.mean(dim=1)
        self.mean.update(mean, labels)
        return mean

    def all_reduce(self, group=None) -> None:
        for tally in (self.mean, *self.views):
            tally.all_reduce(group)

    def result(self) -> dict:
        """The mean's Tally.result, with `views`: each view's top-1 error, by name; and
        `centre`: the centre patch's whole result, what one crop of the same images gives."""
        r = self.mean.result()
        if self.views:
            r["views"] = {
                name: t.result()["top1_error"]
                for name, t in zip(TEN_CROP_VIEWS, self.views, strict=True)
            }
            r["centre"] = self.views[TEN_CROP_VIEWS.index("centre")].result()
        return r


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
    the ten patches are averaged per image, as in §4.1, and `views` holds each patch's
    own top-1 error."""
    was_training = model.training
    tally = ViewTally(num_classes, crops)
    for probs, labels in view_probabilities(
        model, split, transform, crops, batch_size, workers, rank, world, progress, autocast_dtype
    ):
        tally.update(probs, labels)
    tally.all_reduce(group)
    model.train(was_training)
    return {"crops": crops, **tally.result()}
