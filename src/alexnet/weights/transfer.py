"""Trained weights into another net: every tensor whose name and shape fit, and a fresh
output layer where the classes differ (`train --weights`, `create_model(weights=...)`)."""

from __future__ import annotations

from torch import nn

from ..model import learned_layers, output_layer


def load_matching(
    model: nn.Module, state: dict, keep_head: bool = False
) -> tuple[list[str], list[str]]:
    """Copy every tensor of `state` whose name and shape fit, except the output layer's
    unless keep_head (the weights' classes are the store's: the same ids in the same
    order); returns the learned layers loaded and those left as initialised."""
    own = model.state_dict()
    fc8 = output_layer(model)
    head = {
        f"{prefix}.{p}"
        for prefix, mod in model.named_modules()
        if mod is fc8
        for p in ("weight", "bias")
    }
    fits = {
        k: v
        for k, v in state.items()
        if k in own and own[k].shape == v.shape and (keep_head or k not in head)
    }
    model.load_state_dict(fits, strict=False)
    names = dict((id(mod), name) for name, mod in learned_layers(model))
    loaded, fresh = [], []
    for prefix, mod in model.named_modules():
        if id(mod) in names:
            keys = [f"{prefix}.weight", f"{prefix}.bias"]
            (loaded if all(k in fits for k in keys) else fresh).append(names[id(mod)])
    return loaded, fresh
