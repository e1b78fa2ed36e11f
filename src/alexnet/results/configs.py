"""What `alexnet info`, `evaluate`, `predict`, `neighbors`, `kernels`, `report` and
`export` are asked to do, each option defined once: the command line builds their flags
from these fields, and the verbs' functions take them as keywords. Importable without
torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import (
    CROPS,
    DEVICE_HELP,
    EXPORT_FORMATS,
    EXPORT_PRECISIONS,
    PATCHES_PER_PASS,
    PRECISIONS,
    VARIANTS,
    WEIGHTS_HELP,
    check_at_least,
    check_choices,
    option,
)

PRECISION_HELP = (
    "autocast precision of the forwards (auto: bf16 on cuda and on CPUs with AMX or "
    "AVX512-BF16, else fp32, as train resolves it); fp32 insists on float32"
)


class _Checked:
    def check(self) -> None:
        """Raise ValueError for a value out of its choices or its range."""
        check_choices(self)
        check_at_least(self, **self.LOWS)


@dataclass
class EvaluateConfig(_Checked):
    """What `alexnet evaluate` is asked to do; each field is also its flag."""

    ckpts: list[str] = option(
        help=WEIGHTS_HELP + "; several: their softmax averaged (an ensemble)", metavar="CKPT"
    )
    data: str = option(help="a prepared store", flag="--data")
    split: str = option("val", "the store's split to evaluate (test: ILSVRC-2010's)")
    crops: int = option(
        10, "centre crop, or the four corners and centre with their reflections", CROPS
    )
    batch_size: int = option(
        PATCHES_PER_PASS, "patches per forward pass (ten crops: a tenth as many images)"
    )
    workers: int = option(2, "data loading processes")
    device: str = option("auto", DEVICE_HELP)
    precision: str = option("auto", PRECISION_HELP, PRECISIONS)
    LOWS = {"batch_size": 1, "workers": 0}


@dataclass
class PredictConfig(_Checked):
    """What `alexnet predict` is asked to do; each field is also its flag."""

    ckpt: str = option(help=WEIGHTS_HELP)
    images: list[str] = option(
        help="image files; weights named before them (.pt, .safetensors, .pth, .caffemodel, "
        "torchvision, caffe) join CKPT in an ensemble: their softmax averaged"
    )
    top: int = option(5, "classes per image")
    data: str | None = option(
        None,
        "predict among this store's (or image folder's) classes: an ImageNet net on some of "
        "ImageNet's classes scores those alone",
        metavar="STORE",
    )
    figure: str | None = option(None, "draw the predictions with bars into this PNG", metavar="PNG")
    batch_size: int = option(32, "images per forward pass")
    device: str = option("auto", DEVICE_HELP)
    precision: str = option("auto", PRECISION_HELP, PRECISIONS)
    LOWS = {"top": 1, "batch_size": 1}


@dataclass
class NeighborsConfig(_Checked):
    """What `alexnet neighbors` is asked to do; each field is also its flag."""

    ckpt: str = option(help=WEIGHTS_HELP)
    gallery: str = option(help="a prepared store", flag="--gallery")
    queries: list[str] = option(help="query image files", flag="--query", metavar="IMAGE")
    out: str = option(help="PNG to write", flag="--out", metavar="PNG")
    split: str = option("train", "gallery split")
    k: int = option(5, "neighbours per query (at most 100)")
    codes: int | None = option(
        None, "also search binary codes from an auto-encoder, and compare", metavar="BITS"
    )
    device: str = option("auto", DEVICE_HELP)
    precision: str = option("auto", PRECISION_HELP, PRECISIONS)
    LOWS = {"k": 1, "codes": 1}


@dataclass
class InfoConfig(_Checked):
    """What `alexnet info` is asked to do; each field is also its flag."""

    variant: str = option("paper", "the net (docs/paper.md §3)", VARIANTS)
    input_size: int | None = option(None, "side of the square input (default: 224; caffe: 227)")
    num_classes: int = option(1000, "classes of the output layer")
    weights: bool = option(
        False,
        "list the published weights loaded by name instead: metrics and how they were "
        "measured, parameters, file, hash, URL, smallest input, channels, recipe",
    )
    LOWS = {"num_classes": 1, "input_size": 1}


@dataclass
class KernelsConfig(_Checked):
    """What `alexnet kernels` is asked to do; each field is also its flag."""

    ckpt: str = option(help=WEIGHTS_HELP)
    out: str = option(help="PNG to write", flag="--out", metavar="PNG")
    LOWS = {}


@dataclass
class ReportConfig(_Checked):
    """What `alexnet report` is asked to do; each field is also its flag."""

    run_dir: str = option(help="a run directory")
    out: str | None = option(None, "default RUN_DIR/report.html")
    device: str = option("auto", DEVICE_HELP)
    LOWS = {}


# the largest input side an export is checked at (two images through the net): the
# 4096-pixel images of the largest store a mean image records
MAX_INPUT_SIZE = 4096


@dataclass
class ExportConfig(_Checked):
    """What `alexnet export` is asked to do; each field is also its flag."""

    ckpt: str = option(help=WEIGHTS_HELP)
    out: str | None = option(None, "the file to write (its suffix picks the format)")
    onnx: str | None = option(None, "the same as --out FILE --format onnx", metavar="FILE")
    format: str = option("auto", "the format (auto: by the suffix)", ("auto", *EXPORT_FORMATS))
    input_size: int | None = option(
        None, "side of the square input (default: the net's, 224 or 227)"
    )
    precision: str = option(
        "fp32",
        "the file's weights and arithmetic (no auto: a file outlives the CPU it was made "
        "on); ONNX takes fp32 or fp16, onnxruntime having no bf16 convolution",
        EXPORT_PRECISIONS,
    )
    LOWS = {"input_size": 1}

    def check(self) -> None:
        super().check()
        if self.input_size is not None and self.input_size > MAX_INPUT_SIZE:
            raise ValueError(
                f"--input-size {self.input_size} is larger than {MAX_INPUT_SIZE}: the "
                "exporter's check runs the net on two images of that side"
            )
        if bool(self.out) == bool(self.onnx):
            raise ValueError("give the file to write: --out FILE (or --onnx FILE)")


@dataclass
class UnitsConfig(_Checked):
    """What `alexnet units` is asked to do; each field is also its flag."""

    weights: str = option(help=WEIGHTS_HELP, metavar="CKPT")
    data: str = option(help="a prepared store, or a folder of images", flag="--data")
    layer: str = option(
        help="one layer as `alexnet features` names it: conv1 ... fc8, conv2.tower0, "
        "conv5:pre, features.pool5",
        flag="--layer",
    )
    out: str = option(help="the figure: .png, or .html (the figure and the table)", flag="--out")
    units: str = option("0-15", "the units: 3, 0-15 or 3,7,10-12")
    top: int = option(9, "images per unit (at most 100)")
    split: str = option("val", "the store's split, with a store")
    whole: bool = option(False, "show the whole input with the patch outlined")
    batch_size: int = option(64, "images per forward pass")
    device: str = option("auto", DEVICE_HELP)
    precision: str = option("fp32", PRECISION_HELP, PRECISIONS)
    LOWS = {"top": 1, "batch_size": 1}


@dataclass
class ExplainConfig(_Checked):
    """What `alexnet explain` is asked to do; each field is also its flag."""

    weights: str = option(help=WEIGHTS_HELP, metavar="CKPT")
    images: list[str] = option(help="image files", metavar="IMAGE")
    out: str = option(help="the figure (PNG): each image with its map over it", flag="--out")
    method: str = option(
        "occlusion",
        "occlusion: a grey square slid over the image (Zeiler and Fergus); gradcam and "
        "integrated-gradients: captum's (pip install 'alexnet[explain]')",
        ("occlusion", "gradcam", "integrated-gradients"),
    )
    target: str = option(
        "top", "the class explained: top (the net's first guess), a name or an index"
    )
    layer: str = option("conv5", "gradcam: the convolutional layer")
    size: int = option(32, "occlusion: the grey square's side, in input pixels")
    stride: int = option(16, "occlusion: pixels between the square's positions")
    device: str = option("auto", DEVICE_HELP)
    LOWS = {"size": 1, "stride": 1}
