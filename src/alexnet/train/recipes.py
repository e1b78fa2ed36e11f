"""Named training presets. `paper` is the default on real data; `demo` is the main job's."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    batch_size: int
    epochs: int
    lr: float
    momentum: float
    weight_decay: float
    optimizer: str  # "paper-sgd" (§5's rule) or "sgd" (torch.optim.SGD)
    schedule: str  # a key of optim.SCHEDULES
    patience: int = 5
    warmup_epochs: float = 0.0
    init: str = "paper"
    input_scale: float = 1.0  # 1.0: the paper's raw centred 0..255 pixels (§2)


RECIPES = {
    r.name: r
    for r in (
        Recipe(
            "paper", "PAPER.md §5: batch 128, the paper's SGD rule and init, lr 0.01 divided by "
            "10 when validation error plateaus (at most 3 times), 90 epochs",
            batch_size=128, epochs=90, lr=0.01, momentum=0.9, weight_decay=5e-4,
            optimizer="paper-sgd", schedule="plateau", patience=5,
        ),
        Recipe(
            "torchvision", "torchvision's reference script for alexnet: torch SGD, lr 0.01, "
            "x0.1 every 30 epochs, weight decay 1e-4, PyTorch's default init",
            batch_size=128, epochs=90, lr=0.01, momentum=0.9, weight_decay=1e-4,
            optimizer="sgd", schedule="step", init="torch",
        ),
        Recipe(
            "demo", "small data fast: the paper's net and SGD rule, with a one-epoch linear "
            "warm-up and cosine decay; PyTorch's default init, since the paper's N(0, 0.01) "
            "with bias 1 needs many epochs to leave the flat start",
            batch_size=32, epochs=12, lr=0.01, momentum=0.9, weight_decay=5e-4,
            optimizer="paper-sgd", schedule="warmup-cosine", warmup_epochs=1.0, init="torch",
        ),
    )
}  # fmt: skip
