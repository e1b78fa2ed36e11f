"""The runs of `alexnet ablate`, one kind per function; each adds its rows to Results
and skips what is already there."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from ..weights.rundir import RunDir
from .design import AblateConfig, Results, Study, row_id


def run_small_study(cfg: AblateConfig, study: Study, seed: int, results: Results, log) -> None:
    """A small-net study's runs for one seed (relu: after its per-arm learning-rate sweep)."""
    from ..data.store import Store
    from .cifar_net import SmallData, train_small

    data = None
    for arm, switch in study.arms.items():
        best_id = row_id(study.name, arm, seed) + (":best" if study.name == "relu" else "")
        if best_id in results.rows:
            continue
        data = data or SmallData.from_store(Store(cfg.data), cfg.train_images)
        activation, lrn = switch.get("activation", "relu"), switch.get("lrn", False)
        over_n = switch.get("lrn_alpha_over_n", True)
        lr = _chosen_lr(cfg, study, arm, data, results, log) if study.name == "relu" else 0.01
        run = train_small(
            data, activation, lrn, lr, cfg.epochs, seed, cfg.target_error, alpha_over_n=over_n
        )
        results.add(
            {
                "id": best_id,
                "study": study.name,
                "arm": arm,
                "seed": seed,
                "config": {
                    "activation": activation,
                    "lrn": lrn,
                    "lrn_alpha_over_n": over_n if lrn else None,
                    "lr": lr,
                    "epochs": cfg.epochs,
                    "train_images": len(data.train_y),
                },
                "curve": run.curve,
                "final": {
                    "epochs_to_target": run.epochs_to_target,
                    "top1_error": run.test_error,
                    "gap": run.test_error - run.train_error,
                },
            }
        )
        log(
            f"ablate {best_id}: lr {lr:g}, epochs to {cfg.target_error:.0%} training error "
            f"{run.epochs_to_target}, test error {run.test_error:.4f}"
        )


def _chosen_lr(cfg: AblateConfig, study: Study, arm: str, data, results: Results, log) -> float:
    """The arm's fastest learning rate (fewest epochs to the target), swept on seed 0
    (§3.1: "chosen independently to make training as fast as possible")."""
    from .cifar_net import train_small

    reached = {}
    for lr in cfg.lrs:
        rid = row_id(study.name, arm, 0, lr)
        if rid not in results.rows:
            switch = study.arms[arm]
            run = train_small(
                data,
                switch["activation"],
                False,
                lr,
                cfg.epochs,
                0,
                cfg.target_error,
                stop_at_target=True,
            )
            results.add(
                {
                    "id": rid,
                    "study": study.name,
                    "arm": arm,
                    "seed": 0,
                    "config": {"activation": switch["activation"], "lr": lr, "sweep": True},
                    "curve": run.curve,
                    "final": {"epochs_to_target": run.epochs_to_target},
                }
            )
            log(f"ablate {rid}: epochs to target {run.epochs_to_target}")
        reached[lr] = results.rows[rid]["final"]["epochs_to_target"]
    return min(cfg.lrs, key=lambda lr: math.inf if reached[lr] is None else reached[lr])


def run_dir(cfg: AblateConfig, arm: str, seed: int) -> Path:
    """The run directory of an AlexNet-scale arm and seed."""
    return Path(cfg.out) / "runs" / "alexnet" / arm / f"seed{seed}"


def run_train(cfg: AblateConfig, arm: str, switch: dict, seed: int, results: Results, log) -> dict:
    """One AlexNet-scale run, unless results.jsonl has it already."""
    rid = row_id("alexnet", arm, seed)
    if rid in results.rows:
        return results.rows[rid]
    return record_train(train_arm(cfg, arm, switch, seed), results, log)


def record_train(row: dict, results: Results, log) -> dict:
    """Keep a finished AlexNet-scale run in results.jsonl and say so."""
    results.add(row)
    final = row["final"]
    log(
        f"ablate {row['id']}: val top-1 error {final['top1_error']:.4f}, "
        f"top-5 {final['top5_error']:.4f}"
    )
    return row


