"""`alexnet train`: the paper's recipe end to end, resumable, on one device or many.

Read top to bottom: `train` resolves the config and the device, `setup` builds
everything a run holds (`Trainer`), `fit` runs the epochs; each epoch is
`train_one_epoch` (a loop of `train_step`) and `end_of_epoch` (validation, the
epoch's record, the checkpoint). The run directory is rundir.py's, the checkpoint
format checkpoint.py's, the position in the run state.py's.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..data.augment import BatchTransform
from ..data.folders import store_for
from ..data.loader import EpochSampler, TrainFeed
from ..data.store import Store, class_ids, fixed_subset, is_store
from ..evaluation.embed import split_features
from ..evaluation.split import evaluate_split
from ..kernels.plan import Plan, resolve_plan
from ..model import create_model
from ..model.net import input_crop, options_of
from ..model.towers import (
    Layout,
    TowerParallelAlexNet,
    full_optimizer_state,
    load_full_optimizer_state,
    make_layout,
)
from ..runtime.device import environment, pick_device, resolve_precision
from ..runtime.distributed import DistInfo, all_reduce_sum, init_from_env, shutdown
from ..runtime.errors import UsageError
from ..runtime.files import atomic_write_json
from ..runtime.seeds import STREAM_DROPOUT, derive_seed
from ..weights.checkpoint import Checkpoint, Checkpointer, load_checkpoint, model_options
from ..weights.rundir import RunDir
from ..weights.transfer import load_matching
from .config import TrainConfig, config_for_resume, parse_milestones
from .finetune import (
    FeatureFeed,
    StartingWeights,
    freeze_,
    frozen_eval_,
    param_groups,
    probe_evaluate,
)
from .log import MetricsLog, StepLog
from .optim import build_optimizer, build_schedule
from .recipes import RECIPES, choose_recipe
from .state import TrainState
from .step import training_step


class TrainingDiverged(RuntimeError):
    """The loss or the weights became non-finite; the last good checkpoint is kept."""


@dataclass
class Trainer:
    """Everything one process of a run holds while it trains."""

    cfg: TrainConfig
    device: torch.device
    dist: DistInfo
    layout: Layout | None
    store: Store
    run: RunDir
    model: nn.Module  # the module whose state is saved (a tower under model parallelism)
    net: nn.Module  # what the step calls: model, wrapped by DDP / torch.compile
    transform: BatchTransform
    feed: TrainFeed
    optimizer: torch.optim.Optimizer
    schedule: object
    plan: Plan  # precision and kernels, resolved once (kernels/plan.py)
    state: TrainState
    log: MetricsLog | None  # rank 0 only
    steps_log: StepLog | None = None  # rank 0 only
    norm: dict | None = None  # the input normalisation, as the checkpoint records it
    probe: tuple | None = None  # a linear probe's cached validation (features, labels)
    val_split: object = None  # the validation split (or its --val-images view), opened once
    checkpointer: Checkpointer | None = None  # rank 0's writer of last.pt and best.pt
    ctrl_c: object = None  # fit's _CtrlC: whether the user asked the run to stop
    last_loss: torch.Tensor | None = None  # the last step's loss, read when a line is logged
    weights_before: dict | None = None  # --log-updates: the weights before a logged step
    update_ratios: dict | None = None  # --log-updates: |dw| / |w| of the last logged step

    @property
    def replicas(self) -> tuple[int, int]:
        """(number of data-parallel replicas, this process's replica)."""
        if self.layout:  # the two towers of a replica share its batch
            return self.layout.replicas, self.layout.replica
        return self.dist.world, self.dist.rank


def train(cfg: TrainConfig, resume: str | None = None, given: set[str] | None = None) -> dict:
    """Run (or resume) training; returns a summary with the run's paths and results.
    On resume, `given` names the options the caller set (see config_for_resume)."""
    ckpt, why, weights = None, None, None
    if resume and RunDir(resume).stopped_before_a_checkpoint():
        cfg, resume = _config_of_unstarted(resume, cfg, given), None  # nothing to resume: afresh
    if resume:
        run = RunDir(resume)
        run.check_resumable()
        ckpt = load_checkpoint(run.last)
        ckpt.check_resumable(str(run.last))
        cfg = config_for_resume(ckpt.config, cfg, resume, given)
    else:
        if cfg.data is not None:  # an image folder: its cached store (data/folders.py)
            cfg = replace(cfg, data=store_for(cfg.data))
        weights = StartingWeights.read(cfg.weights) if cfg.weights else None
        cfg = weights.configure(cfg) if weights else cfg
        recipe, why = choose_recipe(
            cfg.recipe,
            demo_data=cfg.data is None,
            starting_weights=weights is not None,
            train_images=None if cfg.data is None else len(Store(cfg.data).split("train")),
            store=str(cfg.data),
        )
        cfg = replace(cfg, recipe=recipe).resolved()
    device = pick_device(cfg.device)
    cfg = replace(cfg, precision=_run_precision(cfg.precision, device, resumed=ckpt is not None))
    dist_info = init_from_env(device.type)
    cfg = _settled_paths(cfg, dist_info)  # what config.json records, before setup reads it
    try:
        trainer = setup(cfg, ckpt, device, dist_info, weights)
        if dist_info.is_main:  # said once the run has started, not before an error
            print(trainer.plan.line(), file=sys.stderr, flush=True)
            if why:
                print(why, file=sys.stderr, flush=True)
        if ckpt is not None and dist_info.is_main:
            st = trainer.state
            where = (
                f"it finished its {cfg.epochs} epoch(s): nothing to do"
                if st.epoch >= cfg.epochs
                else f"epoch {st.epoch + 1} of {cfg.epochs}, step {st.step} "
                f"(global step {st.global_step})"
            )
            print(f"resuming {resume} from {RunDir(resume).last}: {where}", file=sys.stderr)
        try:
            summary = fit(trainer)
            if dist_info.enabled:
                # no rank leaves the job while another is still at work (rank 0 writes the
                # last checkpoint): a gloo rank tearing down early sometimes aborted
                torch.distributed.barrier()
        finally:
            close(trainer)
    finally:
        shutdown()
    if cfg.report and dist_info.is_main and summary["history"]:
        summary["report"] = str(_report(trainer))
    return summary


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _config_of_unstarted(run_dir: str, asked: TrainConfig, given: set[str] | None) -> TrainConfig:
    """The config of a run stopped before its first checkpoint (its config.json, with
    what a resumed run may change), to start it again under the same directory."""
    import json

    try:
        saved = json.loads(RunDir(run_dir).config.read_text())
        if not isinstance(saved, dict):
            raise ValueError("not a mapping")
        return config_for_resume(saved, asked, run_dir, given)
    except (OSError, ValueError, TypeError) as e:
        raise UsageError(
            f"--resume {run_dir}: it stopped before its first checkpoint and its config.json "
            f"is unreadable ({e}); start it again with train --out"
        ) from None


def _run_precision(precision: str, device: torch.device, resumed: bool) -> str:
    """What the run computes in, never "auto": a run saved as "auto" (before the run
    recorded its resolution) resumes as "auto" then meant, bf16 on CUDA and fp32 elsewhere."""
    if resumed and precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return resolve_precision(precision, device)


def setup(
    cfg: TrainConfig,
    ckpt: Checkpoint | None,
    device: torch.device,
    di: DistInfo,
    weights: StartingWeights | None = None,
) -> Trainer:
    """Everything one process of a run holds, built and checked before the first step."""
    store = _open_store(cfg, ckpt)
    layout = _layout(cfg, di)
    replicas, replica = (layout.replicas, layout.replica) if layout else (di.world, di.rank)
    train_split, val_split = _checked_splits(cfg, store, replicas)
    plan = resolve_plan(device, cfg.precision, cfg.kernels, train=True, compile=cfg.compile)
    run = _run_dir(cfg, ckpt, device, di, plan)
    model, net = _build_model(cfg, store, ckpt, weights, layout, plan, replicas, verbose=di.is_main)
    sampler = EpochSampler(
        len(train_split), cfg.batch_size, seed=cfg.seed, num_replicas=replicas, rank=replica
    )
    norm = _normalization(cfg, store, ckpt, weights)
    transform = BatchTransform(
        device=device,
        crop=input_crop(cfg.variant),
        **{k: v for k, v in norm.items() if k != "kind"},
    )
    feed, net, probe = _feed(cfg, model, net, train_split, val_split, transform, sampler)
    optimizer, schedule = _optimizer_and_schedule(cfg, model, sampler, device)
    log = MetricsLog(run, cfg.progress) if di.is_main else None
    trainer = Trainer(
        cfg=cfg,
        device=device,
        dist=di,
        layout=layout,
        store=store,
        run=run,
        model=model,
        net=net,
        transform=transform,
        feed=feed,
        optimizer=optimizer,
        schedule=schedule,
        plan=plan,
        state=TrainState(),
        log=log,
        norm=norm,
        probe=probe,
        val_split=val_split,
        checkpointer=Checkpointer(run.last, run.best),
    )
    if ckpt is not None:
        _restore(trainer, ckpt)
    _start_logs(trainer, sampler)
    return trainer


def _start_logs(t: Trainer, sampler: EpochSampler) -> None:
    """Rank 0's metrics and steps logs, rewritten from where the run stands: a resume
    never doubles a line."""
    if t.log:
        t.log.write(t.state.history)
        t.steps_log = StepLog(
            t.run,
            t.cfg.log_every,
            sampler.steps_per_epoch(),
            print_lines=not t.cfg.progress,
            resumed_at=t.state.global_step,
        )


def _feed(cfg: TrainConfig, model, net, train_split, val_split, transform, sampler):
    """(feed, the module each step trains, a probe's cached validation features). A
    linear probe (--freeze fc7, one process) computes the frozen net's features once and
    trains fc8 on them; every other run feeds augmented images to the whole net."""
    if cfg.freeze == "fc7" and sampler.num_replicas == 1:
        feed = FeatureFeed(model, train_split, transform, sampler, cfg.eval_batch_size)
        return (
            feed,
            model.classifier[-1],
            split_features(model, val_split, transform, cfg.eval_batch_size),
        )
    feed = TrainFeed(
        train_split,
        transform,
        sampler,
        workers=cfg.workers,
        decode=cfg.decode,
        crops_flips=cfg.augment,
        lighting=cfg.pca_lighting,
    )
    return feed, net, None


def _optimizer_and_schedule(cfg: TrainConfig, model, sampler, device):
    optimizer = build_optimizer(
        RECIPES[cfg.recipe].optimizer,
        param_groups(model, cfg.head_lr_mult),
        cfg.lr,
        cfg.momentum,
        cfg.weight_decay,
        device,
    )
    schedule = build_schedule(
        cfg.schedule,
        cfg.lr,
        cfg.epochs,
        sampler.steps_per_epoch(),
        cfg.patience,
        cfg.warmup_epochs,
        parse_milestones(cfg.milestones) if cfg.milestones else None,
    )
    return optimizer, schedule


def _checked_splits(cfg: TrainConfig, store: Store, replicas: int):
    """The training and validation splits (or their --train-images / --val-images views),
    opened once and checked before the run starts."""
    store.require_crop(input_crop(cfg.variant), cfg.variant)
    train_split = fixed_subset(store.split("train"), cfg.train_images)
    if cfg.batch_size * replicas > len(train_split):
        raise UsageError(
            f"--batch-size {cfg.batch_size} x {replicas} replica(s) is larger than "
            f"the {len(train_split)} training images of {cfg.data}: give a smaller --batch-size"
        )
    train_split.labels  # noqa: B018  (read and checked now: a damaged store fails before the run)
    val_split = fixed_subset(store.split("val"), cfg.val_images)
    if len(val_split) == 0:
        raise UsageError(
            f"{cfg.data} has no validation images: prepare it again with "
            "--val-fraction above 0 or a --val folder (a class of one image keeps it for "
            "training)"
        )
    return train_split, val_split


def _normalization(
    cfg: TrainConfig, store: Store, ckpt: Checkpoint | None, weights: StartingWeights | None
) -> dict:
    """What the run's inputs are normalised with, as its checkpoints record it: a resumed
    run's own; the starting weights' (with the store's PCA for the lighting); else the
    store's mean image and PCA."""
    if ckpt is not None:
        return {k: v for k, v in ckpt.normalization.items()}
    stats = store.stats
    pca = {"eigval": torch.from_numpy(stats.eigval), "eigvec": torch.from_numpy(stats.eigvec)}
    if weights is not None and weights.norm.get("mean") is not None:
        mean = torch.as_tensor(weights.norm["mean"], dtype=torch.float32)
        std = weights.norm.get("std")
        return {
            "kind": "mean-image" if mean.dim() == 3 else "channel",
            "mean": mean,
            "std": None if std is None else torch.as_tensor(std, dtype=torch.float32),
            "channels": weights.norm.get("channels") or "rgb",
            **pca,
            "scale": cfg.input_scale,
        }
    return {
        "kind": "mean-image",
        "mean": torch.from_numpy(stats.mean),
        **pca,
        "scale": cfg.input_scale,
    }


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the step under way finished and was checkpointed."""


class _CtrlC:
    """The Ctrl-C a user expects to resume from: the step under way finishes, a
    checkpoint is written, then the run stops. A second Ctrl-C stops at once. Only for
    one process on the main thread: under torchrun each rank would see the signal at
    another step, and the checkpoint is a collective there."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested, self._previous = False, None

    def __enter__(self) -> _CtrlC:
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)  # the next one interrupts at once

    def __exit__(self, *exc) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)


