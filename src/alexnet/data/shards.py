"""Making a store's shards in parallel: the workers do all the work on the pixels, the
coordinating process only writes what they send.

Each task is a chunk of at most CHUNK images of one shard. A worker decodes, resizes
and crops them (§2), encodes them (JPEG shards) or lays out their bytes (raw shards),
and, for the training split, adds their statistics into exact integer sums: the
mean image's per-pixel sums and the RGB sums and products behind the PCA of §4.1.
Integer sums do not depend on the order they are added in, so any number of workers
gives the same store, to the byte.

The coordinator keeps at most WINDOW_PER_WORKER chunks per worker in flight, so its
memory is bounded whatever the dataset size, and the workers never wait for a shard to
be written: they are already on the next chunks.
"""

from __future__ import annotations

import os
import signal
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..runtime.files import atomic_save_npz, atomic_write, atomic_write_bytes, atomic_write_json
from .images import BadImage, load_for_store, resize_center_crop
from .sources import Item, read_member
from .store import encode_jpeg

CHUNK = 32  # images per task
WINDOW_PER_WORKER = 2  # chunks in flight per worker


@dataclass
class StatSums:
    """Exact integer sums over images: per pixel (the mean image), and over all pixels
    the RGB sums and the 3x3 sums of products (the covariance). Values in 0..255."""

    image_sum: np.ndarray  # (H, W, 3) int64
    rgb_sum: np.ndarray = field(default_factory=lambda: np.zeros(3, np.int64))
    rgb_outer: np.ndarray = field(default_factory=lambda: np.zeros((3, 3), np.int64))
    count: int = 0

    @classmethod
    def zeros(cls, size: int) -> StatSums:
        return cls(np.zeros((size, size, 3), np.int64))

    def add_image(self, img: np.ndarray) -> None:
        self.image_sum += img
        # float64 is exact here: every product and sum is an integer below 2^53
        x = img.reshape(-1, 3).astype(np.float64)
        self.rgb_sum += x.sum(axis=0).astype(np.int64)
        self.rgb_outer += (x.T @ x).astype(np.int64)
        self.count += 1

    def add(self, other: StatSums) -> None:
        self.image_sum += other.image_sum
        self.rgb_sum += other.rgb_sum
        self.rgb_outer += other.rgb_outer
        self.count += other.count

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "image_sum": self.image_sum,
            "rgb_sum": self.rgb_sum,
            "rgb_outer": self.rgb_outer,
            "count": np.array(self.count, np.int64),
        }

    @classmethod
    def from_arrays(cls, a) -> StatSums:
        return cls(a["image_sum"], a["rgb_sum"], a["rgb_outer"], int(a["count"]))


def load_item(item: Item, size: int) -> np.ndarray:
    """One item -> the store's (size, size, 3) uint8 image. Raises BadImage."""
    if item.array is not None:
        from PIL import Image

        return resize_center_crop(Image.fromarray(item.array).convert("RGB"), size)
    if item.member is not None:
        return load_for_store(read_member(item.member), size)
    return load_for_store(item.path, size)


def process_chunk(args) -> tuple[list[tuple[bytes | None, str | None]], StatSums | None]:
    """In a worker: a chunk of items -> [(stored bytes, None) or (None, reason)], and
    the chunk's statistic sums (training split)."""
    items, size, fmt, with_stats = args
    sums = StatSums.zeros(size) if with_stats else None
    out = []
    for item in items:
        try:
            img = load_item(item, size)
        except BadImage as e:
            out.append((None, str(e)))
            continue
        except MemoryError:
            out.append((None, "too large to decode"))
            continue
        if sums is not None:
            sums.add_image(img)
        out.append((encode_jpeg(img) if fmt == "jpeg" else img.tobytes(), None))
    return out, sums


def worker_init() -> None:
    """Each prepare worker: one thread (the pool is the parallelism), Ctrl-C left to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@dataclass
class ShardJob:
    split: str
    index: int
    items: list[Item]


def make_shards(
    pool,
    workers: int,
    jobs: list[ShardJob],
    work: Path,
    size: int,
    fmt: str,
    on_images=lambda n: None,
) -> None:
    """Every job's shard written under `work`, chunks processed by `pool`."""
    tasks = [(job, start) for job in jobs for start in range(0, len(job.items), CHUNK)]
    window: deque = deque()
    parts: list = []  # the chunks of the shard being assembled

    def take() -> None:
        (job, start), pending = window.popleft()
        parts.append(pending.get())
        on_images(min(CHUNK, len(job.items) - start))
        if start + CHUNK >= len(job.items):  # the shard's last chunk: write it
            write_shard(work, job, parts, size, fmt)
            parts.clear()

    for job, start in tasks:
        args = (job.items[start : start + CHUNK], size, fmt, job.split == "train")
        window.append(((job, start), pool.apply_async(process_chunk, (args,))))
        if len(window) >= WINDOW_PER_WORKER * workers:
            take()
    while window:
        take()


def write_shard(work: Path, job: ShardJob, parts: list, size: int, fmt: str) -> None:
    """The shard's data file, its statistics (training split), then its JSON, which is
    written last and marks the shard done."""
    results = [r for chunk, _ in parts for r in chunk]
    kept = [
        (it, data) for it, (data, _) in zip(job.items, results, strict=True) if data is not None
    ]
    skipped = [
        {"path": it.path or it.key, "reason": reason}
        for it, (data, reason) in zip(job.items, results, strict=True)
        if data is None
    ]
    base = work / job.split / f"{job.index:05d}"
    meta = {
        "keys": [it.key for it, _ in kept],
        "labels": [it.label for it, _ in kept],
        "skipped": skipped,
    }
    if kept and fmt == "raw":
        atomic_write(f"{base}.npy", lambda fh: _write_npy(fh, [d for _, d in kept], size))
    elif kept:
        meta["offsets"] = np.concatenate([[0], np.cumsum([len(d) for _, d in kept])]).tolist()
        atomic_write_bytes(f"{base}.jpg", b"".join(d for _, d in kept))
    if kept and job.split == "train":
        total = StatSums.zeros(size)
        for _, sums in parts:
            total.add(sums)
        atomic_save_npz(f"{base}.stats.npz", **total.arrays())
    atomic_write_json(f"{base}.json", meta)


def _write_npy(fh, images: list[bytes], size: int) -> None:
    """A (N, size, size, 3) uint8 .npy, image after image: no copy of the whole shard."""
    header = {"descr": "|u1", "fortran_order": False, "shape": (len(images), size, size, 3)}
    np.lib.format.write_array_header_1_0(fh, header)
    for data in images:
        fh.write(data)
