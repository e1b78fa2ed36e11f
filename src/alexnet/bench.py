"""`alexnet bench`: throughput measured against a baseline in the same run.

Never a timed test: these functions only measure and report.
"""

from __future__ import annotations

import time

import torch

from .data.augment import Normalizer
from .data.loader import EpochSampler, TrainFeed
from .data.store import Store


def _rate(iterator, warmup: int, batches: int) -> float:
    """Images per second over `batches` batches after `warmup` batches."""
    it = iter(iterator)
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        x = next(it)[0]
        n += len(x)
    return n / (time.perf_counter() - t0)


def bench_data(store_path: str, source: str, workers: int = 1, batch_size: int = 64,
               batches: int = 20, warmup: int = 3) -> dict:  # fmt: skip
    """Our training feed from the store vs torchvision's usual pipeline on the originals.

    Both produce augmented float batches ready for the net, with the same worker count;
    the baseline is ImageFolder + RandomResizedCrop(224) + flip + ToTensor + Normalize.
    """
    from torchvision import datasets, transforms

    store = Store(store_path)
    split = store.split("train")
    total = warmup + batches
    if len(split) < batch_size:
        raise ValueError(f"the store has {len(split)} images, fewer than one batch of {batch_size}")

    def ours():
        epoch = 0
        while True:
            sampler = EpochSampler(len(split), batch_size, seed=0)
            feed = TrainFeed(split, Normalizer.from_stats(store.stats), sampler, workers=workers)
            yield from ((x, y) for x, y, _ in feed.epoch(epoch))
            epoch += 1

    tf = transforms.Compose([
        transforms.RandomResizedCrop(224),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])  # fmt: skip
    folder = datasets.ImageFolder(source, transform=tf)

    def baseline():
        while True:
            loader = torch.utils.data.DataLoader(
                folder, batch_size=batch_size, shuffle=True, num_workers=workers,
                persistent_workers=False, drop_last=True,
            )  # fmt: skip
            yield from loader

    n_batches = min(batches, max(1, len(split) // batch_size * 4))
    ours_rate = _rate(ours(), warmup, n_batches)
    base_rate = _rate(baseline(), warmup, n_batches)
    return {
        "workers": workers,
        "batch_size": batch_size,
        "batches": n_batches,
        "store_format": store.format,
        "ours_img_s": round(ours_rate, 1),
        "baseline_img_s": round(base_rate, 1),
        "ratio": round(ours_rate / base_rate, 2),
        "threads": torch.get_num_threads(),
        "total_batches_each": total,
    }