def fit(t: Trainer) -> dict:
    """Train the remaining epochs (or until --max-steps); returns the run's summary."""
    t.net.train()
    with _CtrlC(enabled=not t.dist.enabled) as ctrl_c:
        t.ctrl_c = ctrl_c
        while t.state.epoch < t.cfg.epochs and not _step_budget_spent(t):
            finished, seconds, images = train_one_epoch(t)
            if not finished:  # --max-steps ran out mid-epoch: checkpointed where it stopped
                break
            end_of_epoch(t, seconds, images)
    return _summary(t)


def _stop_here(t: Trainer, lr: float) -> None:
    """A checkpoint where the run stands mid-epoch, and the metrics file says where."""
    save_checkpoint(t)
    if t.log:
        t.log.write(t.state.history + [_partial_record(t, lr)])


def train_one_epoch(t: Trainer) -> tuple[bool, float, int]:
    """Steps from where the epoch stands to its end, or to --max-steps.
    Returns (whether the epoch finished, seconds, images seen by all replicas)."""
    s, cfg = t.state, t.cfg
    per_step = t.feed.sampler.global_batch
    steps = t.feed.sampler.steps_per_epoch()
    bar = tqdm(
        total=steps * per_step,
        initial=s.step * per_step,
        unit="img",
        desc=f"epoch {s.epoch + 1}/{cfg.epochs}",
        dynamic_ncols=True,
        disable=not (cfg.progress and t.dist.is_main),
    )
    t0, seen = time.perf_counter(), 0
    frozen_eval_(t.model, cfg.freeze)  # evaluation left every module in train mode
    for x, y, step in t.feed.epoch(s.epoch, s.step):
        keep_weights_before(t)
        lr = train_step(t, x, y, step)
        measure_updates(t)
        seen += per_step
        bar.update(per_step)
        if t.steps_log and t.steps_log.due(s.global_step):
            bar.set_postfix(log_step(t, lr))
        if cfg.checkpoint_every and s.global_step % cfg.checkpoint_every == 0:
            save_checkpoint(t)
        if t.ctrl_c is not None and t.ctrl_c.requested:
            _stop_here(t, lr)
            bar.close()
            raise RunInterrupted(
                f"interrupted at step {s.step} of epoch {s.epoch + 1} (global step "
                f"{s.global_step}), checkpointed in {t.run.last}: nothing is lost; continue "
                f"with: alexnet train --resume {t.run.root}"
            )
        if _step_budget_spent(t) and s.step < steps:
            _stop_here(t, lr)
            bar.close()
            return False, time.perf_counter() - t0, seen
    bar.close()
    return True, time.perf_counter() - t0, seen


