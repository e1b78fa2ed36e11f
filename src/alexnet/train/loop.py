"""`alexnet train`: the paper's recipe end to end, resumable, on one device or many.

Run directory: config.json (the resolved TrainConfig), environment.json, metrics.jsonl
(one object per epoch), TensorBoard events when tensorboard is installed, and
checkpoints/last.pt and best.pt.

Exact resumption: every random draw is tied to (seed, epoch, step) (the epoch's
order, the crops, flips and lighting, the dropout masks), and a checkpoint carries the
model, the optimiser's velocities, the schedule, the position in the epoch and the
running sums of the epoch's metrics. On CPU a resumed run therefore ends with the same
bits as one that was never interrupted.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .. import __version__
from ..allocator import allocator_tuned
from ..checkpoint import load, save_atomic, unwrap
from ..data.augment import Normalizer
from ..data.demo import ensure_demo_store
from ..data.loader import DECODES, EpochSampler, TrainFeed, derive_seed
from ..data.store import Store
from ..distributed import DistInfo, all_reduce_sum, init_from_env, shutdown
from ..errors import UsageError
from ..evaluate import evaluate_split
from ..files import atomic_write_bytes, atomic_write_json
from ..model import VARIANTS, create_model
from ..parallel import (
    Layout,
    TowerParallelAlexNet,
    full_optimizer_state,
    load_full_optimizer_state,  # fmt: skip
    make_layout,
)
from .optim import SCHEDULES, PaperSGD
from .recipes import RECIPES


class TrainingDiverged(RuntimeError):
    pass


@dataclass
class TrainConfig:
    data: str | None = None  # a prepared store; None: the embedded demo
    out: str | None = None  # run directory; default runs/<time>
    variant: str = "paper"
    recipe: str | None = None  # default: "demo" without --data, else "paper"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    patience: int | None = None
    warmup_epochs: float | None = None
    init: str | None = None
    input_scale: float | None = None
    dropout: float | None = None  # recipe: 0.5 as in §4.2
    lrn: bool = True
    overlap_pool: bool = True
    activation: str = "relu"
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # fp32, bf16, fp16 (autocast), auto: bf16 on cuda
    compile: bool = False
    model_parallel: int = 1  # 2: the paper's two towers on two processes (§3.2)
    channels_last: bool = True
    workers: int = 2
    decode: str = "auto"  # JPEG stores: "device" (nvjpeg) on a GPU, else "workers"
    max_steps: int | None = None  # stop (with a checkpoint) after this many steps in all
    checkpoint_every: int = 0  # also checkpoint every N steps
    eval_batch_size: int = 128
    progress: bool = True
    report: bool = True

    def resolved(self) -> TrainConfig:
        """Fill what the recipe decides; check every value. Raises UsageError."""
        recipe_name = self.recipe or ("demo" if self.data is None else "paper")
        if recipe_name not in RECIPES:
            raise UsageError(f"unknown recipe {recipe_name!r}; choose one of {', '.join(RECIPES)}")
        r = RECIPES[recipe_name]
        values = asdict(self)
        values["recipe"] = recipe_name
        for name in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule",
                     "patience", "warmup_epochs", "init", "input_scale", "dropout"):  # fmt: skip
            if values[name] is None:
                values[name] = getattr(r, name)
        cfg = TrainConfig(**values)
        cfg._check()
        return cfg

    def _check(self) -> None:
        if self.variant not in VARIANTS:
            raise UsageError(
                f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}"
            )
        checks = [
            (self.lr > 0 and math.isfinite(self.lr), f"--lr must be positive, not {self.lr}"),
            (self.epochs >= 1, f"--epochs must be at least 1, not {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, not {self.batch_size}"),
            (self.momentum >= 0, f"momentum must be non-negative, not {self.momentum}"),
            (self.weight_decay >= 0, f"weight decay must be non-negative, not {self.weight_decay}"),
            (self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}"),
            (self.precision in ("auto", "fp32", "bf16", "fp16"),
             f"--precision must be auto, fp32, bf16 or fp16, not {self.precision!r}"),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1"),
            (self.workers >= 0, "--workers must be non-negative"),
            (self.decode in DECODES,
             f"--decode must be one of {', '.join(DECODES)}, not {self.decode!r}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), not {self.dropout}"),
            (self.model_parallel in (1, 2),
             f"--model-parallel must be 1 or 2 (the paper's two towers), not {self.model_parallel}"),
            (self.model_parallel == 1 or self.variant == "paper",
             f"--model-parallel 2 splits the paper net's two towers; the {self.variant!r} "
             "variant has none"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise UsageError(message)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA device is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps asked for, but MPS is not available")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def environment(device: torch.device, dist_info: DistInfo) -> dict:
    env = {
        "alexnet": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": str(device),
        "world_size": dist_info.world,
        "malloc_tuned": allocator_tuned(),  # see allocator.py
    }
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def _build_optimizer(cfg: TrainConfig, model: nn.Module, device: torch.device):
    kind = RECIPES[cfg.recipe].optimizer
    if kind == "adamw":
        # fused: one pass over the 61 M parameters instead of a dozen (on the CPU box the
        # step fell from 0.33 s to 0.05 s, a third of a batch-16 training step)
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 fused=device.type in ("cpu", "cuda") or None)  # fmt: skip
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)  # fmt: skip
    return PaperSGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                    weight_decay=cfg.weight_decay)  # fmt: skip


def _build_schedule(cfg: TrainConfig, steps_per_epoch: int):
    cls = SCHEDULES[cfg.schedule]
    if cfg.schedule == "plateau":
        return cls(cfg.lr, cfg.epochs, steps_per_epoch, patience=cfg.patience)
    if cfg.schedule == "warmup-cosine":
        return cls(cfg.lr, cfg.epochs, steps_per_epoch, warmup_epochs=cfg.warmup_epochs)
    return cls(cfg.lr, cfg.epochs, steps_per_epoch)


class _EpochStats:
    """Training loss and top-1 on the fly, as sums that a checkpoint can carry."""

    def __init__(self, state: dict | None = None):
        s = state or {}
        self.loss_sum, self.correct, self.count = s.get("loss_sum", 0.0), s.get("correct", 0), \
            s.get("count", 0)  # fmt: skip

    def add(self, loss_sum: float, correct: int, count: int) -> None:
        self.loss_sum += loss_sum
        self.correct += correct
        self.count += count

    def state(self) -> dict:
        return {"loss_sum": self.loss_sum, "correct": self.correct, "count": self.count}


def _load_resume(run_dir: Path) -> dict:
    last = run_dir / "checkpoints" / "last.pt"
    if not run_dir.is_dir():
        raise UsageError(f"--resume {run_dir}: no such run directory")
    if not last.is_file():
        raise UsageError(f"--resume {run_dir}: no checkpoint (checkpoints/last.pt) to resume from")
    return load(last)


def train(cfg: TrainConfig, resume: str | None = None) -> dict:
    """Run (or resume) training; returns a summary with the run's paths and results."""
    ckpt = None
    if resume:
        run_dir = Path(resume)
        ckpt = _load_resume(run_dir)
        saved = ckpt["config"]
        # the saved config wins, except for what may change between sessions
        # (checkpoints are full state dicts, so a run may change its parallelism too)
        keep = {"device", "workers", "decode", "progress", "max_steps", "report", "compile",
                "checkpoint_every", "eval_batch_size", "model_parallel"}  # fmt: skip
        merged = {f.name: saved.get(f.name, getattr(cfg, f.name)) for f in fields(TrainConfig)}
        merged.update({k: getattr(cfg, k) for k in keep})
        merged["out"] = str(run_dir)
        cfg = TrainConfig(**merged).resolved()
    else:
        cfg = cfg.resolved()

    device = pick_device(cfg.device)
    dist_info = init_from_env(device.type)
    try:
        summary = _train(cfg, ckpt, device, dist_info)
    finally:
        shutdown()
    if cfg.report and dist_info.is_main and summary["history"]:
        from ..report import build_report

        # on a CPU, ten crops of a large split would take minutes: sample it (the page says so)
        gpu = device.type == "cuda"
        summary["report"] = str(build_report(summary["run_dir"], device=device if gpu else "cpu",
                                             eval_limit=None if gpu else 100,
                                             gallery_limit=2000 if gpu else 300))  # fmt: skip
    return summary


