"""The paper's small CIFAR-10 experiments (§3.1 Figure 1, §3.3): a four-layer
convolutional net, trained fast on 32x32 images held in memory.

The paper does not give the net's layers. It names cuda-convnet, whose CIFAR-10
example nets are the likely source; this is the shape of its `layers-18pct` net, four
learned layers: three 5x5 convolutions of 32, 32 and 64 maps, each followed by its
activation and a 3/2 pooling (max after the first, average after the others), then one
fully connected layer to the classes. The `lrn` switch adds §3.3's response
normalisation (the paper's constants, alpha divided by n as cuda-convnet computed it, or
undivided as printed) after the first two activations, as the paper's "four-layer CNN"
with and without normalisation. docs/results.md says the same.

Training: plain SGD with momentum 0.9, batch 128, no weight decay, no dropout, no
augmentation ("no regularization of any kind", §3.1); inputs are the mean-subtracted
pixels / 64; PyTorch's default initialisation for both activations.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..data.store import fixed_subset
from ..model.lrn import LocalResponseNorm
from ..model.net import LRN_BETA, LRN_K, LRN_SIZE, lrn_coefficient
from ..runtime.seeds import generator_for

SIDE = 32
BATCH = 128
MOMENTUM = 0.9


def four_layer_net(
    activation: str = "relu", lrn: bool = False, num_classes: int = 10, alpha_over_n: bool = True
) -> nn.Module:
    """The four-layer CIFAR net of §3.1 (see the module docstring), ReLU or tanh, with or
    without LRN (its alpha divided by n, or not)."""
    act = nn.ReLU if activation == "relu" else nn.Tanh
    alpha = lrn_coefficient(alpha_over_n)
    layers: list[tuple[str, nn.Module]] = []
    in_ch = 3
    for i, (out_ch, pool) in enumerate(
        ((32, nn.MaxPool2d), (32, nn.AvgPool2d), (64, nn.AvgPool2d)), start=1
    ):
        layers.append((f"conv{i}", nn.Conv2d(in_ch, out_ch, 5, padding=2)))
        layers.append((f"{activation}{i}", act()))
        if lrn and i <= 2:
            layers.append((f"norm{i}", LocalResponseNorm(LRN_SIZE, alpha, LRN_BETA, LRN_K)))
        layers.append((f"pool{i}", pool(3, 2, padding=1)))
        in_ch = out_ch
    layers += [("flatten", nn.Flatten()), ("fc4", nn.Linear(64 * 4 * 4, num_classes))]
    return nn.Sequential(OrderedDict(layers))


@dataclass
class SmallData:
    """A store's images at 32x32, as float tensors ready for the net, in memory."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    @classmethod
    def from_store(cls, store, train_images: int | None = None) -> SmallData:
        """The store's training (or --train-images of it) and validation images, in memory at 32x32."""

        def load(split, limit=None):
            part = fixed_subset(split, limit)
            x = torch.from_numpy(part.batch(range(len(part)))).permute(0, 3, 1, 2).float()
            if x.shape[-1] != SIDE:
                x = nn.functional.interpolate(x, size=(SIDE, SIDE), mode="area")
            return x, torch.from_numpy(np.asarray(part.labels))

        train_x, train_y = load(store.split("train"), train_images)
        test_x, test_y = load(store.split("val"))
        mean = train_x.mean(dim=0, keepdim=True)
        scale = lambda x: (x - mean) / 64.0  # noqa: E731
        return cls(scale(train_x), train_y, scale(test_x), test_y, store.num_classes)


@dataclass
class SmallRun:
    """What one small-net run measured."""

    epochs_to_target: float | None  # fractional epochs when training error first <= target
    curve: list[tuple[float, float]] = field(default_factory=list)  # (epoch, train error)
    test_error: float = 1.0
    train_error: float = 1.0  # the last epoch's, over all its batches


def train_small(
    data: SmallData,
    activation: str,
    lrn: bool,
    lr: float,
    epochs: float,
    seed: int,
    target_error: float,
    samples_per_epoch: int = 20,
    stop_at_target: bool = False,
    alpha_over_n: bool = True,
) -> SmallRun:
    """Train; sample the training error (over the batches since the last sample) at
    least `samples_per_epoch` times an epoch."""
    torch.manual_seed(seed)
    net = four_layer_net(activation, lrn, data.num_classes, alpha_over_n)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=MOMENTUM)
    n = len(data.train_y)
    batch = min(BATCH, n)
    steps = n // batch
    every = max(1, steps // samples_per_epoch)
    run, wrong, seen = SmallRun(None), 0, 0
    for epoch in range(math.ceil(epochs)):
        order = torch.randperm(n, generator=generator_for(seed, epoch))
        epoch_wrong = 0
        for step in range(steps if epoch + 1 <= epochs else int(steps * (epochs - epoch))):
            idx = order[step * batch : (step + 1) * batch]
            logits = net(data.train_x[idx])
            loss = nn.functional.cross_entropy(logits, data.train_y[idx])
            if not torch.isfinite(loss):
                return run  # diverged: this learning rate never reaches the target
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            miss = int((logits.argmax(1) != data.train_y[idx]).sum())
            wrong, seen, epoch_wrong = wrong + miss, seen + batch, epoch_wrong + miss
            if (step + 1) % every == 0:
                at, err = epoch + (step + 1) / steps, wrong / seen
                run.curve.append((round(at, 4), err))
                wrong = seen = 0
                if run.epochs_to_target is None and err <= target_error:
                    run.epochs_to_target = round(at, 4)
                    if stop_at_target:
                        return run
        run.train_error = epoch_wrong / max(1, steps * batch)
    run.test_error = test_error(net, data)
    return run


def first_crossing(curve: list, target: float) -> float | None:
    """The first sampled epoch whose training error is at or below `target`, or None."""
    return next((at for at, err in curve if err <= target), None)


@torch.no_grad()
def test_error(net: nn.Module, data: SmallData) -> float:
    """Top-1 error on the held-out images."""
    net.eval()
    wrong = sum(
        int((net(x).argmax(1) != y).sum())
        for x, y in zip(data.test_x.split(512), data.test_y.split(512), strict=True)
    )
    return wrong / len(data.test_y)