def train_step(t: Trainer, x: torch.Tensor, y: torch.Tensor, step: int) -> float:
    """One optimiser step on this process's share of a global batch; returns its lr.
    Nothing here waits for the device, except the loss check on a CPU (where waiting
    costs nothing); elsewhere a non-finite loss is caught where the sums are read."""
    s = t.state
    lr = t.schedule.lr_at(s.epoch, step)
    for group in t.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
    torch.manual_seed(derive_seed(t.cfg.seed, s.epoch, step, STREAM_DROPOUT, t.dist.rank))

    def check_loss(loss: torch.Tensor) -> None:
        if t.device.type == "cpu" and not torch.isfinite(loss).all():
            raise diverged(
                t,
                f"non-finite loss ({loss.item()}) at epoch {s.epoch + 1}, step {step + 1} "
                f"(global step {s.global_step + 1})",
            )

    loss, logits = training_step(
        t.net, t.optimizer, x, y, t.plan.amp, t.cfg.label_smoothing, check_loss
    )
    with torch.no_grad():
        s.running.add(loss, (logits.argmax(1) == y).sum(), len(y))
    t.last_loss = loss.detach()
    s.step, s.global_step = step + 1, s.global_step + 1
    return lr


def keep_weights_before(t: Trainer) -> None:
    """--log-updates: a copy of the weights before a step whose line will be logged."""
    if t.cfg.log_updates and t.steps_log and (t.state.global_step + 1) % t.steps_log.every == 0:
        t.weights_before = {n: p.detach().clone() for n, p in _weights(t.model)}


