"""What the ablation studies are and keep, shared by the modules that run and report
them: the studies and their arms (`STUDIES`), what `alexnet ablate` is asked to do
(`AblateConfig`), the record of finished runs (`Results`, results.jsonl), run ids and
the results folder's claim."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..options import DEVICE_HELP, PRECISIONS, SCHEDULES, check_choices, option
from ..runtime.errors import UsageError
from ..runtime.files import atomic_write_bytes
from ..train.recipes import RECIPES

# the relu study's learning-rate grid, per arm: wide enough that neither arm's fastest
# rate is at an edge on Fashion-MNIST (tanh's was the top of 0.003-0.1)
SMALL_LRS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
# training errors whose first crossing the relu study also times, below the paper's 25%:
# a target reached within a fifth of an epoch measures start-up, not saturation
LOWER_TARGETS = (0.2, 0.15, 0.12, 0.1)
# the convergence rule for the AlexNet-scale arms (dropout: "roughly doubles the number
# of iterations required to converge"): the first epoch whose validation error is
# within this of the run's final one
CONVERGED_WITHIN = 0.01


@dataclass(frozen=True)
class Study:
    """A study: its section, the paper's claim, its arms and the paper's deltas."""

    name: str
    section: str
    claim: str
    # arm -> the one switch it sets (TrainConfig fields, or the small net's); the first
    # arm is the reference, the second the paper's switched-off arm (lrn: a third, the
    # other LRN convention, docs/paper.md §3.3)
    arms: dict
    # the paper's figure for the error of the switched-off arm minus the other (fractions)
    paper_top1_delta: float | None = None
    paper_top5_delta: float | None = None
    kind: str = "alexnet"  # "small", "alexnet" or "eval"


STUDIES = {
    s.name: s
    for s in (
        Study(
            "relu",
            "§3.1, Figure 1",
            "ReLU reaches 25% training error 6x faster than tanh",
            {"relu": {"activation": "relu"}, "tanh": {"activation": "tanh"}},
            kind="small",
        ),
        Study(
            "activation",
            "§3.1, Figure 1",
            "ReLU reaches 25% training error 6x faster than tanh (the paper net at full size)",
            {"paper": {}, "tanh": {"activation": "tanh"}},
        ),
        Study(
            "lrn-cifar",
            "§3.3",
            "response normalisation: 13% -> 11% test error on CIFAR-10",
            {
                "lrn": {"lrn": True},
                "no-lrn": {"lrn": False},
                "alpha-undivided": {"lrn": True, "lrn_alpha_over_n": False},
            },
            0.02,
            None,
            kind="small",
        ),
        Study(
            "towers",
            "§3.2",
            "two towers beat one tower of half the kernels",
            {"paper": {}, "one-tower": {"variant": "one-tower"}},
            0.017,
            0.012,
        ),
        Study(
            "lrn",
            "§3.3",
            "response normalisation lowers the error",
            {"paper": {}, "no-lrn": {"lrn": False}, "alpha-undivided": {"lrn_alpha_over_n": False}},
            0.014,
            0.012,
        ),
        Study(
            "overlap",
            "§3.4",
            "overlapping 3/2 pooling beats 2/2, and overfits less",
            {"paper": {}, "no-overlap": {"overlap_pool": False}},
            0.004,
            0.003,
        ),
        Study(
            "augment",
            "§4.1",
            "crops and flips: a larger training set, less overfitting",
            {"paper": {}, "no-augment": {"augment": False}},
        ),
        Study(
            "pca",
            "§4.1",
            "PCA lighting lowers top-1 error by over 1%",
            {"paper": {}, "no-pca": {"pca_lighting": False}},
            0.01,
            None,
        ),
        Study(
            "dropout",
            "§4.2",
            "dropout: less overfitting, about twice the iterations",
            {"paper": {}, "no-dropout": {"dropout": 0.0}},
        ),
        Study(
            "ten-crop",
            "§4.1",
            "averaging ten patches at test time",
            {"ten-crops": {"crops": 10}, "one-crop": {"crops": 1}},
            kind="eval",
        ),
    )
}


@dataclass
class AblateConfig:
    """What `alexnet ablate` is asked to do; each field is also its flag."""

    studies: list[str] = option(
        help=f"one or more of: {', '.join(STUDIES)}", choices=tuple(STUDIES), metavar="STUDY"
    )
    data: str = option(help="a prepared store", flag="--data")
    out: str = option(help="the results folder (rerun: resumes)", flag="--out")
    seeds: int = option(3, "seeds per arm")
    # the AlexNet-scale runs' and lrn-cifar's; relu: the budget per run
    epochs: float = option(5.0, "per run (relu: the budget of each run)")
    train_images: int | None = option(None, "train on this many images")
    val_images: int | None = option(None, "validate on this many images")
    target_error: float = option(
        0.25, "relu: the training error whose first crossing is timed and chooses each arm's rate"
    )
    targets: tuple[float, ...] = option(
        LOWER_TARGETS, "relu: lower training errors whose first crossings are timed too"
    )
    device: str = option("auto", DEVICE_HELP)
    precision: str = option(
        "auto",
        "the AlexNet-scale runs' autocast precision, as train's --precision (the small "
        "CIFAR-net studies train in float32)",
        PRECISIONS,
    )
    # small data: five epochs of AdamW suit it (the paper's recipe diverges on few
    # classes, docs/paper.md §5)
    recipe: str = option("demo", "the AlexNet-scale runs' recipe", tuple(RECIPES))
    batch_size: int = option(32, "the AlexNet-scale runs' batch size")
    schedule: str | None = option(
        None,
        "the AlexNet-scale runs' learning-rate schedule (default: the recipe's); constant "
        "lets a run converge on its own, as dropout's 'twice the iterations' needs",
        SCHEDULES,
    )
    milestones: str | None = option(
        None,
        "with --schedule step: the epochs after which the rate is divided by 10 (the drops "
        "a plateau run of the paper arm made, shared by every arm)",
        metavar="E,E,...",
    )
    workers: int = option(2, "data loading processes")
    # a full-size arm is hours of work: a stopped ablate should lose minutes of it
    checkpoint_every: int = option(
        0, "the AlexNet-scale runs also checkpoint every N steps (0: at epoch ends only)"
    )
    lrs: tuple[float, ...] = option(SMALL_LRS, "relu: the learning-rate grid of each arm")
    # a full-size arm is hours: run the arms a claim needs, not every arm of its study
    arms: str | None = option(
        None, "only these arms of the AlexNet-scale studies (default: all)", metavar="A,A,..."
    )
    extra: dict = field(default_factory=dict, metadata={"cli": False})  # other TrainConfig fields

    def check(self) -> None:
        """Raise UsageError for an unknown study or a value out of range."""
        try:
            check_choices(self)
        except ValueError as e:
            raise UsageError(str(e)) from None
        counts = {"--seeds": self.seeds, "--batch-size": self.batch_size}
        counts.update({"--train-images": self.train_images, "--val-images": self.val_images})
        for flag, n in counts.items():
            if n is not None and n < 1:
                raise UsageError(f"{flag} must be at least 1, not {n}")
        for flag, n in {
            "--workers": self.workers,
            "--checkpoint-every": self.checkpoint_every,
        }.items():
            if n < 0:
                raise UsageError(f"{flag} must be non-negative, not {n}")
        if not (self.epochs > 0 and 0 < self.target_error < 1):
            raise UsageError("--epochs must be positive, --target-error in (0, 1)")
        if not all(0 < t < 1 for t in self.targets):
            raise UsageError(f"--targets must each be in (0, 1), not {list(self.targets)}")
        if not all(lr > 0 for lr in self.lrs):
            raise UsageError(f"--lrs must each be positive, not {list(self.lrs)}")
        self.chosen_arms()
        from ..runtime.device import pick_device

        pick_device(self.device)  # a device that is not there: one line, as every verb says

    def chosen_arms(self) -> set[str] | None:
        """--arms as a set (None: every arm), each checked against the studies asked."""
        if self.arms is None:
            return None
        chosen = {a.strip() for a in self.arms.split(",") if a.strip()}
        known = {a for name in self.studies for a in STUDIES[name].arms}
        unknown = sorted(chosen - known)
        if unknown or not chosen:
            raise UsageError(
                f"--arms {self.arms}: the studies asked have the arms {', '.join(sorted(known))}"
            )
        return chosen

    def arms_of(self, study: Study) -> dict:
        """The study's arms this ablate runs."""
        chosen = self.chosen_arms()
        return {a: s for a, s in study.arms.items() if chosen is None or a in chosen}


