"""`alexnet bench`: throughput measured against a baseline in the same run.

Never a timed test: these functions only measure and report.
"""

from __future__ import annotations

import time

import torch

from .allocator import allocator_tuned
from .data.augment import Normalizer
from .data.loader import EpochSampler, TrainFeed, decode_where
from .data.store import Store


def _precision_name(amp: torch.dtype | None) -> str:
    return str(amp).replace("torch.", "") if amp else "fp32"


def _synchronizer(dev: torch.device):
    """What waits for the device's queued work, so a timer stops when the work does."""
    return torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)


def _train_images(store: Store, batch_size: int) -> int:
    n = len(store.split("train"))
    if n < batch_size:
        raise ValueError(f"the store has {n} training images, fewer than one batch of "
                         f"{batch_size}")  # fmt: skip
    return n


def _store_batches(store: Store, batch_size: int, workers: int, device: torch.device,
                   decode: str = "auto"):  # fmt: skip
    """Our training feed over the store's train split, epoch after epoch, forever."""
    split = store.split("train")
    sampler = EpochSampler(len(split), batch_size, seed=0)
    feed = TrainFeed(split, Normalizer.from_stats(store.stats, device), sampler, workers=workers,
                     decode=decode)  # fmt: skip
    epoch = 0
    while True:
        yield from ((x, y) for x, y, _ in feed.epoch(epoch))
        epoch += 1


def _examples_batches(source: str, batch_size: int, workers: int, pin_memory: bool = False):
    """The pytorch/examples ImageNet pipeline over the original files, forever:
    ImageFolder + RandomResizedCrop(224) + flip + ToTensor + Normalize in workers."""
    from torchvision import datasets, transforms

    tf = transforms.Compose([
        transforms.RandomResizedCrop(224),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])  # fmt: skip
    loader = torch.utils.data.DataLoader(
        datasets.ImageFolder(source, transform=tf), batch_size=batch_size, shuffle=True,
        num_workers=workers, persistent_workers=workers > 0, drop_last=True,
        pin_memory=pin_memory,
    )  # fmt: skip
    while True:
        yield from loader


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
    store = Store(store_path)
    n_batches = min(batches, max(1, _train_images(store, batch_size) // batch_size * 4))
    ours = _store_batches(store, batch_size, workers, torch.device("cpu"))
    ours_rate = _rate(ours, warmup, n_batches)
    base_rate = _rate(_examples_batches(source, batch_size, workers), warmup, n_batches)
    result = {
        "workers": workers,
        "batch_size": batch_size,
        "batches": n_batches,
        "store_format": store.format,
        "ours_img_s": round(ours_rate, 1),
        "baseline_img_s": round(base_rate, 1),
        "threads": torch.get_num_threads(),
        "total_batches_each": warmup + n_batches,
    }
    result["ratio"] = round(result["ours_img_s"] / result["baseline_img_s"], 2)  # as printed
    return result


def naive_paper_model(num_classes: int = 1000) -> torch.nn.Module:
    """The paper net as most reimplementations write it: nn.LocalResponseNorm (with
    alpha multiplied by n to undo its division, over all maps at once) and
    nn.Conv2d(groups=2)."""
    from torch import nn

    from .model import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE, create_model

    model = create_model("paper", num_classes=num_classes)
    for name in ("norm1", "norm2"):
        setattr(model.features, name,
                nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA * LRN_SIZE, beta=LRN_BETA, k=LRN_K))  # fmt: skip
    return model


class _Runner:
    """One model's training (or inference) step on fixed random data, timed per call."""

    def __init__(self, model, device, batch_size, amp, train: bool):
        self.model = model.to(device, memory_format=torch.channels_last).train(train)
        # a fixed seed: the same batch in every process (both towers of a pair need it)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch_size, 3, 224, 224, generator=g) * 60
        self.x = x.to(device).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, 1000, (batch_size,), generator=g).to(device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-4, momentum=0.9)
        self.device, self.amp, self.train, self.batch = device, amp, train, batch_size

    def step(self, x=None, y=None) -> None:
        """One step on the fixed batch, or on (x, y) when given (end-to-end runs)."""
        from torch import nn

        x = self.x if x is None else x.to(self.device, non_blocking=True)
        y = self.y if y is None else y.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            if self.train:
                loss = nn.functional.cross_entropy(self.model(x).float(), y)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
            else:
                with torch.no_grad():
                    self.model(x)

    def rate(self, steps: int) -> float:
        sync = _synchronizer(self.device)
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync()
        return self.batch * steps / (time.perf_counter() - t0)


