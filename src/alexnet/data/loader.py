"""Feeding the net: seeded epoch order, worker processes reading uint8 batches into
pinned memory, and the batched augmentation of augment.py on the training device.

Determinism and resumption: the epoch's order comes from a generator seeded with
(seed, epoch), and each step's augmentation draws from one seeded with (seed, epoch,
step). Nothing depends on how many batches came before, so a run resumed at step k
of an epoch sees exactly the batches and crops an uninterrupted run would.

Data parallelism: the sampler follows torch's DistributedSampler contract
(num_replicas, rank, set_epoch), but splits each *global* batch of
batch_size * num_replicas consecutive indices of one permutation, and the
augmentation is drawn for the global batch and sliced per rank. N processes therefore
see exactly what one process with the global batch sees.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..options import DECODES, check_choice
from ..runtime.seeds import STREAM_AUGMENT, generator_for
from .augment import BatchTransform, CropParams, center_params, draw_train_params
from .store import StoreSplit, decode_jpeg_batch


class EpochSampler(torch.utils.data.Sampler):
    """Yields this rank's index list for each step of an epoch."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if batch_size * num_replicas > n and drop_last:
            raise ValueError(
                f"global batch {batch_size * num_replicas} is larger than the {n} images"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch, self.start_step = 0, 0

    @property
    def global_batch(self) -> int:
        """Images per step over all processes."""
        return self.batch_size * self.num_replicas

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Which epoch the next iteration yields, and from which step (a resume)."""
        self.epoch, self.start_step = epoch, start_step

    def steps_per_epoch(self) -> int:
        """Steps in one epoch (a last partial batch is dropped when training)."""
        if self.drop_last:
            return self.n // self.global_batch
        return math.ceil(self.n / self.global_batch)

    def order(self) -> torch.Tensor:
        """The epoch's permutation of the split, from (seed, epoch) alone."""
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=generator_for(self.seed, self.epoch))

    def rank_slice(self, global_size: int) -> tuple[int, int]:
        """This rank's [start, stop) within a global batch of global_size."""
        bounds = np.linspace(0, global_size, self.num_replicas + 1).round().astype(int)
        return int(bounds[self.rank]), int(bounds[self.rank + 1])

    def __iter__(self):
        """Yields (epoch, step, this rank's indices): the step keys the augmentation."""
        order = self.order()
        for step in range(self.start_step, self.steps_per_epoch()):
            batch = order[step * self.global_batch : (step + 1) * self.global_batch]
            lo, hi = self.rank_slice(len(batch))
            yield self.epoch, step, batch[lo:hi].tolist()

    def __len__(self) -> int:
        return self.steps_per_epoch() - self.start_step


class _Batches(Dataset):
    """dataset[(epoch, step, indices)] -> (images, labels (B,)): one read per step.

    images are the stored uint8 (B, H, W, 3), or, given a transform, what it makes of
    them (the CPU training path augments in the workers, in parallel); with `encoded`,
    the batch's JPEG bytes and their lengths, for decoding on the device."""

    def __init__(self, split: StoreSplit, transform=None, encoded: bool = False):
        self.split, self.transform, self.encoded = split, transform, encoded
        self.labels = torch.from_numpy(split.labels)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key):
        epoch, step, indices = key
        if self.encoded:
            data, lengths = self.split.encoded_batch(indices)
            return (torch.from_numpy(data), torch.from_numpy(lengths)), self.labels[indices]
        images = torch.from_numpy(self.split.batch(indices))
        if self.transform is not None:
            images = self.transform(images, epoch, step)
        return images, self.labels[indices]


def make_loader(
    split: StoreSplit,
    sampler: EpochSampler,
    workers: int,
    pin_memory: bool = False,
    transform=None,
    persistent: bool = False,
    encoded: bool = False,
) -> DataLoader:
    """A DataLoader over whole batches: one read and one transfer per step."""
    return DataLoader(
        _Batches(split, transform, encoded),
        sampler=sampler,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=persistent and workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )


