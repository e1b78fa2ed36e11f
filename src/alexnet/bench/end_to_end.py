"""`alexnet bench train --data STORE`: training img/s from a prepared store, everything
included (reading, decoding, augmentation, the step), beside its two bounds measured
in the same run, and torchvision's alexnet fed by the pytorch/examples pipeline."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch

from ..data.loader import decode_where
from ..data.store import Store
from ..kernels.plan import resolve_plan
from ..model import create_model
from ..runtime.allocator import allocator_tuned
from ..runtime.device import pick_device, precision_name, synchronizer
from .common import (
    BenchResult,
    Runner,
    check_counts,
    check_fits,
    examples_batches,
    store_batches,
    train_images,
)


@dataclass
class EndToEndBench(BenchResult):
    device: str
    gpu: str | None
    batch_size: int
    steps: int
    warmup: int
    workers: int
    precision: str
    compile: bool
    store_format: str
    decode: str
    threads: int
    malloc_tuned: bool
    feed_img_s: float  # reading, decoding and augmenting alone
    step_img_s: float  # the training step alone, on resident data
    ours_img_s: float
    bound: str  # "data" or "compute": the slower of the two above
    fraction_of_bound: float
    torchvision_img_s: float | None = None
    ratio_vs_torchvision: float | None = None

    def lines(self) -> list[str]:
        where = self.gpu or f"{self.threads} threads"
        out = [
            f"end to end from a {self.store_format} store (decoded in the {self.decode}), "
            f"{self.device} ({where}), batch {self.batch_size}, {self.precision}, "
            f"{self.workers} workers, {self.steps} timed steps"
            f"{', compiled' if self.compile else ''}",
            f"  feed alone (read, decode, augment):  {self.feed_img_s:10.2f} img/s",
            f"  step alone (data resident):          {self.step_img_s:10.2f} img/s",
            f"  ours, end to end:                    {self.ours_img_s:10.2f} img/s "
            f"({self.fraction_of_bound:.0%} of the {self.bound} bound)",
        ]
        if self.torchvision_img_s is not None:
            out.append(
                f"  torchvision + examples pipeline:     {self.torchvision_img_s:10.2f} "
                f"img/s (ours / it: {self.ratio_vs_torchvision:.2f}x)"
            )
        return out


class _Timer:
    """Times `steps` steps of a pipeline after `warmup` untimed ones."""

    def __init__(self, device, batch_size: int, steps: int, warmup: int):
        self.sync, self.batch_size, self.steps, self.warmup = (
            synchronizer(device),
            batch_size,
            steps,
            warmup,
        )

    def __call__(self, batches, run) -> float:
        for _ in range(self.warmup):
            run(*next(batches))
        self.sync()
        t0 = time.perf_counter()
        for _ in range(self.steps):
            run(*next(batches))
        self.sync()
        rate = self.batch_size * self.steps / (time.perf_counter() - t0)
        if hasattr(batches, "close"):
            batches.close()  # its loader's workers stop before the next pipeline is timed
        return round(rate, 2)


def bench_end_to_end(
    store_path: str,
    source: str | None = None,
    device: str = "auto",
    batch_size: int = 64,
    steps: int = 20,
    warmup: int = 3,
    workers: int = 2,
    precision: str = "auto",
    compile: bool = False,
    decode: str = "auto",
) -> EndToEndBench:
    """One pipeline at a time, not interleaved: an idle loader fills its queue, and a
    full queue would flatter whichever pipeline the data bounds."""
    check_counts({"batch-size": batch_size, "steps": steps}, {"warmup": warmup, "workers": workers})
    dev = pick_device(device)
    plan = resolve_plan(dev, precision, compile=compile)
    store = Store(store_path)
    train_images(store, batch_size)
    check_fits(batch_size, dev)
    classes = max(1000, store.num_classes)  # ImageNet's fc8 cost even on a small store
    torch.manual_seed(0)
    timed = _Timer(dev, batch_size, steps, warmup)

    def feed():
        return store_batches(store, batch_size, workers, dev, decode)

    runner = functools.partial(Runner, batch_size=batch_size, train=True, compile=compile)
    ours = runner(create_model("paper", num_classes=classes), plan)
    feed_rate = timed(feed(), lambda x, y: None)
    step_rate = timed(iter(lambda: (None, None), 0), ours.step)
    ours_rate = timed(feed(), ours.step)
    del ours  # one model in memory at a time
    result = EndToEndBench(
        device=str(dev),
        gpu=torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        batch_size=batch_size,
        steps=steps,
        warmup=warmup,
        workers=workers,
        precision=precision_name(plan.amp),
        compile=compile,
        store_format=store.format,
        decode=decode_where(decode, store.format, dev),
        threads=torch.get_num_threads(),
        malloc_tuned=allocator_tuned(),
        feed_img_s=feed_rate,
        step_img_s=step_rate,
        ours_img_s=ours_rate,
        bound="data" if feed_rate < step_rate else "compute",
        fraction_of_bound=round(ours_rate / min(feed_rate, step_rate), 3),
    )
    if source is not None:
        tv = runner(
            _torchvision_net(classes), resolve_plan(dev, precision, "none", compile=compile)
        )
        batches = examples_batches(source, batch_size, workers, pin_memory=dev.type == "cuda")
        result.torchvision_img_s = timed(batches, tv.step)
        result.ratio_vs_torchvision = round(ours_rate / result.torchvision_img_s, 3)
    return result


def _torchvision_net(classes: int):
    import torchvision

    return torchvision.models.alexnet(num_classes=classes)
