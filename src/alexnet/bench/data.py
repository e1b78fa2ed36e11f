"""`alexnet bench data`: our training feed from a store vs torchvision's usual pipeline
on the original files, with the same worker count."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..data.store import Store
from .common import BenchResult, check_counts, examples_batches, store_batches, train_images


@dataclass
class DataBench(BenchResult):
    workers: int
    batch_size: int
    batches: int  # timed per pipeline (clipped to a few passes over a small store)
    total_batches_each: int  # with the warm-up
    store_format: str
    ours_img_s: float
    baseline_img_s: float
    ratio: float
    threads: int

    def lines(self) -> list[str]:
        return [
            f"workers {self.workers}, batch {self.batch_size}, store {self.store_format}",
            f"  ours (store + batched augmentation):   {self.ours_img_s:8.1f} img/s",
            f"  torchvision ImageFolder pipeline:      {self.baseline_img_s:8.1f} img/s",
            f"  ratio: {self.ratio:.2f}x",
        ]


def _rate(iterator, warmup: int, batches: int) -> float:
    """Images per second over `batches` batches after `warmup` batches."""
    it = iter(iterator)
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        n += len(next(it)[0])
    return n / (time.perf_counter() - t0)


def bench_data(
    store_path: str,
    source: str,
    workers: int = 1,
    batch_size: int = 64,
    batches: int = 20,
    warmup: int = 3,
) -> DataBench:
    """Both pipelines produce augmented float batches ready for the net; the baseline
    is ImageFolder + RandomResizedCrop(224) + flip + ToTensor + Normalize."""
    check_counts({"batches": batches}, {"warmup": warmup, "workers": workers})
    store = Store(store_path)
    n_batches = min(batches, max(1, train_images(store, batch_size) // batch_size * 4))
    ours = _rate(store_batches(store, batch_size, workers, torch.device("cpu")), warmup, n_batches)
    base = _rate(examples_batches(source, batch_size, workers), warmup, n_batches)
    ours, base = round(ours, 1), round(base, 1)
    return DataBench(
        workers,
        batch_size,
        n_batches,
        warmup + n_batches,
        store.format,
        ours,
        base,
        round(ours / base, 2),
        torch.get_num_threads(),
    )  # ratio as printed
