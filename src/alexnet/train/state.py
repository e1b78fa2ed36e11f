"""Where a training run stands, as a checkpoint carries it.

Exact resumption: every random draw is tied to (seed, epoch, step) (the epoch's order,
the crops, flips and lighting, the dropout masks), so a run resumed from this state,
with the model, optimiser and schedule states beside it, ends with the same bits on a
CPU as one that was never interrupted. That includes the running sums of the epoch's
training loss and accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


class EpochStats:
    """Training loss and top-1 of the epoch so far, as sums that a checkpoint can carry.

    The sums stay on the training device, so a step never waits for the device to
    report them; they are read (one sync) when a line is logged, a checkpoint written
    or the epoch ends. Reading never changes them: a resumed run adds the same numbers
    in the same order as one that was never interrupted."""

    def __init__(self, loss_sum: float = 0.0, correct: int = 0, count: int = 0):
        self._loss = torch.tensor(loss_sum, dtype=torch.float64)
        self._correct = torch.tensor(correct, dtype=torch.int64)
        self.count = count

    def add(self, loss: torch.Tensor, correct: torch.Tensor, count: int) -> None:
        """loss: the batch's mean loss, correct: its top-1 hits (device tensors)."""
        if self._loss.device != loss.device:
            self._loss, self._correct = self._loss.to(loss.device), self._correct.to(loss.device)
        self._loss += loss.detach().double() * count
        self._correct += correct
        self.count += count

    @property
    def loss_sum(self) -> float:
        """The epoch's summed loss so far (one device sync)."""
        return self._loss.item()

    @property
    def correct(self) -> int:
        """The epoch's top-1 hits so far (one device sync)."""
        return int(self._correct.item())

    @property
    def mean_loss(self) -> float:
        """The epoch's mean training loss so far."""
        return self.loss_sum / max(self.count, 1)

    def state_dict(self) -> dict:
        """The sums as plain numbers, for a checkpoint."""
        return {"loss_sum": self.loss_sum, "correct": self.correct, "count": self.count}


@dataclass
class TrainState:
    """Where a run stands: epoch, step, steps taken, best error, history, running sums."""

    epoch: int = 0  # the epoch under way (0-based)
    step: int = 0  # the next step within it
    global_step: int = 0  # steps taken in all
    best: float = math.inf  # lowest validation top-1 error so far
    history: list[dict] = field(default_factory=list)  # one record per finished epoch
    running: EpochStats = field(default_factory=EpochStats)

    def start_next_epoch(self) -> None:
        """Move to the next epoch's first step, with fresh sums."""
        self.epoch, self.step, self.running = self.epoch + 1, 0, EpochStats()

    def state_dict(self) -> dict:
        # the key names are the checkpoint format's (weights/checkpoint.py)
        """The checkpoint's training-state fields."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "global_step": self.global_step,
            "history": list(self.history),
            "best_val_top1_error": self.best,
            "running": self.running.state_dict(),
        }

    @classmethod
    def from_state_dict(cls, s: dict) -> TrainState:
        """A TrainState from the checkpoint's fields."""
        return cls(
            epoch=s["epoch"],
            step=s["step"],
            global_step=s["global_step"],
            best=s["best_val_top1_error"],
            history=list(s["history"]),
            running=EpochStats(**s["running"]),
        )
