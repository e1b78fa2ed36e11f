"""Time to accuracy: the record of full-size training runs, as JSON and as a figure.

    python -m alexnet.studies.full_size RUN --command "alexnet train ..." --commit C \\
        [--ten-crop EVAL.json] [--lscpu LSCPU.txt] --out full-size.json --figure full-size.png

reads a run directory (config.json, environment.json, metrics.jsonl) and adds the run to
the record at --out (replacing a run of the same name), then draws every run of the
record: test accuracy against epochs and against hours. Each run keeps what a reader
needs to rerun it and to weigh its figures: the command, the commit, the CPU (lscpu's
model, family and the flags that set the speed), the precision, the image counts, and
per epoch the training loss, the test accuracy on one crop and the wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..data.store import Store
from ..runtime.errors import UsageError
from ..runtime.files import atomic_write_bytes, atomic_write_json
from ..weights.rundir import RunDir

# accuracies whose first crossing the record names: d2l's 10-epoch figure, 90%, the goal
TARGETS = (0.88, 0.90, 0.93)
# the switches an ablation arm turns (alexnet ablate): a record says where its net stands
SWITCHES = (
    "dropout",
    "augment",
    "pca_lighting",
    "lrn",
    "lrn_alpha_over_n",
    "overlap_pool",
    "activation",
    "variant",
)
# how its rate moved: the recipe's schedule or the one a study fixed for its arms
SCHEDULE_FIELDS = ("schedule", "lr", "patience", "milestones", "warmup_epochs")
# the flags that decide a CPU's training speed (docs/benchmarks.md)
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_from_lscpu(text: str) -> dict:
    """Model name, family, model number and the speed flags, from lscpu's output."""
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    flags = set(fields.get("Flags", "").split())
    return {
        "model_name": fields.get("Model name"),
        "family": fields.get("CPU family"),
        "model": fields.get("Model"),
        "cpus": fields.get("CPU(s)"),
        "flags": [f for f in SPEED_FLAGS if f in flags],
    }


def epochs_of(run: RunDir, started: float | None = None) -> list[dict]:
    """Per finished epoch: training loss, test accuracy (one crop), seconds of training,
    and wall seconds: training plus validation where the run timed both, else the time
    since the previous epoch ended (or since `started`, for the first). Hours are their
    running sum, so the hours between a stopped run and its resumption do not count."""
    rows, before, hours = [], started, 0.0
    for line in run.metrics.read_text().splitlines():
        r = json.loads(line)
        if r.get("partial"):
            continue
        if "val_seconds" in r:
            wall = r["epoch_seconds"] + r["val_seconds"]
        elif before is not None:
            wall = r["time"] - before
        else:
            raise UsageError(
                f"{run.metrics}: epoch {r['epoch']} has no validation time: give --started"
            )
        hours += wall / 3600
        rows.append(
            {
                "epoch": r["epoch"],
                "train_loss": round(r["train_loss"], 4),
                "test_top1_accuracy": round(1 - r["val_top1_error"], 4),
                "test_top5_accuracy": round(1 - r["val_top5_error"], 4),
                "train_seconds": round(r["epoch_seconds"], 1),
                "wall_seconds": round(wall, 1),
                "hours_since_start": round(hours, 3),
            }
        )
        before = r.get("time")
    return rows


def first_crossings(epochs: list[dict]) -> dict:
    """For each target accuracy: the first epoch at or above it, and the hours to it."""
    out = {}
    for target in TARGETS:
        hit = next((e for e in epochs if e["test_top1_accuracy"] >= target), None)
        out[f"{target:.2f}"] = (
            None if hit is None else {"epoch": hit["epoch"], "hours": hit["hours_since_start"]}
        )
    return out