def _train(cfg: TrainConfig, ckpt: dict | None, device: torch.device, di: DistInfo) -> dict:
    if cfg.data is None:
        if di.is_main:
            ensure_demo_store(
                progress=cfg.progress, log=lambda line: tqdm.write(line, file=sys.stderr)
            )
        if di.enabled:
            torch.distributed.barrier()
        cfg.data = str(ensure_demo_store(progress=False))
    store = Store(cfg.data)
    train_split, val_split = store.split("train"), store.split("val")
    layout = _layout(cfg, di)
    # data parallelism runs over replicas; the two towers of a replica share its batch
    replicas, replica = (layout.replicas, layout.replica) if layout else (di.world, di.rank)
    if cfg.batch_size * replicas > len(train_split):
        raise UsageError(
            f"batch size {cfg.batch_size} x {replicas} replica(s) is larger than the "
            f"{len(train_split)} training images of {cfg.data}"
        )
    run_dir = Path(cfg.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    if di.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", asdict(cfg))
        atomic_write_json(run_dir / "environment.json", environment(device, di))

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.variant, num_classes=store.num_classes, init=cfg.init,
                         dropout=cfg.dropout, lrn=cfg.lrn, overlap_pool=cfg.overlap_pool,
                         activation=cfg.activation)  # fmt: skip
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    if layout:
        model = TowerParallelAlexNet(model, layout.tower, layout.pair)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    net: nn.Module = model
    if replicas > 1:
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[torch.cuda.current_device()] if device.type == "cuda" else None,
            process_group=layout.same_tower if layout else None,
        )
    if cfg.compile:
        net = torch.compile(net)

    sampler = EpochSampler(len(train_split), cfg.batch_size, seed=cfg.seed,
                           num_replicas=replicas, rank=replica)  # fmt: skip
    normalizer = Normalizer.from_stats(store.stats, device, scale=cfg.input_scale)
    feed = TrainFeed(train_split, normalizer, sampler, workers=cfg.workers, decode=cfg.decode)
    steps_per_epoch = sampler.steps_per_epoch()
    optimizer = _build_optimizer(cfg, model, device)
    schedule = _build_schedule(cfg, steps_per_epoch)
    amp = autocast_dtype(cfg.precision, device)

    epoch, step, global_step = 0, 0, 0
    history: list[dict] = []
    best = math.inf
    running = _EpochStats()
    if ckpt is not None:
        if layout:
            load_full_optimizer_state(optimizer, ckpt["optimizer"], layout.tower)
        else:
            optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        epoch, step, global_step = ckpt["epoch"], ckpt["step"], ckpt["global_step"]
        history, best = list(ckpt["history"]), ckpt["best_val_top1_error"]
        running = _EpochStats(ckpt["running"])

    metrics_path = run_dir / "metrics.jsonl"
    tb = _tensorboard(run_dir) if di.is_main else None
    if di.is_main:  # the log is rewritten from the checkpoint, so a resume never doubles it
        _write_metrics(metrics_path, history)

    def checkpoint(next_epoch: int, next_step: int, is_best: bool = False) -> None:
        if layout:  # both towers take part in assembling the full state
            model_state = model.full_state_dict()
            optimizer_state = full_optimizer_state(optimizer, layout.pair)
        if not di.is_main:
            return
        if not layout:
            model_state, optimizer_state = unwrap(net).state_dict(), optimizer.state_dict()
        state = {
            "format": "alexnet-checkpoint-1",
            "model": model_state,
            "optimizer": optimizer_state,
            "schedule": schedule.state_dict(),
            "epoch": next_epoch, "step": next_step, "global_step": global_step,
            "history": history, "best_val_top1_error": best, "running": running.state(),
            "config": asdict(cfg),
            "variant": cfg.variant, "num_classes": store.num_classes,
            "model_options": {"dropout": cfg.dropout, "lrn": cfg.lrn,
                              "overlap_pool": cfg.overlap_pool, "activation": cfg.activation},
            "classes": store.classes,
            "normalization": {"kind": "mean-image",
                              "mean": torch.from_numpy(store.stats.mean),
                              "eigval": torch.from_numpy(store.stats.eigval),
                              "eigvec": torch.from_numpy(store.stats.eigvec),
                              "scale": cfg.input_scale},
        }  # fmt: skip
        last = run_dir / "checkpoints" / "last.pt"
        save_atomic(state, last)
        if is_best:
            tmp = last.with_name(".best.pt.tmp")
            shutil.copyfile(last, tmp)
            os.replace(tmp, last.with_name("best.pt"))

    stopped_early = False
    net.train()
    while epoch < cfg.epochs:
        bar = tqdm(total=steps_per_epoch * sampler.global_batch, initial=step * sampler.global_batch,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="img",
                   disable=not (cfg.progress and di.is_main), dynamic_ncols=True)  # fmt: skip
        t0, seen = time.perf_counter(), 0
        lr = schedule.lr_at(epoch, max(step - 1, 0))  # if the epoch has no steps left
        for x, y, step in feed.epoch(epoch, step):  # noqa: B020 (resumes at step)
            lr = schedule.lr_at(epoch, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # dropout masks: a fresh stream per (seed, epoch, step, rank)
            torch.manual_seed(derive_seed(cfg.seed, epoch, step, 2, di.rank))
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = net(x)
                loss = nn.functional.cross_entropy(logits.float(), y)
            if not torch.isfinite(loss).all():
                raise TrainingDiverged(
                    f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, step {step + 1} "
                    f"(global step {global_step + 1}); the last good checkpoint is kept in "
                    f"{run_dir / 'checkpoints'}; lower --lr or check the data"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                correct = int((logits.argmax(1) == y).sum())
            running.add(loss.item() * len(y), correct, len(y))
            global_step += 1
            seen += len(y) * replicas
            bar.update(len(y) * replicas)
            bar.set_postfix(loss=f"{running.loss_sum / max(running.count, 1):.3f}", lr=f"{lr:.2g}",
                            img_s=f"{seen / (time.perf_counter() - t0):.1f}")  # fmt: skip
            if cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0:
                checkpoint(epoch, step + 1)
            if cfg.max_steps and global_step >= cfg.max_steps:
                stopped_early = step + 1 < steps_per_epoch
                if stopped_early:
                    checkpoint(epoch, step + 1)
                break
        bar.close()
        if stopped_early:
            break
        # counted once per replica (a pair's two towers hold the same counts)
        group = layout.same_tower if layout else None
        train_stats = _reduce_running(running, di, group)
        val = evaluate_split(net, val_split, normalizer, store.num_classes, crops=1,
                             batch_size=cfg.eval_batch_size, rank=replica, world=replicas,
                             autocast_dtype=amp, group=group)  # fmt: skip
        record = {
            "epoch": epoch + 1,
            "step": global_step,
            "train_loss": train_stats["loss"],
            "train_top1_error": train_stats["top1_error"],
            "val_top1_error": val["top1_error"],
            "val_top5_error": val["top5_error"],
            "lr": lr,
            "epoch_seconds": round(time.perf_counter() - t0, 3),
            "images_per_second": round(seen / (time.perf_counter() - t0), 2),
        }
        history.append(record)
        schedule.end_epoch(epoch, val["top1_error"])
        is_best = val["top1_error"] < best
        best = min(best, val["top1_error"])
        epoch, step = epoch + 1, 0
        running = _EpochStats()
        checkpoint(epoch, 0, is_best)
        if di.is_main:
            _write_metrics(metrics_path, history)
            if tb is not None:
                for k in (
                    "train_loss",
                    "train_top1_error",
                    "val_top1_error",
                    "val_top5_error",
                    "lr",
                ):
                    tb.add_scalar(k, record[k], record["epoch"])
                tb.flush()
            tqdm.write(_epoch_line(record), file=sys.stderr if not cfg.progress else None)
        if cfg.max_steps and global_step >= cfg.max_steps:
            break

    return {
        "run_dir": str(run_dir),
        "metrics": str(metrics_path),
        "checkpoint": str(run_dir / "checkpoints" / "last.pt"),
        "best_checkpoint": str(run_dir / "checkpoints" / "best.pt"),
        "epochs_done": epoch,
        "global_step": global_step,
        "finished": epoch >= cfg.epochs,
        "history": history,
        "rank": di.rank,
    }


def _epoch_line(r: dict) -> str:
    return (f"epoch {r['epoch']}: train loss {r['train_loss']:.3f}, "
            f"val top-1 error {r['val_top1_error']:.3f}, top-5 error {r['val_top5_error']:.3f}, "
            f"lr {r['lr']:.3g}, {r['images_per_second']:.1f} img/s")  # fmt: skip


def _layout(cfg: TrainConfig, di: DistInfo) -> Layout | None:
    if cfg.model_parallel == 1:
        return None
    if di.world % cfg.model_parallel:
        raise UsageError(
            f"--model-parallel {cfg.model_parallel} needs a multiple of {cfg.model_parallel} "
            f"processes (one per tower), not {di.world}: run it under torchrun "
            f"--nproc-per-node {cfg.model_parallel} (or 4, 6, ... for data parallelism too)"
        )
    return make_layout(di.rank, di.world)


def _reduce_running(running: _EpochStats, di: DistInfo, group=None) -> dict:
    t = torch.tensor([running.loss_sum, running.correct, running.count], dtype=torch.float64)
    t = all_reduce_sum(t, group)  # a no-op outside a distributed job
    n = max(t[2].item(), 1)
    return {"loss": t[0].item() / n, "top1_error": 1 - t[1].item() / n}


def _write_metrics(path: Path, history: list[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in history).encode())


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))
