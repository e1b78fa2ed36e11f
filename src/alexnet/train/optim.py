"""The paper's update rule (§5, docs/paper.md) and the learning-rate schedules.

    v <- 0.9 v - 0.0005 * eps * w - eps * dL/dw
    w <- w + v

torch.optim.SGD keeps eps outside the velocity (v <- m v + g; w <- w - eps v), which
differs from this rule whenever eps changes: here a cut in the learning rate slows
the next steps at once, while the velocity built up so far decays at its own pace.
"""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer

from .recipes import BASE_LR, LR_FACTOR, MAX_REDUCTIONS, MOMENTUM, WEIGHT_DECAY


class PaperSGD(Optimizer):
    """§5's update rule as a torch Optimizer (see the module docstring)."""

    def __init__(
        self,
        params,
        lr: float = BASE_LR,
        momentum: float = MOMENTUM,
        weight_decay: float = WEIGHT_DECAY,
    ):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError("lr, momentum and weight_decay must be non-negative")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter with a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            grads = [p.grad for p in params]
            vs = []
            for p in params:
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                vs.append(state["velocity"])
            if params[0].device.type == "cpu":
                for w, v, g in zip(params, vs, grads):
                    self._update_in_chunks(w, v, g, lr, m, wd)
            else:
                _update(params, vs, grads, lr, m, wd)
        return loss

    @staticmethod
    def _update_in_chunks(w, v, g, lr: float, m: float, wd: float) -> None:
        for wc, vc, gc in _cache_sized_chunks(w, v, g):
            _update([wc], [vc], [gc], lr, m, wd)


def _update(ws, vs, gs, lr: float, m: float, wd: float) -> None:
    """The rule on lists of tensors, one pass per term."""
    torch._foreach_mul_(vs, m)
    if wd:
        torch._foreach_add_(vs, ws, alpha=-wd * lr)
    torch._foreach_add_(vs, gs, alpha=-lr)
    torch._foreach_add_(ws, vs)


# Elements per chunk of a CPU update: the rule's four passes then run over a
# parameter's chunk while it sits in the cache (three float32 tensors, 12 MB), so its
# 61 M parameters cross memory once instead of four times. Each element sees the same
# operations in the same order, so the result is the same bit for bit.
CHUNK = 1 << 20


def _cache_sized_chunks(*tensors: torch.Tensor):
    """Matching flat chunks of tensors laid out alike (any memory format), in memory
    order; the whole tensors when their layouts differ or are not dense."""
    flat = [_flat(t) for t in tensors]
    if any(f is None for f in flat) or len({t.stride() for t in tensors}) > 1:
        yield tensors
        return
    for i in range(0, flat[0].numel(), CHUNK):
        yield tuple(f[i : i + CHUNK] for f in flat)


def _flat(t: torch.Tensor) -> torch.Tensor | None:
    """A 1-D view of t in memory order (a channels_last weight included), or None when
    its elements do not fill its memory densely."""
    order = sorted(range(t.dim()), key=lambda d: -t.stride(d))
    p = t.permute(order)
    return p.view(-1) if p.is_contiguous() else None


class Schedule:
    """Learning rate per step; `end_epoch` feeds back the validation error. A fixed rate,
    after a linear warm-up over its first `warmup_epochs` when asked: a schedule that does
    not end at a budget, to compare how long runs take to converge."""

    name = "constant"

    def __init__(
        self, base_lr: float, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0
    ):
        self.base_lr, self.epochs, self.steps_per_epoch = base_lr, epochs, steps_per_epoch
        self.warmup = round(warmup_epochs * steps_per_epoch)

    def warm(self, epoch: int, step: int) -> float:
        """The warm-up's factor: (t + 1) / warm-up steps over its steps, then 1."""
        t = epoch * self.steps_per_epoch + step
        return min(1.0, (t + 1) / self.warmup) if self.warmup else 1.0

    def lr_at(self, epoch: int, step: int) -> float:
        """The learning rate at (epoch, step)."""
        return self.base_lr * self.warm(epoch, step)

    def end_epoch(self, epoch: int, val_error: float) -> None:
        """Feed back the epoch's validation error (the plateau schedule uses it)."""
        pass

    def state_dict(self) -> dict:
        """What a checkpoint carries of the schedule."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict returned."""
        pass


