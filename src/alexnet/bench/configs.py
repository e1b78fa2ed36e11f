"""What `alexnet bench prepare`, `bench data` and `bench train` are asked to do, each
option defined once: the command line builds their flags from these fields, and the
benchmarks take them as keywords. Importable without torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import (
    DECODES,
    DEVICE_HELP,
    KERNELS_HELP,
    MODEL_PARALLEL,
    PRECISIONS,
    STORE_FORMATS,
    check_at_least,
    check_choices,
    option,
)


@dataclass
class BenchPrepareConfig:
    """`alexnet bench prepare`; each field is also its flag."""

    src: str = option(help="an image source, as prepare takes it")
    workers: int = option(0, "worker processes (0: one per core)")
    format: str = option("jpeg", "the store's format", STORE_FORMATS)

    def check(self) -> None:
        check_choices(self)
        check_at_least(self, workers=0)


@dataclass
class BenchDataConfig:
    """`alexnet bench data`; each field is also its flag."""

    data: str = option(help="a prepared store", flag="--data")
    source: str = option(help="the original image folder of that store", flag="--source")
    workers: int = option(1, "loader processes (both pipelines)")
    batch_size: int = option(64, "images per batch")
    batches: int = option(20, "timed batches each")

    def check(self) -> None:
        check_at_least(self, workers=0, batch_size=1, batches=1)


@dataclass
class BenchTrainConfig:
    """`alexnet bench train`: the step alone (the default), end to end from a store
    (--data), or the two towers on two processes (--model-parallel 2)."""

    device: str = option("auto", DEVICE_HELP)
    batch_size: int = option(64, "images per step")
    steps: int | None = option(None, "steps per timed pass (default 2; end to end: 20 in one pass)")
    rounds: int = option(3, "round-robin passes over the models; each keeps its best")
    precision: str = option("auto", "autocast precision (auto: as train resolves it)", PRECISIONS)
    compile: bool = option(False, "torch.compile every model")
    kernels: str = option("auto", KERNELS_HELP)
    profile: bool = option(False, "name the top operators")
    model_parallel: int = option(
        1, "2: the paper's two towers on two processes vs one device", MODEL_PARALLEL
    )
    data: str | None = option(
        None,
        "end to end: time the whole path from this store, with the feed alone and the step "
        "alone as its bounds",
        metavar="STORE",
    )
    source: str | None = option(
        None,
        "end to end: the store's original image folder, adding torchvision's alexnet fed by "
        "the pytorch/examples pipeline",
        metavar="FOLDER",
    )
    workers: int = option(2, "end to end: loader processes (both pipelines)")
    decode: str = option("auto", "end to end: where a JPEG store is decoded", DECODES)
    warmup: int = option(3, "end to end: untimed steps first")

    def check(self) -> None:
        check_choices(self)
        check_at_least(self, batch_size=1, steps=1, rounds=1, workers=0, warmup=0)
        if self.source and not self.data:
            raise ValueError("--source needs --data (the store prepared from it)")