def measure_updates(t: Trainer) -> None:
    """|dw| / |w| of each weight over the step just taken, when a copy was kept: the
    size of a step against the weights it moves (a layer whose ratio nears 1 is being
    rewritten each step, one near 1e-6 hardly learns)."""
    if t.weights_before is None:
        return
    with torch.no_grad():
        t.update_ratios = {
            n: float((p - t.weights_before[n]).norm() / t.weights_before[n].norm().clamp_min(1e-30))
            for n, p in _weights(t.model)
        }
    t.weights_before = None


def _weights(model: nn.Module):
    """(name, tensor) of each trained weight (matrices and kernels, not biases)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.dim() > 1]


def log_step(t: Trainer, lr: float) -> dict:
    """Read the running sums (one device sync), write the step line; returns what the
    progress bar shows."""
    s, sampler = t.state, t.feed.sampler
    _check_finite(t)
    steps = sampler.steps_per_epoch()
    rate = t.steps_log.rate(s.global_step, sampler.global_batch)
    steps_left = (t.cfg.epochs - s.epoch) * steps - s.step
    if t.cfg.max_steps:
        steps_left = min(steps_left, t.cfg.max_steps - s.global_step)
    per_second = rate / sampler.global_batch
    record = {
        "epoch": s.epoch + 1,
        "step": s.step,
        "steps_per_epoch": steps,
        "global_step": s.global_step,
        "train_loss": s.running.mean_loss,
        # the epoch's running error so far: where it first crosses 25% times Figure 1
        "train_top1_error": 1 - s.running.correct / max(s.running.count, 1),
        "step_loss": float(t.last_loss),
        "lr": lr,
        "images_per_second": round(rate, 2),
        "epoch_eta_seconds": round((steps - s.step) / per_second, 1),
        "run_eta_seconds": round(steps_left / per_second, 1),
        "time": time.time(),
    }
    if t.update_ratios is not None:
        record["update_ratio"], t.update_ratios = t.update_ratios, None
    t.steps_log.write(record)
    return {"loss": f"{record['train_loss']:.3f}", "lr": f"{lr:.2g}", "img_s": f"{rate:.1f}"}


def diverged(t: Trainer, what: str) -> TrainingDiverged:
    """A run that went non-finite: what happened, where the last good checkpoint is, and
    what to try (exit code 3)."""
    return TrainingDiverged(
        f"{what}; the last good checkpoint is kept in {t.run.checkpoints}; "
        "lower --lr or check the data"
    )


def _check_finite(t: Trainer) -> None:
    if not math.isfinite(t.state.running.loss_sum):
        raise diverged(
            t, f"non-finite loss in epoch {t.state.epoch + 1}, by global step {t.state.global_step}"
        )


def _partial_record(t: Trainer, lr: float) -> dict:
    s = t.state
    return {
        "epoch": s.epoch + 1,
        "partial": True,
        "step": s.global_step,
        "steps_done_in_epoch": s.step,
        "train_loss": s.running.mean_loss,
        "lr": lr,
    }


def end_of_epoch(t: Trainer, seconds: float, images: int) -> None:
    """Validate, record the epoch, step the schedule, checkpoint (last and best)."""
    s = t.state
    replicas, replica = t.replicas
    group = t.layout.same_tower if t.layout else None  # count each replica once
    _check_finite(t)
    train_loss, train_error = _reduce_running(s, group)
    t0 = time.perf_counter()
    if t.probe is not None:
        val = probe_evaluate(t.net, *t.probe, t.store.num_classes)
    else:
        val = _validate(t, replica, replicas, group)
    val_seconds = time.perf_counter() - t0
    record = {
        "epoch": s.epoch + 1,
        "step": s.global_step,
        "train_loss": train_loss,
        "train_top1_error": train_error,
        "val_top1_error": val["top1_error"],
        "val_top5_error": val["top5_error"],
        "lr": t.schedule.lr_at(s.epoch, max(s.step - 1, 0)),
        "epoch_seconds": round(seconds, 3),
        "images_per_second": round(images / seconds, 2),
        "val_seconds": round(val_seconds, 3),
        "time": time.time(),  # the epoch's end, validation included
    }
    s.history.append(record)
    t.schedule.end_epoch(s.epoch, val["top1_error"])
    is_best = val["top1_error"] < s.best
    s.best = min(s.best, val["top1_error"])
    s.start_next_epoch()
    save_checkpoint(t, is_best)
    if t.log:
        t.log.epoch(record, s.history)


def _validate(t: Trainer, replica: int, replicas: int, group) -> dict:
    return evaluate_split(
        t.net,
        t.val_split,
        t.transform,
        t.store.num_classes,
        crops=1,
        batch_size=t.cfg.eval_batch_size,
        rank=replica,
        world=replicas,
        autocast_dtype=t.plan.amp,
        group=group,
    )


def save_checkpoint(t: Trainer, is_best: bool = False) -> None:
    """Write last.pt (and best.pt) from rank 0. Under model parallelism both towers take
    part in assembling the full state. Weights that are not all finite are never
    written: the run stops, and the last good checkpoint stays."""
    if t.layout and t.layout.replica != 0:
        return  # rank 0 writes, from its own pair's towers: the other pairs hold no copy
    if t.layout:  # rank 0's partner tower sends its half and keeps nothing
        model_state = t.model.full_state_dict(keep=t.dist.is_main)
        optimizer_state = full_optimizer_state(t.optimizer, t.layout.pair, keep=t.dist.is_main)
    else:
        model_state, optimizer_state = t.model.state_dict(), t.optimizer.state_dict()
    if not t.dist.is_main:
        return
    if not t.checkpointer.save(_checkpoint(t, model_state, optimizer_state), is_best):
        raise diverged(t, f"the weights became non-finite by global step {t.state.global_step}")


def close(t: Trainer) -> None:
    """Close the run's logs and release its directory."""
    if t.log:
        t.log.close()
    t.run.unlock()


