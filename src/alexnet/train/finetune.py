"""Starting a run from trained weights: `alexnet train --weights FILE [--freeze ...]`.

The file is any checkpoint `alexnet.load` reads: ours (any variant, .pt or .safetensors),
torchvision's AlexNet state_dict, a .caffemodel, or "torchvision" / "caffe" by name. The run takes the file's variant and architecture
switches, loads every tensor whose name and shape fit the new net, and gives the rest
(fc8, for the store's classes) a fresh start. Its inputs are preprocessed as the
weights were trained: torchvision's weights see ImageNet's per-channel mean and std,
ours their own mean image and input scale. The run's checkpoints record that
normalisation, so evaluate, predict and neighbors use it unchanged.

--freeze features trains the classifier only; --freeze fc7 trains fc8 only (a linear
probe). Frozen parameters get no gradient, so no backward pass runs through them, and
the frozen part runs in eval mode (no dropout inside it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..evaluation.embed import split_features
from ..model import LAYER_NAMES, learned_layers, output_layer
from ..model.net import ARCHITECTURE_OPTIONS
from ..weights.load import load_for_inference
from .config import TrainConfig


@dataclass
class StartingWeights:
    """The weights a run starts from, with their net and their preprocessing."""

    path: str
    kind: str  # "alexnet", "torchvision" or "caffe"
    variant: str
    options: object  # ModelOptions
    state: dict
    norm: dict  # mean (image or per channel), std, scale: 0..255 units
    class_ids: list  # the classes its output layer was trained on, when known

    @classmethod
    def read(cls, path: str) -> StartingWeights:
        """Read any file `alexnet.load` reads."""
        loaded = load_for_inference(path, "cpu")
        m = loaded.model
        norm = {k: loaded.norm.get(k) for k in ("mean", "std", "scale", "channels")}
        if loaded.about.get("preprocessing") == "paper":  # a bare state_dict: the store's mean
            norm["mean"] = None
        return cls(path, loaded.kind, m.variant, m.options, m.state_dict(), norm, loaded.class_ids)

    def configure(self, cfg: TrainConfig) -> TrainConfig:
        """The run's config with the file's net (the recipe: recipes.choose_recipe's
        `finetune` by default); a five-conv paper net asked to grow a sixth (--variant
        six-conv) keeps that variant: §6's pre-train, then fine-tune."""
        grows = cfg.variant == "six-conv" and self.variant == "paper"
        return replace(
            cfg,
            variant="six-conv" if grows else self.variant,
            **{k: getattr(self.options, k) for k in ARCHITECTURE_OPTIONS},
            input_scale=float(self.norm.get("scale") or 1.0),
        )


def frozen_layers(freeze: str | None, names=LAYER_NAMES) -> tuple[str, ...]:
    """The learned layers --freeze keeps fixed, by their paper names (`names`: the net's
    learned layers in order): every convolution for features, all but fc8 for fc7."""
    if freeze is None:
        return ()
    if freeze == "features":
        return tuple(n for n in names if n.startswith("conv"))
    return tuple(names[:-1])


def freeze_(model: nn.Module, freeze: str | None) -> None:
    """No gradient for the frozen layers' parameters."""
    frozen = set(frozen_layers(freeze, [n for n, _ in learned_layers(model)]))
    for name, mod in learned_layers(model):
        if name in frozen:
            mod.requires_grad_(False)


def frozen_eval_(model: nn.Module, freeze: str | None) -> None:
    """The frozen part in eval mode: for --freeze fc7 that is the whole net up to fc8
    (its dropout included); for --freeze features, the convolutional part."""
    if freeze == "features":
        model.features.eval()
    elif freeze == "fc7":
        model.features.eval()
        for mod in list(model.classifier)[:-1]:
            mod.eval()


def trainable(model: nn.Module) -> list[torch.nn.Parameter]:
    """The parameters an optimiser should update (those not frozen)."""
    return [p for p in model.parameters() if p.requires_grad]


def param_groups(model: nn.Module, head_lr_mult: float = 1.0) -> list:
    """What the optimiser updates: with a head multiplier, two groups, each with the
    `lr_mult` the loop scales the schedule's rate by (fc8, the last linear layer, at
    head_lr_mult; the rest at 1); without one, the plain parameter list (one group, the
    optimiser state as it always was)."""
    params = trainable(model)
    if head_lr_mult == 1.0:
        return params
    head = {id(p) for p in output_layer(model).parameters()}
    groups = [
        {"params": [p for p in params if id(p) not in head], "lr_mult": 1.0},
        {"params": [p for p in params if id(p) in head], "lr_mult": head_lr_mult},
    ]
    return [g for g in groups if g["params"]]


class FeatureFeed:
    """A linear probe's feed: fc7 features computed once per split (the centre crop, the
    frozen net in eval mode, as evaluation sees images), then served by the same seeded
    sampler as images would be, so a probe resumes exactly like any run."""

    def __init__(self, model: nn.Module, split, transform, sampler, batch_size: int = 128):
        self.sampler = sampler
        self.features, self.labels = split_features(model, split, transform, batch_size)

    def epoch(self, epoch: int, start_step: int = 0):
        """(features, labels, step) for the steps of `epoch` from `start_step`."""
        self.sampler.set_epoch(epoch, start_step)
        for _, step, indices in self.sampler:
            yield self.features[indices], self.labels[indices], step


@torch.no_grad()
def probe_evaluate(
    head: nn.Module, features: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> dict:
    """evaluate_split's result for a probe: the head on cached validation features."""
    from ..evaluation.metrics import Tally

    tally = Tally(num_classes)
    for x, y in zip(features.split(1024), labels.split(1024), strict=True):
        tally.update(head(x).float().softmax(1), y)
    return {"crops": 1, **tally.result()}
