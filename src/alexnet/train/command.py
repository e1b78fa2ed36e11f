"""`alexnet train` as the command line runs it: the run, and what it prints."""

from __future__ import annotations

from pathlib import Path

from ..runtime.printed import Printed
from .config import TrainConfig
from .loop import TrainingDiverged, train


def train_command(
    cfg: TrainConfig, resume: str | None = None, given: set[str] | None = None
) -> Printed:
    """Run (or resume) training. A diverged run exits 3 with its one line; a rank other
    than 0 prints nothing."""
    try:
        summary = train(cfg, resume=resume, given=given)
    except TrainingDiverged as e:
        return Printed(None, [], notes=[f"alexnet: error: {e}"], code=3)
    if summary["rank"] != 0:
        return Printed(None, [])
    return Printed(summary, summary_lines(summary))


def summary_lines(summary: dict) -> list[str]:
    """A run's summary as text: where it stopped, its files, and last its final accuracy."""
    lines = []
    if summary["stopped_mid_epoch"]:
        lines.append(
            f"stopped by --max-steps at step {summary['step_in_epoch']} of epoch "
            f"{summary['epochs_done'] + 1} (global step {summary['global_step']}); "
            f"continue with --resume {summary['run_dir']}"
        )
    lines.append(f"run directory: {summary['run_dir']}")
    lines.append(f"metrics:       {summary['metrics']}")
    lines.append(f"checkpoint:    {summary['checkpoint']}")
    if Path(summary["best_checkpoint"]).is_file():
        lines.append(f"best:          {summary['best_checkpoint']}")
    lines.append(f"store:         {summary['store']}")
    if summary.get("report"):
        lines.append(f"report:        {summary['report']}")
    last = summary["history"][-1] if summary["history"] else None
    if last:  # last, where the eye lands: the figure the README's table gives
        lines.append(
            f"final val accuracy {1 - last['val_top1_error']:.1%} (top-1 error "
            f"{last['val_top1_error']:.3f}, top-5 error {last['val_top5_error']:.3f}) "
            f"after {last['epoch']} epoch(s)"
        )
    return lines