class StepAugment:
    """The training augmentation of one step, from (epoch, step) alone: picklable, so
    worker processes can apply it, and holding no loader."""

    def __init__(
        self,
        transform: BatchTransform,
        sampler: EpochSampler,
        size: int,
        crop: int,
        crops_flips: bool = True,
        lighting: bool = True,
    ):
        self.transform, self.crop, self.size = transform, crop, size
        # an ablation switches a part off after the same draws: every other draw is unchanged
        self.crops_flips, self.lighting = crops_flips, lighting
        self.seed, self.global_batch, self.n = sampler.seed, sampler.global_batch, sampler.n
        self.rank_slice = sampler.rank_slice

    def params(self, epoch: int, step: int, local_batch: int) -> CropParams:
        """This process's crop, flip and lighting draws for one step."""
        g = generator_for(self.seed, epoch, step, STREAM_AUGMENT)
        global_size = min(self.global_batch, self.n - step * self.global_batch)
        p = draw_train_params(global_size, g, self.size, self.crop)
        if not self.crops_flips:  # the centre crop, as at test time
            c = center_params(global_size, self.size, self.crop)
            p = CropParams(c.top, c.left, c.flip, p.alpha)
        if not self.lighting:
            p.alpha = None
        lo, hi = self.rank_slice(global_size)
        assert hi - lo == local_batch
        return p.slice(lo, hi)

    def __call__(self, images: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        return self.transform(images, self.params(epoch, step, len(images)), self.crop)


def decode_where(decode: str, store_format: str, device: torch.device) -> str:
    """Where a JPEG store's images are decoded: "device" (nvjpeg, batched) by default on
    a GPU, whose decoder outruns a few CPU workers many times over; else in the workers.
    Raw stores need no decoding: always "workers" (a plain read)."""
    check_choice("decode", decode, DECODES)
    if store_format != "jpeg":
        return "workers"
    if decode == "auto":
        return "device" if device.type == "cuda" else "workers"
    return decode


class TrainFeed:
    """Iterates (input, labels, step) for one epoch: augmented, on the device."""

    def __init__(
        self,
        split: StoreSplit,
        transform: BatchTransform,
        sampler: EpochSampler,
        workers: int = 1,
        crop: int | None = None,
        decode: str = "auto",
        crops_flips: bool = True,
        lighting: bool = True,
    ):
        self.split, self.sampler, self.workers = split, sampler, workers
        crop = crop or transform.crop  # the net's input side (224; Caffe's net 227)
        self.augment = StepAugment(transform, sampler, split.size, crop, crops_flips, lighting)
        self.device = transform.device
        self.decode = decode_where(decode, split.format, self.device)
        # On a GPU the augmentation runs there, on whole uint8 batches; on a CPU the
        # worker processes do it, in parallel with the training step.
        self.in_workers = self.device.type == "cpu" and workers > 0 and self.decode == "workers"
        self._loader = None

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch(self, epoch: int, start_step: int = 0):
        """(input, labels, step) for the steps of `epoch` from `start_step`, on the device."""
        self.sampler.set_epoch(epoch, start_step)
        if self._loader is None:  # one loader: its workers live across epochs
            self._loader = make_loader(
                self.split,
                self.sampler,
                self.workers,
                pin_memory=self.device.type == "cuda",
                transform=self.augment if self.in_workers else None,
                persistent=True,
                encoded=self.decode == "device",
            )
        for step, (images, labels) in enumerate(self._loader, start=start_step):
            if self.decode == "device":
                images = decode_jpeg_batch(*images, device=self.device)
            x = images if self.in_workers else self.augment(images, epoch, step)
            yield (
                x.to(self.device, non_blocking=True),
                labels.to(self.device, non_blocking=True),
                step,
            )


def eval_batches(
    split: StoreSplit, batch_size: int, workers: int = 0, rank: int = 0, num_replicas: int = 1
):
    """(uint8 images, labels) in store order, this rank's contiguous share of each batch."""
    sampler = EpochSampler(
        len(split), batch_size, shuffle=False, drop_last=False, num_replicas=num_replicas, rank=rank
    )
    yield from make_loader(split, sampler, workers)  # (uint8 images, labels) per batch