class Results:
    """results.jsonl: one row per finished run, keyed by its id; rewritten atomically."""

    def __init__(self, out: Path):
        self.path = out / "results.jsonl"
        self.rows = {}
        if self.path.is_file():
            for number, line in enumerate(self.path.read_text().splitlines(), start=1):
                if line.strip():
                    row = _row(line)
                    if row is None:
                        raise UsageError(
                            f"{self.path}, line {number}: not a run's record (a JSON object "
                            "with its id and arm): remove the line to run it again"
                        )
                    self.rows[row["id"]] = row

    def add(self, row: dict) -> None:
        """Record a finished run and rewrite results.jsonl atomically."""
        self.rows[row["id"]] = row
        data = "".join(json.dumps(r) + "\n" for r in self.rows.values()).encode()
        atomic_write_bytes(self.path, data)


def _row(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    ok = isinstance(row, dict) and isinstance(row.get("id"), str) and "arm" in row
    return row if ok else None


MARKER = ".alexnet-ablate"  # written into every folder ablate makes: a rerun may continue


def claim_results_folder(out: Path) -> None:
    """Make `out`, or continue in one that ablate made (its marker, or the results record
    of a folder from before the marker); refuse a folder holding anything else."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not ((out / MARKER).is_file() or (out / "results.jsonl").is_file()):
            first = sorted(out.iterdir())[0]
            raise UsageError(
                f"--out {out} holds files ablate did not write ({first.name}): choose a "
                "new folder, or one an earlier ablate wrote"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).touch()
    except OSError as e:
        raise UsageError(f"cannot write the results folder {out}: {e.strerror}") from None


def row_id(kind: str, arm: str, seed: int, lr: float | None = None) -> str:
    """A run's id in results.jsonl: kind, arm, seed (and learning rate, in a sweep)."""
    return f"{kind}:{arm}:seed{seed}" + (f":lr{lr:g}" if lr is not None else "")


def all_targets(cfg: AblateConfig) -> list[float]:
    """The relu study's targets, highest first: the paper's, then the lower ones."""
    return sorted({cfg.target_error, *cfg.targets}, reverse=True)


def mean_sd(values: list[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (0 for one value)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