class PlateauSchedule(Schedule):
    """§5: divide by 10 when the validation error stops improving, at most three times."""

    name = "plateau"

    def __init__(
        self,
        base_lr,
        epochs,
        steps_per_epoch,
        patience: int = 5,
        factor: float = LR_FACTOR,
        max_reductions: int = MAX_REDUCTIONS,
        warmup_epochs: float = 0.0,
    ):
        super().__init__(base_lr, epochs, steps_per_epoch, warmup_epochs)
        self.patience, self.factor, self.max_reductions = patience, factor, max_reductions
        self.reductions, self.best, self.bad_epochs = 0, math.inf, 0

    def lr_at(self, epoch, step):
        return self.base_lr * self.factor**self.reductions * self.warm(epoch, step)

    def end_epoch(self, epoch, val_error):
        if val_error < self.best:
            self.best, self.bad_epochs = val_error, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience and self.reductions < self.max_reductions:
            self.reductions += 1
            self.bad_epochs = 0

    def state_dict(self):
        return {"reductions": self.reductions, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state):
        self.reductions, self.best = state["reductions"], state["best"]
        self.bad_epochs = state["bad_epochs"]


class StepSchedule(Schedule):
    """x0.1 every 30 epochs (torchvision's reference recipe), or after each of the
    `milestones` epochs: the drops a plateau run made, fixed in advance, so that the
    arms of a study share one schedule (the same rates as the plateau run, bit for bit)."""

    name = "step"

    def __init__(
        self,
        base_lr,
        epochs,
        steps_per_epoch,
        every: int = 30,
        factor: float = 0.1,
        warmup_epochs: float = 0.0,
        milestones: tuple[int, ...] | None = None,
    ):
        super().__init__(base_lr, epochs, steps_per_epoch, warmup_epochs)
        self.every, self.factor, self.milestones = every, factor, milestones

    def drops(self, epoch: int) -> int:
        """How many times the rate has been divided by the start of `epoch` (0-based)."""
        if self.milestones is None:
            return epoch // self.every
        return sum(epoch >= m for m in self.milestones)

    def lr_at(self, epoch, step):
        return self.base_lr * self.factor ** self.drops(epoch) * self.warm(epoch, step)


class WarmupCosineSchedule(Schedule):
    """Linear warm-up, then cosine decay to zero: lets small data train in few epochs."""

    name = "warmup-cosine"

    def __init__(self, base_lr, epochs, steps_per_epoch, warmup_epochs: float = 1.0):
        super().__init__(base_lr, epochs, steps_per_epoch, warmup_epochs)
        self.warmup = max(1, self.warmup)  # the cosine starts after at least one step
        self.total = max(self.warmup + 1, epochs * steps_per_epoch)

    def lr_at(self, epoch, step):
        t = epoch * self.steps_per_epoch + step
        if t < self.warmup:
            return self.base_lr * (t + 1) / self.warmup
        progress = (t - self.warmup) / (self.total - self.warmup)
        return self.base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# options.SCHEDULES names these (a test holds the two equal)
SCHEDULE_CLASSES = {
    s.name: s for s in (PlateauSchedule, StepSchedule, WarmupCosineSchedule, Schedule)
}


def build_optimizer(
    kind: str,
    params,
    lr: float,
    momentum: float,
    weight_decay: float,
    device: torch.device,
) -> Optimizer:
    """kind: options.Optimizer."""
    if kind == "adamw":
        # fused: one pass over the 61 M parameters instead of a dozen
        fused = device.type in ("cpu", "cuda") or None
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if kind == "sgd":
        # fused on the CPU too: one pass instead of a loop over tensors
        fused = device.type in ("cpu", "cuda") or None
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused
        )
    return PaperSGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def build_schedule(
    name: str,
    lr: float,
    epochs: int,
    steps_per_epoch: int,
    patience: int,
    warmup_epochs: float,
    milestones: tuple[int, ...] | None = None,
) -> Schedule:
    """A schedule by name (options.Schedule) with its parameters; every one starts with
    `warmup_epochs` of linear warm-up."""
    cls = SCHEDULE_CLASSES[name]
    if name == "plateau":
        return cls(lr, epochs, steps_per_epoch, patience=patience, warmup_epochs=warmup_epochs)
    if name == "step":
        return cls(lr, epochs, steps_per_epoch, warmup_epochs=warmup_epochs, milestones=milestones)
    return cls(lr, epochs, steps_per_epoch, warmup_epochs=warmup_epochs)