def train_arm(cfg: AblateConfig, arm: str, switch: dict, seed: int) -> dict:
    """`alexnet train` for one arm and seed; its results.jsonl row. A run directory left
    by an interrupted ablate resumes from its checkpoint."""
    from ..train.config import TrainConfig
    from ..train.loop import train

    out = run_dir(cfg, arm, seed)
    base = TrainConfig(
        data=cfg.data,
        out=str(out),
        recipe=cfg.recipe,
        seed=seed,
        epochs=math.ceil(cfg.epochs),
        batch_size=cfg.batch_size,
        schedule=cfg.schedule,
        milestones=cfg.milestones,
        device=cfg.device,
        precision=cfg.precision,
        workers=cfg.workers,
        checkpoint_every=cfg.checkpoint_every,
        train_images=cfg.train_images,
        val_images=cfg.val_images,
        report=False,
        progress=False,
        **cfg.extra,
        **switch,
    )
    resume = str(out) if RunDir(out).last.is_file() else None
    if resume is None and out.exists():  # killed before its first checkpoint: start again
        shutil.rmtree(out)
    history = train(base, resume=resume)["history"]
    last = history[-1]
    return {
        "id": row_id("alexnet", arm, seed),
        "arm": arm,
        "seed": seed,
        "config": {**vars(base), **switch},
        "curve": history,
        "steps": running_errors(RunDir(out).steps),
        "final": {
            "top1_error": last["val_top1_error"],
            "top5_error": last["val_top5_error"],
            "train_top1_error": last["train_top1_error"],
            "gap": last["val_top1_error"] - last["train_top1_error"],
        },
    }


def running_errors(steps_log: Path) -> list[list[float]]:
    """[fractional epoch, the epoch's running training error] at each logged step of a
    run (its steps.jsonl): where it first crosses 25% is Figure 1's measure."""
    import json

    out = []
    if not steps_log.is_file():
        return out
    for line in steps_log.read_text().splitlines():
        r = json.loads(line) if line.strip() else {}
        if "train_top1_error" in r:
            out.append([r["epoch"] - 1 + r["step"] / r["steps_per_epoch"], r["train_top1_error"]])
    return out


def run_eval(cfg: AblateConfig, seed: int, results: Results, log) -> None:
    """One crop vs ten on the paper arm's checkpoint (trained first if need be)."""
    from ..data.store import Store, fixed_subset
    from ..evaluation.split import evaluate_split
    from ..weights.load import load_for_inference

    ids = {c: row_id("ten-crop", "ten-crops" if c == 10 else "one-crop", seed) for c in (10, 1)}
    if all(i in results.rows for i in ids.values()):
        return
    run_train(cfg, "paper", {}, seed, results, log)
    path = RunDir(run_dir(cfg, "paper", seed)).last
    loaded = load_for_inference(path, cfg.device, kernels="auto")
    val = fixed_subset(Store(cfg.data).split("val"), cfg.val_images)
    for crops, rid in ids.items():
        r = evaluate_split(loaded.model, val, loaded.transform(), loaded.num_classes, crops=crops)
        results.add(
            {
                "id": rid,
                "arm": rid.split(":")[1],
                "seed": seed,
                "config": {"crops": crops},
                "curve": [],
                "final": {"top1_error": r["top1_error"], "top5_error": r["top5_error"]},
                **({"views": r["views"]} if "views" in r else {}),
            }
        )
        log(f"ablate {rid}: top-1 error {r['top1_error']:.4f}")


def pending_trains(cfg: AblateConfig, results: Results) -> list[tuple[str, dict, int]]:
    """The AlexNet-scale runs the chosen studies need and results.jsonl lacks (the paper
    arm once per seed, shared)."""
    from .design import STUDIES

    jobs: dict[str, tuple[str, dict, int]] = {}
    for name in cfg.studies:
        study = STUDIES[name]
        arms = {"paper": {}} if study.kind == "eval" else cfg.arms_of(study)
        if study.kind == "small":
            continue
        for seed in range(cfg.seeds):
            for arm, switch in arms.items():
                rid = row_id("alexnet", arm, seed)
                if rid not in results.rows:
                    jobs[rid] = (arm, switch, seed)
    return list(jobs.values())


def train_on_gpu(cfg: AblateConfig, arm: str, switch: dict, seed: int, free) -> dict:
    """In a worker process: one run on a free GPU (taken from, then returned to, `free`)."""
    from dataclasses import replace

    gpu = free.get()
    try:
        return train_arm(replace(cfg, device=f"cuda:{gpu}"), arm, switch, seed)
    finally:
        free.put(gpu)
