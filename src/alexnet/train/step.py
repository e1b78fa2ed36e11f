"""One training step, as `train` takes it and `bench` times it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..runtime.device import autocast


def training_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    amp: torch.dtype | None,
    label_smoothing: float = 0.0,
    check_loss: Callable[[torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward under autocast to `amp`, the cross-entropy in float32, backward, the
    optimiser's update; returns (loss, logits). `check_loss` sees the loss before the
    backward (the loop refuses a non-finite one there). The gradients are freed after
    the update, not before the next backward: the same values, and nothing held between
    steps."""
    with autocast(x.device, amp):
        logits = net(x)
        loss = nn.functional.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    if check_loss is not None:
        check_loss(loss)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss, logits