def _checkpoint(t: Trainer, model_state: dict, optimizer_state: dict) -> Checkpoint:
    cfg = t.cfg
    norm = {k: v for k, v in t.norm.items() if v is not None}
    return Checkpoint(
        model=model_state,
        variant=cfg.variant,
        classes=t.store.classes,
        normalization=norm,
        model_options=model_options(cfg),
        config=asdict(cfg),
        optimizer=optimizer_state,
        schedule=t.schedule.state_dict(),
        train_state=t.state.state_dict(),
    )


def _restore(t: Trainer, ckpt: Checkpoint) -> None:
    if t.layout:
        load_full_optimizer_state(t.optimizer, ckpt.optimizer, t.layout.tower)
    else:
        t.optimizer.load_state_dict(ckpt.optimizer)
    t.schedule.load_state_dict(ckpt.schedule)
    t.state = TrainState.from_state_dict(ckpt.train_state)


def _settled_paths(cfg: TrainConfig, di: DistInfo) -> TrainConfig:
    """The config with its store and run directory decided: the embedded demo store
    (built once, by rank 0) when no --data was given, runs/<date-time> without --out."""
    data, out = cfg.data, cfg.out
    if data is None:
        from ..data.demo import ensure_demo_store

        if di.is_main:
            ensure_demo_store(cfg.progress, log=lambda line: tqdm.write(line, file=sys.stderr))
        if di.enabled:
            torch.distributed.barrier()
        data = str(ensure_demo_store(progress=False))
    if out is None:
        out = f"runs/{time.strftime('%Y%m%d-%H%M%S')}"
    return replace(cfg, data=data, out=out)


