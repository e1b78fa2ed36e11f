"""What the benchmarks share: a timed training step on fixed data, round-robin timing,
the feeds they time, and the result base class."""

from __future__ import annotations

import time

import torch

from ..data.augment import CROP, BatchTransform
from ..data.loader import EpochSampler, TrainFeed
from ..data.store import Store
from ..kernels.plan import Plan
from ..runtime.device import autocast, synchronizer
from ..train.optim import PaperSGD
from ..train.step import training_step
from .result import BenchResult  # noqa: F401  (re-exported for the benchmarks)


class Runner:
    """One model's training (or inference) step on fixed random data, timed per call,
    computed as the execution plan says (the verbs' own plan: kernels, precision, how
    the weights are held), the step `alexnet train` takes."""

    def __init__(self, model, plan: Plan, batch_size: int, train: bool, compile: bool = False):
        device = torch.device(plan.device)
        model = model.to(device, memory_format=torch.channels_last)
        self.model = plan.apply(model).train(train)
        # a fixed seed: the same batch in every process (both towers of a pair need it)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch_size, 3, 224, 224, generator=g) * 60
        self.x = x.to(device).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, 1000, (batch_size,), generator=g).to(device)
        # the update `alexnet train` makes (§5's rule, weight decay included), for every
        # model alike; a small rate, so that fixed data cannot drive it to overflow
        self.opt = PaperSGD(self.model.parameters(), lr=1e-4)
        self.device, self.plan, self.train, self.batch = device, plan, train, batch_size
        if compile:
            self.model = torch.compile(self.model)

    def step(self, x=None, y=None) -> None:
        """One step on the fixed batch, or on (x, y) when given (end-to-end runs)."""
        x = self.x if x is None else x.to(self.device, non_blocking=True)
        y = self.y if y is None else y.to(self.device, non_blocking=True)
        if self.train:
            training_step(self.model, self.opt, x, y, self.plan.amp)
            return
        with torch.no_grad(), autocast(self.device, self.plan.amp):
            self.model(x)

    def rate(self, steps: int) -> float:
        """Images per second over `steps` steps, the device drained before and after."""
        sync = synchronizer(self.device)
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync()
        return self.batch * steps / (time.perf_counter() - t0)


def interleaved(runners: dict, steps: int, rounds: int) -> dict:
    """Best rate of each runner over `rounds` round-robin passes: a machine whose speed
    drifts (shared, throttled) then slows every model alike, not the last one measured."""
    for r in runners.values():
        r.step()  # warm-up
    best = dict.fromkeys(runners, 0.0)
    for _ in range(rounds):
        for name, r in runners.items():
            best[name] = max(best[name], r.rate(steps))
    return best


def train_images(store: Store, batch_size: int) -> int:
    """The store's training image count; ValueError when it holds less than one batch,
    or images smaller than the paper net's crop."""
    store.require_crop(CROP, "paper")
    n = len(store.split("train"))
    if n < batch_size:
        raise ValueError(f"the store has {n} training images, fewer than one batch of {batch_size}")
    return n


def store_batches(
    store: Store, batch_size: int, workers: int, device: torch.device, decode: str = "auto"
):
    """Our training feed over the store's train split, epoch after epoch, forever."""
    split = store.split("train")
    sampler = EpochSampler(len(split), batch_size, seed=0)
    feed = TrainFeed(
        split,
        BatchTransform.from_stats(store.stats, device),
        sampler,
        workers=workers,
        decode=decode,
    )
    epoch = 0
    while True:
        yield from ((x, y) for x, y, _ in feed.epoch(epoch))
        epoch += 1


def examples_batches(source: str, batch_size: int, workers: int, pin_memory: bool = False):
    """The pytorch/examples ImageNet pipeline over the original files, forever:
    ImageFolder + RandomResizedCrop(224) + flip + ToTensor + Normalize in workers."""
    from torchvision import datasets, transforms

    tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    loader = torch.utils.data.DataLoader(
        datasets.ImageFolder(source, transform=tf),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        drop_last=True,
        pin_memory=pin_memory,
    )
    while True:
        yield from loader


def check_counts(
    positive: dict[str, int] | None = None, non_negative: dict[str, int] | None = None
) -> None:
    """Refuse a zero step count or a negative warm-up: the figures would mean nothing."""
    for name, value in (positive or {}).items():
        if value < 1:
            raise ValueError(f"--{name} must be at least 1, not {value}")
    for name, value in (non_negative or {}).items():
        if value < 0:
            raise ValueError(f"--{name} must be non-negative, not {value}")


def check_fits(batch_size: int, device: torch.device, models: int = 1) -> None:
    """Estimate a training step's memory before allocating it, and refuse one that
    cannot fit: the paper net keeps about 5 MB of activations per image forward, four
    times that with gradients, saved tensors and workspace; each model 0.5 GB of
    weights and momentum."""
    need = models * (batch_size * 20e6 + 0.5e9)
    if device.type == "cuda":
        have = torch.cuda.mem_get_info(device)[0]
    else:
        have = _available_host_memory()
    if have and need > have:
        raise ValueError(
            f"--batch-size {batch_size} needs about {need / 1e9:.0f} GB for "
            f"{models} model(s); {device} has {have / 1e9:.1f} GB free"
        )


def _available_host_memory() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
