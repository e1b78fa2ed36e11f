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


@dataclass
class EpochStats:
    """Training loss and top-1 of the epoch so far, as sums that a checkpoint can carry."""

    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0

    def add(self, loss_sum: float, correct: int, count: int) -> None:
        self.loss_sum += loss_sum
        self.correct += correct
        self.count += count

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.count, 1)

    def state_dict(self) -> dict:
        return {"loss_sum": self.loss_sum, "correct": self.correct, "count": self.count}


@dataclass
class TrainState:
    epoch: int = 0  # the epoch under way (0-based)
    step: int = 0  # the next step within it
    global_step: int = 0  # steps taken in all
    best: float = math.inf  # lowest validation top-1 error so far
    history: list[dict] = field(default_factory=list)  # one record per finished epoch
    running: EpochStats = field(default_factory=EpochStats)

    def start_next_epoch(self) -> None:
        self.epoch, self.step, self.running = self.epoch + 1, 0, EpochStats()

    def state_dict(self) -> dict:
        # the key names are the checkpoint format's (train/checkpoint.py)
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
        return cls(
            epoch=s["epoch"],
            step=s["step"],
            global_step=s["global_step"],
            best=s["best_val_top1_error"],
            history=list(s["history"]),
            running=EpochStats(**s["running"]),
        )
