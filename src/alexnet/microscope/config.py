"""What `alexnet microscope` is asked to do; each field is also its flag. Importable
without torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import DEVICE_HELP, PRECISIONS, WEIGHTS_HELP, option
from ..results.configs import PRECISION_HELP, _Checked

CONV_STACK = "conv1,conv2,conv3,conv4,conv5"


@dataclass
class MicroscopeConfig(_Checked):
    """What `alexnet microscope` is asked to do; each field is also its flag."""

    weights: str = option(help=WEIGHTS_HELP, metavar="CKPT")
    data: str = option(help="a prepared store, or a folder of images", flag="--data")
    out: str = option(help="the site's folder (open OUT/index.html); a rerun resumes", flag="--out")
    layers: str = option(
        CONV_STACK,
        "the layers, as `alexnet features` names them: conv1 ... fc8, conv2.tower1, pool5",
    )
    units: str = option("all", "each layer's units: all, 3, 0-15 or 3,7,10-12")
    top: int = option(9, "dataset patches per unit (at most 100)")
    split: str = option("val", "the store's split, with a store")
    steps: int = option(256, "feature visualisation: Adam steps per image (0: none drawn)")
    size: int = option(128, "feature visualisation: the image's side in pixels")
    seed: int = option(0, "feature visualisation: the seed every unit's draws derive from")
    batch_size: int = option(64, "images per forward pass of the dataset scan")
    vis_batch: int = option(32, "units whose images are optimised together")
    device: str = option("auto", DEVICE_HELP)
    precision: str = option("auto", PRECISION_HELP, PRECISIONS)
    LOWS = {"top": 1, "steps": 0, "size": 32, "batch_size": 1, "vis_batch": 1}
