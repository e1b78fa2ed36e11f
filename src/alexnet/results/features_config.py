"""What `alexnet features` is asked to do: `FeaturesConfig`, each option defined once
(the command line builds its flags from these fields). Importable without torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..options import CROPS, DEVICE_HELP, PRECISIONS, option

POOLINGS = ("none", "mean", "max")  # over the positions of each map


@dataclass
class FeaturesConfig:
    """What `alexnet features` is asked to do; each field is also its flag."""

    weights: str = option(
        help="our checkpoint, torchvision's .pth, a .caffemodel, or 'torchvision' / 'caffe'"
    )
    out: str = option(None, "the file to write: .npz (small sets) or .h5 (HDF5, streamed)")
    layers: str = option(
        "all",
        "comma-separated layers as `alexnet info` names them or conv1..fc8 (after the "
        "ReLU); NAME:pre before it; conv2.tower0 one tower's half; all: conv1..fc8",
    )
    folder: str | None = option(
        None,
        "every image file below this folder, in sorted path order",
        flag="--images",
        metavar="FOLDER",
    )
    data: str | None = option(None, "a prepared store", metavar="STORE")
    split: str = option("val", "the store's split, with --data")
    pooling: str = option("none", "over the positions of each map", POOLINGS)
    crops: int = option(1, "1: the centre; 10: §4.1's ten views, averaged", CROPS)
    batch_size: int = option(64, "patches per forward pass (ten crops: a tenth as many images)")
    precision: str = option(
        "fp32",
        "the forwards' autocast precision (outputs stay float32); fp32 by default, so that "
        "the activations are the net's exactly; auto: as train resolves it",
        PRECISIONS,
    )
    device: str = option("auto", DEVICE_HELP)
    images: list = field(default_factory=list, metadata={"cli": False, "help": ""})
    progress: bool = option(True, "progress bar", cli=False)
