"""What a run reports as it goes: metrics.jsonl and the epoch lines, steps.jsonl and
the step lines (what a job without a terminal shows), TensorBoard events."""

from __future__ import annotations

import json
import sys
import time

from tqdm import tqdm

from ..runtime.files import atomic_write_bytes
from ..weights.rundir import RunDir

EPOCH_SCALARS = ("train_loss", "train_top1_error", "val_top1_error", "val_top5_error", "lr")


class MetricsLog:
    """Rank 0's record of the epochs. The metrics file is rewritten whole from the
    history a checkpoint carries, so a resumed run never doubles or loses a line."""

    def __init__(self, run: RunDir, progress: bool):
        self.run, self.progress = run, progress
        self.tb = _tensorboard(run)

    def write(self, history: list[dict]) -> None:
        """Rewrite metrics.jsonl from these records."""
        data = "".join(json.dumps(r) + "\n" for r in history).encode()
        atomic_write_bytes(self.run.metrics, data)

    def epoch(self, record: dict, history: list[dict]) -> None:
        """Record a finished epoch: the file, TensorBoard, and its line."""
        self.write(history)
        if self.tb is not None:
            for k in EPOCH_SCALARS:
                self.tb.add_scalar(k, record[k], record["epoch"])
            self.tb.flush()
        # without a terminal the line goes to stderr, beside the other progress lines
        tqdm.write(epoch_line(record), file=None if self.progress else sys.stderr)

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def epoch_line(r: dict) -> str:
    """An epoch record as the line the run prints."""
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


LOG_INTERVAL_SECONDS = 60.0  # without --log-every: at least this often ...
LOG_EPOCH_FRACTION = 0.02  # ... and every 2% of an epoch ...
LOG_MIN_SECONDS = 5.0  # ... but not more often than this


class StepLog:
    """Every `every` steps, and at least every minute: one line (to stderr, unless a
    progress bar shows the same) and one object in steps.jsonl, rank 0 only. Reading the
    running sums is the only device sync, so it happens here, not at every step."""

    def __init__(
        self,
        run: RunDir,
        every: int | None,
        steps_per_epoch: int,
        print_lines: bool,
        resumed_at: int,
    ):
        self.run, self.print_lines = run, print_lines
        self.every = every or max(1, round(steps_per_epoch * LOG_EPOCH_FRACTION))
        self.seconds = LOG_INTERVAL_SECONDS if every is None else None
        self._keep_until(resumed_at)
        self.last_time, self.last_step = time.perf_counter(), resumed_at

    def due(self, global_step: int) -> bool:
        """Whether a line is due after this global step. By default: every 2% of an
        epoch, but no more often than every LOG_MIN_SECONDS, and at least every minute."""
        if self.seconds is None:  # --log-every N: exactly every N steps
            return global_step % self.every == 0
        elapsed = time.perf_counter() - self.last_time
        return elapsed >= self.seconds or (
            global_step % self.every == 0 and elapsed >= LOG_MIN_SECONDS
        )

    def write(self, record: dict) -> None:
        """Append a step record to steps.jsonl, and print its line without a progress bar."""
        with open(self.run.steps, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.print_lines:
            print(step_line(record), file=sys.stderr, flush=True)

    def rate(self, global_step: int, images_per_step: int) -> float:
        """Images per second since the last line; starts the next interval."""
        now = time.perf_counter()
        rate = (global_step - self.last_step) * images_per_step / max(now - self.last_time, 1e-9)
        self.last_time, self.last_step = now, global_step
        return rate

    def _keep_until(self, global_step: int) -> None:
        """A resumed run drops the lines logged after its checkpoint: they are redone.
        A line that is not a step record (cut short by a kill) is dropped too: it is a
        log, and the checkpoint says where the run stands."""
        if not self.run.steps.is_file():
            return
        lines = self.run.steps.read_text(errors="replace").splitlines()
        kept = [x for x in lines if _step_of(x) is not None and _step_of(x) <= global_step]
        atomic_write_bytes(self.run.steps, "".join(x + "\n" for x in kept).encode())


def _step_of(line: str) -> int | None:
    try:
        step = json.loads(line).get("global_step")
    except (ValueError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def step_line(r: dict) -> str:
    """A step record as the line the run prints."""
    return (
        f"epoch {r['epoch']} step {r['step']}/{r['steps_per_epoch']} "
        f"(global {r['global_step']}): loss {r['train_loss']:.4f}, "
        f"{r['images_per_second']:.1f} img/s, lr {r['lr']:.3g}, "
        f"epoch ETA {_duration(r['epoch_eta_seconds'])}, "
        f"run ETA {_duration(r['run_eta_seconds'])}"
    )


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
