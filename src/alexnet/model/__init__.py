"""The network (§3 of the paper, see docs/paper.md): `net` builds it, `lrn` is its
response normalisation, `towers` splits it over two processes as the paper split it
over two GPUs, `info` prints its layer table."""

from .net import (
    BIAS_ONE_LAYERS,
    INIT_STD,
    LAYER_NAMES,
    AlexNet,
    ModelOptions,
    count_parameters,
    create_model,
    learned_layers,
    output_layer,
)

__all__ = [
    "AlexNet",
    "BIAS_ONE_LAYERS",
    "INIT_STD",
    "LAYER_NAMES",
    "ModelOptions",
    "count_parameters",
    "create_model",
    "learned_layers",
    "output_layer",
]