def _interleaved(runners: dict, steps: int, rounds: int) -> dict:
    """Best rate of each runner over `rounds` round-robin passes: a machine whose speed
    drifts (shared, throttled) then slows every model alike, not the last one measured."""
    for r in runners.values():
        r.step()  # warm-up
    best = dict.fromkeys(runners, 0.0)
    for _ in range(rounds):
        for name, r in runners.items():
            best[name] = max(best[name], r.rate(steps))
    return best


def bench_train(device: str = "auto", batch_size: int = 64, steps: int = 2,
                precision: str = "auto", compile: bool = False, profile: bool = False,
                rounds: int = 3) -> dict:  # fmt: skip
    """Training (and inference) img/s of our paper model vs (a) the naive eager paper
    model and (b) torchvision's alexnet, measured in the same run, same settings."""
    import torchvision

    from .model import create_model
    from .train.loop import autocast_dtype, pick_device

    dev = pick_device(device)
    amp = autocast_dtype(precision, dev)
    torch.manual_seed(0)
    builders = {
        "ours": lambda: create_model("paper"),
        "naive": naive_paper_model,
        "torchvision": lambda: torchvision.models.alexnet(),
        "no_lrn": lambda: create_model("paper", lrn=False),  # the bound for any LRN
    }
    result = {"device": str(dev), "batch_size": batch_size, "steps": steps, "rounds": rounds,
              "precision": _precision_name(amp),
              "compile": compile, "threads": torch.get_num_threads(),
              "malloc_tuned": allocator_tuned()}  # fmt: skip
    if dev.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(dev)
    for train in (True, False):
        runners = {name: _Runner(build(), dev, batch_size, amp, train)
                   for name, build in builders.items()}  # fmt: skip
        if compile:
            for r in runners.values():
                r.model = torch.compile(r.model)
        suffix = "_img_s" if train else "_infer_img_s"
        for name, rate in _interleaved(runners, steps, rounds).items():
            result[name + suffix] = round(rate, 2)
        del runners
    result["ratio_vs_naive"] = round(result["ours_img_s"] / result["naive_img_s"], 3)
    result["ratio_vs_torchvision"] = round(result["ours_img_s"] / result["torchvision_img_s"], 3)
    # time per image spent in LRN, relative to the same net without it
    result["lrn_overhead"] = round(result["no_lrn_img_s"] / result["ours_img_s"] - 1, 3)
    if profile:
        result["top_operators"] = _profile(create_model("paper"), dev, batch_size, amp)
    return result


def bench_end_to_end(store_path: str, source: str | None = None, device: str = "auto",
                     batch_size: int = 64, steps: int = 20, warmup: int = 3, workers: int = 2,
                     precision: str = "auto", compile: bool = False,
                     decode: str = "auto") -> dict:  # fmt: skip
    """Training img/s from a prepared store, everything included: reading, decoding
    (on the GPU for JPEG stores there), augmentation, the step. Measured in the same
    run as its two bounds, the feed alone and the step alone on resident data, and,
    given the store's original folder, torchvision's alexnet fed by the
    pytorch/examples pipeline with the same workers, precision and compilation.

    One pipeline at a time, not interleaved: an idle loader fills its queue, and a
    full queue would flatter whichever pipeline the data bounds.
    """
    import torchvision

    from .model import create_model
    from .train.loop import autocast_dtype, pick_device

    dev = pick_device(device)
    amp = autocast_dtype(precision, dev)
    store = Store(store_path)
    _train_images(store, batch_size)
    classes = max(1000, store.num_classes)  # ImageNet's fc8 cost even on a small store
    torch.manual_seed(0)

    def runner(model):
        r = _Runner(model, dev, batch_size, amp, True)
        if compile:
            r.model = torch.compile(r.model)
        return r

    def timed(batches, run) -> float:
        sync = _synchronizer(dev)
        for _ in range(warmup):
            run(*next(batches))
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            run(*next(batches))
        sync()
        rate = batch_size * steps / (time.perf_counter() - t0)
        if hasattr(batches, "close"):
            batches.close()  # its loader's workers stop before the next pipeline is timed
        return rate

    def feed():
        return _store_batches(store, batch_size, workers, dev, decode)

    ours = runner(create_model("paper", num_classes=classes))
    result = {"device": str(dev), "batch_size": batch_size, "steps": steps, "warmup": warmup,
              "workers": workers, "precision": _precision_name(amp),
              "compile": compile, "store_format": store.format,
              "decode": decode_where(decode, store.format, dev),
              "threads": torch.get_num_threads(), "malloc_tuned": allocator_tuned()}  # fmt: skip
    if dev.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(dev)
    result["feed_img_s"] = round(timed(feed(), lambda x, y: None), 2)
    result["step_img_s"] = round(timed(iter(lambda: (None, None), 0), ours.step), 2)
    result["ours_img_s"] = round(timed(feed(), ours.step), 2)
    result["bound"] = "data" if result["feed_img_s"] < result["step_img_s"] else "compute"
    result["fraction_of_bound"] = round(
        result["ours_img_s"] / min(result["feed_img_s"], result["step_img_s"]), 3
    )
    if source is not None:
        del ours
        tv = runner(torchvision.models.alexnet(num_classes=classes))
        batches = _examples_batches(source, batch_size, workers, pin_memory=dev.type == "cuda")
        result["torchvision_img_s"] = round(timed(batches, tv.step), 2)
        result["ratio_vs_torchvision"] = round(
            result["ours_img_s"] / result["torchvision_img_s"], 3
        )
    return result