def _open_store(cfg: TrainConfig, ckpt: Checkpoint | None) -> Store:
    if ckpt is not None and not is_store(cfg.data):
        raise UsageError(
            f"the store {cfg.data} is not there (the run's store moved or removed?): "
            "resume with --data pointing at it where it is now"
        )
    store = Store(cfg.data)
    if ckpt is not None and class_ids(store.classes) != class_ids(ckpt.classes):
        raise UsageError(
            f"{cfg.data} does not hold the classes the run was trained on "
            f"({store.num_classes} vs {ckpt.num_classes}); resume with --data "
            "pointing at the run's store"
        )
    return store


def _run_dir(cfg: TrainConfig, ckpt: Checkpoint | None, device, di: DistInfo, plan: Plan) -> RunDir:
    run = RunDir(cfg.out)
    if not di.is_main:
        return run
    if ckpt is None:
        run.create(say=_say)
    run.lock(say=_say)
    run.remove_stale_temp_files()
    run.write_config(asdict(cfg))
    env = {**environment(device, di.world, cfg.precision), "plan": plan.as_dict()}
    atomic_write_json(run.environment, env)
    return run


def _build_model(
    cfg: TrainConfig,
    store: Store,
    ckpt: Checkpoint | None,
    weights: StartingWeights | None,
    layout: Layout | None,
    plan: Plan,
    replicas: int,
    verbose: bool,
) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(cfg.seed)
    options = asdict(options_of(cfg))
    model = create_model(cfg.variant, num_classes=store.num_classes, **options)
    if ckpt is not None:
        model.load_state_dict(ckpt.model)
    elif weights is not None:
        same_classes = weights.class_ids == class_ids(store.classes)
        same_net = weights.variant == cfg.variant  # a grown net's fc8 starts afresh too
        loaded, fresh = load_matching(model, weights.state, keep_head=same_classes and same_net)
        if verbose:
            print(
                f"weights {weights.path} ({weights.kind}): loaded {', '.join(loaded)}; "
                f"initialised afresh: {', '.join(fresh) or 'none'}",
                file=sys.stderr,
                flush=True,
            )
    freeze_(model, cfg.freeze)
    if layout:
        model = TowerParallelAlexNet(model, layout.tower, layout.pair)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    device = torch.device(plan.device)
    model = plan.apply(model.to(device, memory_format=memory_format))
    net: nn.Module = model
    if replicas > 1:
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[torch.cuda.current_device()] if device.type == "cuda" else None,
            process_group=layout.same_tower if layout else None,
        )
    if cfg.compile:
        net = torch.compile(net)
    return model, net


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


