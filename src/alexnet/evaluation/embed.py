"""The 4096-d last hidden layer (fc7) of a store split: the gallery of §6.1's
neighbours and the cached input of a linear probe."""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from ..data.loader import eval_batches
from ..data.store import StoreSplit
from ..runtime.device import autocast


@torch.no_grad()
def split_features(
    model: nn.Module,
    split: StoreSplit,
    transform,
    batch_size: int = 64,
    progress: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 4096) float32 fc7 features of a split's (or a subset's) centre crops, in its
    order, and its labels, both on the model's device: the gallery for neighbours and the
    cached input of a linear probe. The model is evaluated in eval mode and left as it was."""
    was_training = model.training
    model.eval()
    feats, labels = [], []
    batches = eval_batches(split, batch_size)
    for images, y in tqdm(batches, desc="features", disable=not progress):
        x = transform(images, transform.views(len(images), 1, split.size))
        with autocast(x.device, autocast_dtype):
            feats.append(model.last_hidden(x).float())
        labels.append(y.to(x.device))
    model.train(was_training)
    return torch.cat(feats), torch.cat(labels)