def _profile(model, dev, batch_size, amp, top: int = 12) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    runner = _Runner(model, dev, batch_size, amp, True)
    runner.step()
    with profile(activities=acts) as prof:
        runner.step()
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)
    return [{"op": e.key, "self_ms": round(getattr(e, key, 0) / 1000, 1), "calls": e.count}
            for e in events[:top]]  # fmt: skip


def bench_model_parallel(device: str = "auto", batch_size: int = 64, steps: int = 2,
                         precision: str = "auto", rounds: int = 3) -> dict:  # fmt: skip
    """The paper's two-tower split (§3.2) on two processes against one device training
    the whole net, with the bytes the towers exchange per step.

    With two GPUs: tower r on cuda:r (NCCL) vs the whole net on cuda:0. On a CPU: two
    gloo processes sharing the cores vs one process using them all; a comparison of
    how the split costs, not of devices.
    """
    import tempfile

    import torch.multiprocessing as mp

    from .model import create_model
    from .train.loop import autocast_dtype, pick_device

    dev = pick_device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--model-parallel 2 runs on cuda or cpu, not {dev.type}")
    if dev.type == "cuda" and torch.cuda.device_count() < 2:
        raise ValueError("--model-parallel 2 on cuda needs two GPUs; this machine has "
                         f"{torch.cuda.device_count()} (use --device cpu to measure the split "
                         "on the CPU)")  # fmt: skip
    amp = autocast_dtype(precision, dev)
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    single = _Runner(create_model("paper"), dev, batch_size, amp, True)
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/result.pt"
        args = (tmp, out, dev.type, batch_size, steps, rounds, amp, max(1, threads // 2))
        mp.spawn(_model_parallel_worker, args=args, nprocs=2, join=True)
        towers = torch.load(out, weights_only=True)
    best = _interleaved({"single": single}, steps, rounds)["single"]
    result = {
        "device": str(dev), "backend": "nccl" if dev.type == "cuda" else "gloo",
        "batch_size": batch_size, "steps": steps, "rounds": rounds,
        "precision": _precision_name(amp),
        "single_threads": threads, "tower_threads": max(1, threads // 2),
        **towers,
        "single_img_s": round(best, 2),
    }  # fmt: skip
    result["ratio_vs_single"] = round(result["model_parallel_img_s"] / best, 3)
    if dev.type == "cuda":
        result["gpus"] = [torch.cuda.get_device_name(i) for i in range(2)]
    return result


def _model_parallel_worker(rank, tmp, out, device_type, batch_size, steps, rounds, amp, threads):
    import torch.distributed as dist

    from .model import create_model
    from .parallel import TowerParallelAlexNet

    torch.set_num_threads(threads)
    if device_type == "cuda":
        torch.cuda.set_device(rank)
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{tmp}/rendezvous", rank=rank,
                            world_size=2)  # fmt: skip
    try:
        torch.manual_seed(0)
        dev = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
        tower = TowerParallelAlexNet(create_model("paper"), rank)
        runner = _Runner(tower, dev, batch_size, amp, True)
        rate = _interleaved({"towers": runner}, steps, rounds)["towers"]
        rates = [torch.zeros(1, dtype=torch.float64, device=dev) for _ in range(2)]
        dist.all_gather(rates, torch.tensor([rate], dtype=torch.float64, device=dev))
        if rank == 0:
            sent, reduced = tower.exchanged_bytes, tower.reduced_bytes
            torch.save({
                # the slower tower sets the pace of both
                "model_parallel_img_s": round(min(float(r) for r in rates), 2),
                "forward_bytes_sent_per_rank": sent,
                "backward_allreduce_bytes": reduced,
                # a two-rank ring all-reduce sends half the tensor in its reduce-scatter
                # and half in its all-gather: the whole tensor's size
                "bytes_sent_per_rank_per_step": sent + reduced,
                "bytes_sent_per_image": (sent + reduced) // batch_size,
            }, out)  # fmt: skip
    finally:
        dist.destroy_process_group()
