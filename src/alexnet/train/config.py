"""What a training run is asked to do: `TrainConfig`, each option defined once.

Each field carries its help text and choices; the command line builds `alexnet
train`'s flags from these fields (alexnet/cli.py), so a default or a choice is never
spelled twice. Fields left None are decided by the recipe (recipes.py).

Importable without torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..options import (
    ACTIVATIONS,
    DECODES,
    DEVICE_HELP,
    FREEZES,
    INITS,
    KERNELS_HELP,
    MODEL_PARALLEL,
    PRECISIONS,
    SCHEDULES,
    VARIANTS,
    check_choices,
    option,
)
from ..runtime.errors import UsageError
from .recipes import RECIPE_FIELDS, RECIPES, choose_recipe


@dataclass
class TrainConfig:
    """What a training run is asked to do; each field is also its flag of `alexnet train`."""

    config: str | None = option(
        None,
        "read the options from this YAML or JSON file (a run's config.json is one); flags "
        "given on the command line override it",
        metavar="FILE",
    )
    data: str | None = option(
        None, "a prepared store (default: build and use the demo dataset)", metavar="STORE"
    )
    out: str | None = option(None, "run directory (default: runs/<date-time>)", metavar="RUN_DIR")
    variant: str = option(
        "paper", "the net (docs/paper.md §3); with --weights, the file's", VARIANTS
    )
    weights: str | None = option(
        None,
        "start from these weights: a checkpoint of ours (.pt, .safetensors), torchvision's "
        "AlexNet state_dict, a .caffemodel, or 'caffe' / 'torchvision' (the published "
        "ImageNet nets); every layer whose shape fits is loaded, fc8 starts afresh",
        metavar="FILE",
    )
    freeze: str | None = option(
        None,
        "train only what follows: features (the classifier trains), fc7 (only fc8: a linear probe)",
        FREEZES,
    )
    head_lr_mult: float | None = option(
        None,
        "fc8 learns at the schedule's rate times this (a fresh output layer over loaded "
        "ones: Caffe's CaffeNet fine-tuning example used 10)",
    )
    recipe: str | None = option(
        None,
        "training preset (default: caffe-init for a store of 100,000+ training images, else demo)",
        tuple(RECIPES),
    )
    epochs: int | None = option(None, "passes over the training split")
    batch_size: int | None = option(None, "images per step, per process")
    lr: float | None = option(None, "base learning rate")
    momentum: float | None = option(None, "momentum (SGD recipes)")
    weight_decay: float | None = option(None, "weight decay")
    schedule: str | None = option(None, "learning-rate schedule", SCHEDULES)
    patience: int | None = option(None, "plateau schedule: epochs without improvement")
    milestones: str | None = option(
        None,
        "step schedule: the epochs after which the rate is divided by 10, e.g. 8,12,16 "
        "(default: every 30)",
        metavar="E,E,...",
    )
    warmup_epochs: float | None = option(
        None, "epochs of linear warm-up before the schedule's rate (any schedule)"
    )
    init: str | None = option(None, "weight initialisation", INITS)
    input_scale: float | None = option(
        None, "multiply the mean-subtracted 0..255 pixels by this (paper: 1)"
    )
    dropout: float | None = option(None, "dropout on the outputs of fc6 and fc7 (paper: 0.5)")
    label_smoothing: float | None = option(
        None, "the share of each target spread evenly over the classes (paper: 0, one-hot)"
    )
    augment: bool = option(True, "random 224 crops and flips (§4.1); off: the centre crop")
    pca_lighting: bool = option(True, "PCA lighting noise on every training image (§4.1)")
    train_images: int | None = option(
        None, "train on this many images of the training split (a fixed seeded choice)"
    )
    val_images: int | None = option(
        None, "validate on this many images of the validation split (a fixed seeded choice)"
    )
    lrn: bool = option(True, "local response normalisation after conv1 and conv2 (§3.3)")
    lrn_alpha_over_n: bool = option(
        True,
        "LRN's alpha divided by the window size n, as cuda-convnet computed it for the "
        "published errors (docs/paper.md §3.3); off: alpha on the sum as the paper prints it",
    )
    overlap_pool: bool = option(True, "overlapping 3/2 max-pooling (§3.4); off: 2/2")
    activation: str = option("relu", "non-linearity of every hidden layer (§3.1)", ACTIVATIONS)
    seed: int = option(0, "seeds the init, the data order, the crops and the dropout masks")
    device: str = option("auto", DEVICE_HELP)
    precision: str = option(
        "auto",
        "autocast precision (auto: bf16 on cuda and on CPUs with AMX or AVX512-BF16, else "
        "fp32; the run records what it resolved to); fp32 insists on float32",
        PRECISIONS,
    )
    compile: bool = option(
        False, "torch.compile the model (for GPUs: on a CPU eager mode measured faster)"
    )
    kernels: str = option("auto", KERNELS_HELP)
    model_parallel: int = option(
        1,
        "2: the paper net's two towers on 2 processes (§3.2), under torchrun",
        MODEL_PARALLEL,
    )
    channels_last: bool = option(True, "channels_last memory format")
    workers: int = option(2, "data loading processes")
    decode: str = option("auto", "where a JPEG store is decoded (auto: nvjpeg on a GPU)", DECODES)
    max_steps: int | None = option(None, "stop after this many steps in all (checkpointed)")
    log_every: int | None = option(
        None,
        "a progress line (stderr) and steps.jsonl entry every N steps (default: every 2%% of "
        "an epoch, and at least every minute)",
    )
    log_updates: bool = option(
        False,
        "steps.jsonl also records each weight's update relative to its size, |dw| / |w|, at "
        "the logged steps (a copy of the weights before each of them)",
    )
    checkpoint_every: int = option(0, "also checkpoint every N steps (0: at epoch ends only)")
    eval_batch_size: int = option(128, "validation batch size")
    progress: bool = option(True, "progress bars", cli=False)  # the CLI: on a terminal only
    report: bool = option(True, "write report.html when training ends")

    def resolved(self) -> TrainConfig:
        """Fill what the recipe decides; check every value. Raises UsageError."""
        recipe_name, _ = choose_recipe(
            self.recipe, demo_data=self.data is None, starting_weights=self.weights is not None
        )
        if recipe_name not in RECIPES:
            raise UsageError(f"unknown recipe {recipe_name!r}; choose one of {', '.join(RECIPES)}")
        values = asdict(self)
        values["recipe"] = recipe_name
        for name in RECIPE_FIELDS:
            if values[name] is None:
                values[name] = getattr(RECIPES[recipe_name], name)
        cfg = TrainConfig(**values)
        cfg.check()
        return cfg

    def check(self) -> None:
        """Raise UsageError naming the first value out of its choices (every field that
        has them, in one loop) or its range (a resolved config)."""
        try:
            check_choices(self)
        except ValueError as e:
            raise UsageError(str(e)) from None
        for ok, message in self._checks():
            if not ok:
                raise UsageError(message)

    def _checks(self):
        finite = [
            n
            for n in (
                "lr",
                "head_lr_mult",
                "momentum",
                "weight_decay",
                "warmup_epochs",
                "input_scale",
                "dropout",
                "label_smoothing",
            )
            if not math.isfinite(getattr(self, n))
        ]
        return [
            (
                not finite,
                f"--{finite[0].replace('_', '-')} must be a finite number" if finite else "",
            ),
            (self.lr > 0, f"--lr must be positive, not {self.lr}"),
            (self.head_lr_mult > 0, f"--head-lr-mult must be positive, not {self.head_lr_mult}"),
            (self.epochs >= 1, f"--epochs must be at least 1, not {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, not {self.batch_size}"),
            (self.momentum >= 0, f"--momentum must be non-negative, not {self.momentum}"),
            (
                self.weight_decay >= 0,
                f"--weight-decay must be non-negative, not {self.weight_decay}",
            ),
            (self.warmup_epochs >= 0, "--warmup-epochs must be non-negative"),
            (self.input_scale > 0, f"--input-scale must be positive, not {self.input_scale}"),
            (self.patience >= 0, "--patience must be non-negative"),
            (
                self.milestones is None or parse_milestones(self.milestones) is not None,
                f"--milestones takes increasing whole epochs, e.g. 8,12,16, not {self.milestones!r}",
            ),
            (
                self.milestones is None or self.schedule == "step",
                "--milestones are the step schedule's: give --schedule step with them",
            ),
            (
                self.precision != "fp16",
                "--precision fp16 does not train here: without a gradient scaler small "
                "gradients underflow to zero; use bf16 (float32's range) or fp32",
            ),
        ] + self._run_checks()

    def _run_checks(self):
        return [
            (
                isinstance(self.seed, int) and -(2**63) <= self.seed < 2**63,
                f"--seed must be a whole number within +-2^63 (torch's seeds), not {self.seed}",
            ),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1"),
            (self.checkpoint_every >= 0, "--checkpoint-every must be non-negative"),
            (self.log_every is None or self.log_every >= 1, "--log-every must be at least 1"),
            (
                self.train_images is None or self.train_images >= 1,
                "--train-images must be at least 1",
            ),
            (self.val_images is None or self.val_images >= 1, "--val-images must be at least 1"),
            (self.eval_batch_size >= 1, "--eval-batch-size must be at least 1"),
            (self.workers >= 0, "--workers must be non-negative"),
            (0 <= self.dropout < 1, f"--dropout must be in [0, 1), not {self.dropout}"),
            (
                0 <= self.label_smoothing < 1,
                f"--label-smoothing must be in [0, 1), not {self.label_smoothing}",
            ),
            (
                self.freeze is None or self.weights is not None,
                "--freeze needs --weights: a frozen random layer learns nothing",
            ),
            (
                self.freeze is None or self.model_parallel == 1,
                "--freeze and --model-parallel do not go together",
            ),
            (
                self.model_parallel == 1 or self.variant == "paper",
                f"--model-parallel 2 splits the paper net's two towers; the {self.variant!r} "
                "variant has none",
            ),
        ]


# What a resumed run may change: where and how it runs, not what it learns. Each takes
# the resuming command's value, except the run's bookkeeping, which stays as the run had
# it unless the command sets it: a crashed run's plain --resume goes on checkpointing
# mid-epoch. Where it runs (device, processes, workers) follows the machine it resumes on.
RESUME_MAY_CHANGE = (
    "device",
    "workers",
    "decode",
    "progress",
    "max_steps",
    "report",
    "compile",
    "kernels",
    "checkpoint_every",
    "log_every",
    "log_updates",
    "eval_batch_size",
    "model_parallel",
)
KEPT_UNLESS_GIVEN = ("checkpoint_every", "log_every", "log_updates", "report")


# Fields added to the config since runs were first saved, with the value a run saved
# before then trained with: a resumed old run goes on as it began.
ADDED_SINCE_SAVED = {
    "head_lr_mult": 1.0,
    "lrn_alpha_over_n": False,
    "label_smoothing": 0.0,
    "milestones": None,
}


def parse_milestones(text: str) -> tuple[int, ...] | None:
    """ "8,12,16" -> (8, 12, 16): increasing positive epochs; None when it is not that."""
    try:
        epochs = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        return None
    increasing = all(a < b for a, b in zip(epochs, epochs[1:]))
    return epochs if epochs and epochs[0] >= 1 and increasing else None


def config_for_resume(
    saved: dict, asked: TrainConfig, run_dir: str, given: set[str] | None = None
) -> TrainConfig:
    """The config a resumed run continues with: the saved one, except for how it runs
    (RESUME_MAY_CHANGE; the run's bookkeeping, KEPT_UNLESS_GIVEN, only where the command
    sets it), and, when given, a new path to the store (a moved store; the caller checks that it holds the same classes).
    `given` names the options the command set (the CLI's flags); None takes those of
    `asked` that differ from their defaults. Checkpoints are full state dicts, so a run
    may change its parallelism too."""
    merged = {
        f.name: saved.get(f.name, ADDED_SINCE_SAVED.get(f.name, getattr(asked, f.name)))
        for f in fields(TrainConfig)
    }
    defaults = TrainConfig()
    for name in RESUME_MAY_CHANGE:
        set_now = (
            name in given
            if given is not None
            else (getattr(asked, name) != getattr(defaults, name))
        )
        if set_now or name not in KEPT_UNLESS_GIVEN or name not in saved:
            merged[name] = getattr(asked, name)
    if asked.data is not None:
        merged["data"] = asked.data
    merged["out"] = str(run_dir)
    return TrainConfig(**merged).resolved()


CONFIG_SUFFIXES = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}
# what a config file does not decide: the file itself, and how progress is shown
NOT_FROM_FILES = ("config", "progress")


def read_config_file(path: str) -> dict:
    """The options a --config file sets: a JSON or YAML mapping of TrainConfig's field
    names (the flags' names with underscores) to values of each field's type. Unknown
    names are refused by name; a number written as text in YAML ("1e-3") is read as one."""
    kind = CONFIG_SUFFIXES.get(Path(path).suffix.lower())
    if kind is None:
        raise UsageError(f"--config {path}: name a .json, .yaml or .yml file")
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--config {path}: cannot read it ({getattr(e, 'strerror', e)})") from None
    values = _parse(path, kind, text)
    if not isinstance(values, dict):
        raise UsageError(f"--config {path}: not a mapping of option names to values")
    known = {f.name: f for f in fields(TrainConfig)}
    unknown = sorted(str(k) for k in values if k not in known)
    if unknown:
        raise UsageError(f"--config {path}: unknown option(s): {', '.join(unknown)}")
    return {
        k: _typed(path, k, known[k].type, v) for k, v in values.items() if k not in NOT_FROM_FILES
    }


def _parse(path: str, kind: str, text: str):
    if kind == "json":
        try:
            return json.loads(text)
        except ValueError as e:
            raise UsageError(f"--config {path}: not JSON ({e})") from None
    try:
        import yaml
    except ImportError:
        raise UsageError(
            f"--config {path}: reading YAML needs PyYAML: pip install 'alexnet[yaml]' "
            "(or give the options as JSON)"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UsageError(f"--config {path}: not YAML ({str(e).splitlines()[0]})") from None


def _typed(path: str, name: str, annotation: str, value):
    """value as the field's type (int, float, bool, str; None where the field allows it)."""
    base = annotation.replace(" | None", "")
    if value is None and annotation.endswith("| None"):
        return None
    if base == "float" and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
    }.get(base, False)
    if not ok:
        raise UsageError(f"--config {path}: {name} must be {_a(base)}, not {value!r}")
    return float(value) if base == "float" else value


def _a(kind: str) -> str:
    return {"int": "a whole number", "float": "a number", "bool": "true or false"}.get(kind, "text")