def _step_budget_spent(t: Trainer) -> bool:
    return bool(t.cfg.max_steps) and t.state.global_step >= t.cfg.max_steps


def _reduce_running(s: TrainState, group=None) -> tuple[float, float]:
    r = s.running
    totals = torch.tensor([r.loss_sum, r.correct, r.count], dtype=torch.float64)
    totals = all_reduce_sum(totals, group)  # a no-op outside a distributed job
    n = max(totals[2].item(), 1)
    return totals[0].item() / n, 1 - totals[1].item() / n


def _summary(t: Trainer) -> dict:
    s = t.state
    return {
        "run_dir": str(t.run.root),
        "metrics": str(t.run.metrics),
        "checkpoint": str(t.run.last),
        "best_checkpoint": str(t.run.best),
        "store": str(t.cfg.data),
        "epochs_done": s.epoch,
        "global_step": s.global_step,
        "finished": s.epoch >= t.cfg.epochs,
        "stopped_mid_epoch": s.step > 0,
        "step_in_epoch": s.step,
        "history": s.history,
        "rank": t.dist.rank,
    }


def _report(t: Trainer) -> Path:
    from ..results.report import build_report

    # on a CPU, ten crops of a large split would take minutes: 200 images are sampled
    # (the page says how; the demo's 400 whole took 14 of the report's 23 s on 2 cores,
    # docs/benchmarks.md)
    gpu = t.device.type == "cuda"
    return build_report(
        t.run.root,
        device=t.device if gpu else "cpu",
        eval_limit=None if gpu else 200,
        gallery_limit=2000 if gpu else 300,
    )
