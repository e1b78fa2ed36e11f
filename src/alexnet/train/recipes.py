"""Named training presets. `caffe-init` is the default on large stores; `demo` is the main job's.

Importable without torch: the command line lists the recipes' values in its help.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# §5 Learning (docs/paper.md): the constants of the paper's recipe, defined once here;
# optim.py's PaperSGD and PlateauSchedule take them as their defaults.
BATCH_SIZE = 128
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
BASE_LR = 0.01
LR_FACTOR = 0.1  # divided by 10 ...
MAX_REDUCTIONS = 3  # ... three times before termination
EPOCHS = 90  # "roughly 90 cycles through the training set"

# Below this many training images a store without --recipe trains with `demo`: five
# epochs of AdamW suit a small store on a CPU, where the paper's 90 epochs of SGD would
# take days; at and above it, `caffe-init` (docs/paper.md §5).
SMALL_STORE = 100_000


@dataclass(frozen=True)
class Recipe:
    """A named training preset: every value a TrainConfig leaves to the recipe."""

    name: str
    description: str
    batch_size: int
    epochs: int
    lr: float
    momentum: float
    weight_decay: float
    optimizer: str  # options.Optimizer: "paper-sgd" (§5's rule), "sgd" or "adamw"
    schedule: str  # options.Schedule
    patience: int = 5
    warmup_epochs: float = 0.0
    init: str = "paper"
    input_scale: float = 1.0  # 1.0: the paper's raw centred 0..255 pixels (§2)
    dropout: float = 0.5  # §4.2
    head_lr_mult: float = 1.0  # fc8's rate over the schedule's
    label_smoothing: float = 0.0  # the paper's targets are one-hot


# The config fields a recipe decides (a flag given on the command line wins).
RECIPE_FIELDS = (
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "patience",
    "warmup_epochs",
    "init",
    "input_scale",
    "dropout",
    "head_lr_mult",
    "label_smoothing",
)

PAPER = Recipe(
    "paper",
    "docs/paper.md §5: batch 128, the paper's SGD rule and init, lr 0.01 divided by "
    "10 when validation error plateaus (at most 3 times), 90 epochs",
    batch_size=BATCH_SIZE,
    epochs=EPOCHS,
    lr=BASE_LR,
    momentum=MOMENTUM,
    weight_decay=WEIGHT_DECAY,
    optimizer="paper-sgd",
    schedule="plateau",
    patience=5,
)

RECIPES = {
    r.name: r
    for r in (
        PAPER,
        replace(
            PAPER,
            name="caffe-init",
            description="the paper's recipe with bvlc_alexnet's init: biases 0.1 where the "
            "paper puts 1, fc6 and fc7 N(0, 0.005^2). The paper's own init diverges at its "
            "second step on stores of few classes (docs/paper.md §5); Caffe trained ImageNet so",
            init="caffe",
        ),
        Recipe(
            "fast",
            "ten epochs to a good net on a CPU: AdamW (lr 5e-4, decoupled weight decay 0.05) "
            "under a half-epoch warm-up and cosine decay, label smoothing 0.1, He init and "
            "unit-variance inputs (pixels / 64), batch 128; the paper's net, crops, flips, "
            "PCA lighting and dropout unchanged (at this input scale its LRN is close to a "
            "constant division: docs/results.md, LRN)",
            batch_size=128,
            epochs=10,
            lr=5e-4,
            momentum=0.9,
            weight_decay=0.05,
            optimizer="adamw",
            schedule="warmup-cosine",
            warmup_epochs=0.5,
            init="kaiming",
            input_scale=1 / 64,
            label_smoothing=0.1,
        ),
        Recipe(
            "torchvision",
            "torchvision's reference script for alexnet: torch SGD, lr 0.01, x0.1 every 30 "
            "epochs, weight decay 1e-4, PyTorch's default init",
            batch_size=128,
            epochs=90,
            lr=0.01,
            momentum=0.9,
            weight_decay=1e-4,
            optimizer="sgd",
            schedule="step",
            init="torch",
        ),
        Recipe(
            "finetune",
            "starting from --weights: torch SGD with momentum 0.9 at lr 1e-3 (a tenth of "
            "training from scratch) and the fresh fc8 at 10 times that (as Caffe's CaffeNet "
            "example; 7-11 points better in docs/results.md), weight decay 1e-4, a 0.3-epoch "
            "warm-up and cosine decay over 5 epochs, batch 32",
            batch_size=32,
            epochs=5,
            lr=1e-3,
            momentum=0.9,
            weight_decay=1e-4,
            optimizer="sgd",
            schedule="warmup-cosine",
            warmup_epochs=0.3,
            init="paper",
            head_lr_mult=10.0,
        ),
        Recipe(
            "demo",
            "small data fast, for the embedded demo on a CPU: the paper's net, with fused "
            "AdamW (lr 5e-4) under a 0.3-epoch warm-up and cosine decay over 5 epochs, batch "
            "32, He init and unit-variance inputs (pixels / 64). The paper's SGD, N(0, 0.01) "
            "init and raw pixels need hundreds of steps before the loss leaves ln(classes)",
            batch_size=32,
            epochs=5,
            lr=5e-4,
            momentum=0.9,
            weight_decay=5e-4,
            optimizer="adamw",
            schedule="warmup-cosine",
            warmup_epochs=0.3,
            init="kaiming",
            input_scale=1 / 64,
        ),
    )
}


def choose_recipe(
    asked: str | None,
    *,
    demo_data: bool,
    starting_weights: bool,
    train_images: int | None = None,
    store: str = "the store",
) -> tuple[str, str]:
    """The recipe a run trains with, decided here only, and the line a run starts with
    to say which and why: the one asked for (`paper` with what it is known to do);
    `finetune` from starting weights; `demo` on the demo data, or on a store of fewer
    than SMALL_STORE training images; else `caffe-init`, the paper's recipe with the
    init that does not diverge (docs/paper.md §5). `train_images` None (not counted)
    counts as ILSVRC-sized."""
    if asked is not None:
        return asked, PAPER_AS_PRINTED if asked == "paper" else f"recipe: {asked}, as asked"
    if starting_weights:
        return "finetune", "recipe: finetune, since the run starts from --weights"
    if demo_data:
        return "demo", "recipe: demo, for the embedded demo data (--recipe to choose another)"
    if train_images is not None and train_images < SMALL_STORE:
        why = (
            f"recipe: demo, since {store} has {train_images:,} training images (fewer than "
            f"{SMALL_STORE:,}); --recipe caffe-init or fast to train longer"
        )
        return "demo", why
    return "caffe-init", (
        "recipe: caffe-init, the paper's recipe with Caffe's init, for a store of "
        f"{SMALL_STORE:,}+ training images"
    )


PAPER_AS_PRINTED = (
    "recipe: paper, as printed (bias 1, N(0, 0.01^2)): on stores of fewer classes than "
    "ImageNet's its loss jumps at the second step and the net can die at ln(classes) "
    "(docs/paper.md §5); --recipe caffe-init is the paper's recipe with Caffe's init"
)