def run_record(
    run_dir: str | Path,
    *,
    command: str,
    commit: str,
    lscpu: str | None = None,
    ten_crop: dict | None = None,
    started: float | None = None,
    note: str | None = None,
    name: str | None = None,
) -> dict:
    """One run of the record (see the module docstring). `started`: the run's start as
    a Unix time, for runs whose epochs do not carry their validation time; `name`: the
    run's in the record (its directory's name unless given: an ablate arm's is seedN)."""
    run = RunDir(run_dir)
    if not run.metrics.is_file():
        raise UsageError(f"{run.root} has no metrics.jsonl: not a run directory with epochs")
    config = json.loads(run.config.read_text())
    env = json.loads(run.environment.read_text())
    store = Store(config["data"])
    epochs = epochs_of(run, started)
    record = {
        "name": name or run.root.name,
        "command": command,
        "commit": commit,
        "cpu": cpu_from_lscpu(lscpu) if lscpu else {"model_name": env.get("cpu_model")},
        "precision": env.get("precision", config.get("precision")),
        "torch": env.get("torch"),
        "recipe": config["recipe"],
        "variant": config["variant"],
        "seed": config["seed"],
        "switches": {k: config[k] for k in SWITCHES if k in config},
        "schedule": {k: config[k] for k in SCHEDULE_FIELDS if config.get(k) is not None},
        "train_images": config.get("train_images") or len(store.split("train")),
        "test_images": config.get("val_images") or len(store.split("val")),
        "epochs": epochs,
        "first_reached": first_crossings(epochs),
    }
    if note:
        record["note"] = note  # what a reader must know to weigh the figures
    if ten_crop is not None:
        record["ten_crops"] = {
            "top1_accuracy": round(1 - ten_crop["top1_error"], 4),
            "top5_accuracy": round(1 - ten_crop["top5_error"], 4),
            "checkpoint": ten_crop.get("checkpoint"),
        }
    return record


def add_to_record(path: Path, record: dict) -> list[dict]:
    """The record file's runs with this one added (or replacing its namesake), written."""
    runs = json.loads(path.read_text())["runs"] if path.is_file() else []
    runs = [r for r in runs if r["name"] != record["name"]] + [record]
    atomic_write_json(path, {"runs": runs})
    return runs


def draw(runs: list[dict], out: Path) -> None:
    """Test accuracy (one crop) against epochs and against hours, one line per run."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for r in runs:
        acc = [100 * e["test_top1_accuracy"] for e in r["epochs"]]
        label = f"{r['name']} ({r['recipe']}, {r['precision']})"
        axes[0].plot([e["epoch"] for e in r["epochs"]], acc, marker="o", label=label)
        axes[1].plot([e["hours_since_start"] for e in r["epochs"]], acc, marker="o", label=label)
    for ax, xlabel in zip(axes, ("epoch", "hours (wall clock, validation included)")):
        for target in TARGETS:
            ax.axhline(100 * target, color="grey", lw=0.6, ls="--")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy, one crop (%)")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("The paper's net on all of Fashion-MNIST: time to accuracy")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m alexnet.studies.full_size", description=__doc__)
    p.add_argument("run", help="a run directory")
    p.add_argument("--command", required=True, help="the command that trained it")
    p.add_argument("--commit", required=True, help="the commit of the code it ran")
    p.add_argument("--lscpu", help="lscpu's output on the machine it ran on (a file)")
    p.add_argument("--ten-crop", help="`alexnet evaluate --crops 10 --json` of its net")
    p.add_argument("--started", type=float, help="its start, Unix time (older runs' epochs)")
    p.add_argument("--note", help="what else to know: other work on the machine, a resume")
    p.add_argument("--name", help="the run's name in the record (default: its directory's)")
    p.add_argument("--out", required=True, help="the record (JSON), created or updated")
    p.add_argument("--figure", help="draw the record's runs here (PNG)")
    a = p.parse_args(argv)
    try:
        record = run_record(
            a.run,
            command=a.command,
            commit=a.commit,
            lscpu=Path(a.lscpu).read_text() if a.lscpu else None,
            ten_crop=json.loads(Path(a.ten_crop).read_text()) if a.ten_crop else None,
            started=a.started,
            note=a.note,
            name=a.name,
        )
        runs = add_to_record(Path(a.out), record)
        if a.figure:
            draw(runs, Path(a.figure))
    except (UsageError, OSError, ValueError, KeyError) as e:
        print(f"full_size: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(record["first_reached"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
