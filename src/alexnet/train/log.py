"""What a run reports as it goes: metrics.jsonl, TensorBoard events, the epoch lines."""

from __future__ import annotations

import json
import sys

from tqdm import tqdm

from ..runtime.files import atomic_write_bytes
from .rundir import RunDir

EPOCH_SCALARS = ("train_loss", "train_top1_error", "val_top1_error", "val_top5_error", "lr")


class MetricsLog:
    """Rank 0's record of the epochs. The metrics file is rewritten whole from the
    history a checkpoint carries, so a resumed run never doubles or loses a line."""

    def __init__(self, run: RunDir, progress: bool):
        self.run, self.progress = run, progress
        self.tb = _tensorboard(run)

    def write(self, history: list[dict]) -> None:
        data = "".join(json.dumps(r) + "\n" for r in history).encode()
        atomic_write_bytes(self.run.metrics, data)

    def epoch(self, record: dict, history: list[dict]) -> None:
        self.write(history)
        if self.tb is not None:
            for k in EPOCH_SCALARS:
                self.tb.add_scalar(k, record[k], record["epoch"])
            self.tb.flush()
        # without a terminal the line goes to stderr, beside the other progress lines
        tqdm.write(epoch_line(record), file=None if self.progress else sys.stderr)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def epoch_line(r: dict) -> str:
    return (
        f"epoch {r['epoch']}: train loss {r['train_loss']:.3f}, "
        f"val top-1 error {r['val_top1_error']:.3f}, top-5 error {r['val_top5_error']:.3f}, "
        f"lr {r['lr']:.3g}, {r['images_per_second']:.1f} img/s"
    )


def _tensorboard(run: RunDir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        return None
    return SummaryWriter(log_dir=str(run.tensorboard))
