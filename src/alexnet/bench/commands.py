"""The `alexnet bench` verbs: each runs its benchmark from its config and hands back a
result that prints itself (configs.py holds what each is asked)."""

from __future__ import annotations

from ..runtime.printed import Printed


def _printed(result) -> Printed:
    return Printed(result.to_dict(), result.lines())


def prepare_command(cfg) -> Printed:
    """`alexnet bench prepare` (cfg: BenchPrepareConfig)."""
    from .prepare import bench_prepare

    return _printed(bench_prepare(cfg.src, workers=cfg.workers, fmt=cfg.format))


def data_command(cfg) -> Printed:
    """`alexnet bench data` (cfg: BenchDataConfig)."""
    from .data import bench_data

    options = {k: getattr(cfg, k) for k in ("workers", "batch_size", "batches")}
    return _printed(bench_data(cfg.data, cfg.source, **options))


def train_command(cfg) -> Printed:
    """`alexnet bench train` (cfg: BenchTrainConfig): the step alone, end to end from a
    store (--data), or the two towers on two processes (--model-parallel 2)."""
    common = {"device": cfg.device, "batch_size": cfg.batch_size, "precision": cfg.precision}
    if cfg.model_parallel == 2:
        from .model_parallel import bench_model_parallel

        return _printed(bench_model_parallel(**common, steps=cfg.steps or 2, rounds=cfg.rounds))
    if cfg.data:
        from .end_to_end import bench_end_to_end

        options = {k: getattr(cfg, k) for k in ("warmup", "workers", "compile", "decode")}
        return _printed(
            bench_end_to_end(cfg.data, cfg.source, **common, steps=cfg.steps or 20, **options)
        )
    from .step import bench_step

    options = {k: getattr(cfg, k) for k in ("compile", "profile", "rounds", "kernels")}
    return _printed(bench_step(**common, steps=cfg.steps or 2, **options))
