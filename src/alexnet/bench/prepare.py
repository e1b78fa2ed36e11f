"""`alexnet bench prepare SRC`: how prepare scales with cores. It prepares SRC into a
temporary store and measures, with getrusage, the CPU time per image of the
coordinating process and of its workers: their ratio is how many workers one
coordinator can keep busy. Also the coordinator's peak memory."""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass

from ..data.config import PrepareConfig
from ..data.prepare import prepare
from .result import BenchResult


@dataclass
class PrepareBench(BenchResult):
    images: int
    workers: int
    format: str
    seconds: float
    img_s: float
    coordinator_cpu_ms_per_image: float
    workers_cpu_ms_per_image: float
    workers_per_coordinator: float  # workers' CPU / coordinator's: how many it keeps busy
    coordinator_peak_rss_mib: float

    def lines(self) -> list[str]:
        return [
            f"prepare {self.images} images, {self.workers} workers, {self.format} store: "
            f"{self.seconds:.1f} s, {self.img_s:.1f} img/s",
            f"  CPU per image: coordinator {self.coordinator_cpu_ms_per_image:.2f} ms, "
            f"workers {self.workers_cpu_ms_per_image:.2f} ms",
            f"  one coordinator keeps {self.workers_per_coordinator:.1f} workers busy; its peak "
            f"RSS {self.coordinator_peak_rss_mib:.0f} MiB",
        ]


def _cpu(usage) -> float:
    return usage.ru_utime + usage.ru_stime


def bench_prepare(src: str, workers: int = 0, fmt: str = "jpeg") -> PrepareBench:
    """Peak RSS is the process's whole life: run it in a fresh process for a clean figure
    (the command line does)."""
    workers = workers or os.cpu_count() or 1
    out = tempfile.mkdtemp(prefix="alexnet-bench-prepare-")
    try:
        self0 = _cpu(resource.getrusage(resource.RUSAGE_SELF))
        kids0 = _cpu(resource.getrusage(resource.RUSAGE_CHILDREN))
        t0 = time.perf_counter()
        summary = prepare(
            PrepareConfig(src=src, out=f"{out}/store", workers=workers, format=fmt, progress=False)
        )
        seconds = time.perf_counter() - t0
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = _cpu(resource.getrusage(resource.RUSAGE_CHILDREN)) - kids0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    n = sum(summary["written"].values()) + len(summary["skipped"])
    coordinator = (_cpu(me) - self0) / n * 1000
    return PrepareBench(
        images=n,
        workers=workers,
        format=summary["format"],
        seconds=round(seconds, 2),
        img_s=round(n / seconds, 1),
        coordinator_cpu_ms_per_image=round(coordinator, 3),
        workers_cpu_ms_per_image=round(kids / n * 1000, 3),
        workers_per_coordinator=round(kids / n * 1000 / coordinator, 1),
        coordinator_peak_rss_mib=round(me.ru_maxrss / 1024, 1),
    )
