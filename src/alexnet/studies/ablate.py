"""`alexnet ablate`: the paper's claimed effects, measured. Each study trains matched
arms that differ in one switch, over N seeds, everything else equal (data order, init
seed, schedule, the images each run sees).

Small-net studies (the four-layer CIFAR net of cifar_net.py, 32x32 images):
    relu       §3.1, Figure 1: epochs until the training error first reaches
               --target-error (and each of --targets), ReLU vs tanh, each at its
               fastest learning rate to --target-error of the grid --lrs
    lrn-cifar  §3.3: test error with and without response normalisation, and with
               the other convention for alpha
AlexNet-scale studies (`alexnet train` runs; the paper net against one switch off):
    towers, lrn (with a third arm: the other convention for alpha), overlap, augment,
    pca, dropout (with the epochs each arm needs to converge); and ten-crop (evaluation
    only: one crop vs ten on the paper arm's checkpoint). The paper arm is trained once
    per seed and shared by these studies.

DIR holds results.jsonl (one row per finished run), summary.json, ablations.md,
figure1.png, report.html and runs/ (the AlexNet-scale run directories), all written
atomically. Rerunning the same command keeps the finished runs and continues an
interrupted AlexNet-scale run from its checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..data.folders import store_for
from ..runtime.printed import Printed
from .design import (
    CONVERGED_WITHIN,
    STUDIES,
    AblateConfig,
    Results,
    Study,
    all_targets,
    claim_results_folder,
    mean_sd,
    row_id,
)
from .report import write_outputs
from .runs import pending_trains, record_train, run_eval, run_small_study, run_train, train_on_gpu


def ablate(cfg: AblateConfig, log=print) -> dict:
    """Run every study's missing runs, then write the summary, the tables and figures."""
    cfg.check()
    cfg.data = store_for(cfg.data)  # an image folder: its cached store (data/folders.py)
    out = Path(cfg.out)
    claim_results_folder(out)
    results = Results(out)
    spread_over_gpus(cfg, results, log)  # several GPUs: the AlexNet-scale runs, in parallel
    for name in cfg.studies:
        study = STUDIES[name]
        for seed in range(cfg.seeds):
            if study.kind == "small":
                run_small_study(cfg, study, seed, results, log)
            elif study.kind == "eval":
                run_eval(cfg, seed, results, log)
            else:
                for arm, switch in cfg.arms_of(study).items():
                    run_train(cfg, arm, switch, seed, results, log)
    summary = summarise(cfg, results)
    write_outputs(out, cfg, summary, results)
    return summary


def spread_over_gpus(cfg: AblateConfig, results: Results, log) -> None:
    """With more than one GPU (and --device auto or cuda), train the missing AlexNet-scale
    runs in parallel, one process per GPU, each run on the next free GPU; the loop in
    `ablate` then finds them done. On one device it does nothing."""
    import torch

    gpus = torch.cuda.device_count() if cfg.device in ("auto", "cuda") else 0
    if gpus < 2:
        return
    jobs = pending_trains(cfg, results)
    if not jobs:
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    free = ctx.Manager().Queue()
    for i in range(gpus):
        free.put(i)
    with ProcessPoolExecutor(gpus, mp_context=ctx) as pool:
        futures = [
            pool.submit(train_on_gpu, cfg, arm, switch, seed, free) for arm, switch, seed in jobs
        ]
        for future in futures:
            record_train(future.result(), results, log)


def summarise(cfg: AblateConfig, results: Results) -> dict:
    """summary.json's content from the finished runs."""
    studies = {}
    for name in cfg.studies:
        study = STUDIES[name]
        rows = {
            arm: [results.rows[i] for i in _ids(cfg, study, arm) if i in results.rows]
            for arm in study.arms
        }
        if study.name == "relu":
            studies[name] = _summarise_relu(cfg, rows)
        else:
            studies[name] = _summarise_errors(study, rows)
        if study.name == "activation":
            studies[name].update(figure_1(rows, cfg.target_error))
        studies[name].update(section=study.section, claim=study.claim)
    return {"studies": studies, "config": asdict(cfg)}


def _ids(cfg: AblateConfig, study: Study, arm: str) -> list[str]:
    kind = {"small": study.name, "eval": "ten-crop", "alexnet": "alexnet"}[study.kind]
    if study.name == "relu":
        return [row_id(kind, arm, s) + ":best" for s in range(cfg.seeds)]
    return [row_id(kind, arm, s) for s in range(cfg.seeds)]


def _summarise_relu(cfg: AblateConfig, rows: dict) -> dict:
    from .cifar_net import first_crossing

    by_target = {
        f"{t:g}": {arm: [first_crossing(r["curve"], t) for r in rs] for arm, rs in rows.items()}
        for t in all_targets(cfg)
    }
    speedups = {t: _speedup(epochs) for t, epochs in by_target.items()}
    speedup = speedups[f"{cfg.target_error:g}"]
    return {
        "target_error": cfg.target_error,
        "epochs_to_target": by_target[f"{cfg.target_error:g}"],
        "epochs_by_target": by_target,  # target -> arm -> epochs per seed (None: not reached)
        "speedup_by_target": speedups,  # target -> tanh epochs / ReLU epochs (means)
        "budget_epochs": cfg.epochs,
        "chosen_lr": {arm: [r["config"]["lr"] for r in rs] for arm, rs in rows.items()},
        "lr_grid": list(cfg.lrs),
        "speedup": speedup,
        "paper_speedup": 6.0,
        "same_sign": None if speedup is None else speedup > 1,
    }


def figure_1(rows: dict, target: float) -> dict:
    """Figure 1 at full size: the fractional epoch at which each run's running training
    error first reaches `target` (from its logged steps), the test accuracy at the end of
    that epoch, and tanh's epochs over ReLU's (the paper's arm)."""
    from .cifar_net import first_crossing

    epochs = {
        a: [first_crossing(r.get("steps") or [], target) for r in rs] for a, rs in rows.items()
    }

    def accuracy(row: dict, at: float | None) -> float | None:
        ended = [h for h in row["curve"] if at is not None and h["epoch"] >= at]
        return 1 - ended[0]["val_top1_error"] if ended else None

    return {
        "target_error": target,
        "epochs_to_target": epochs,
        "test_accuracy_at_target": {
            a: [accuracy(r, e) for r, e in zip(rs, epochs[a], strict=True)]
            for a, rs in rows.items()
        },
        "speedup": _speedup({"relu": epochs.get("paper"), "tanh": epochs.get("tanh")}),
        "paper_speedup": 6.0,
    }


def _speedup(epochs: dict) -> float | None:
    """tanh's mean epochs over ReLU's, when every seed of both reached the target."""
    relu, tanh = epochs.get("relu") or [], epochs.get("tanh") or []
    if not relu or not tanh or None in relu + tanh:
        return None
    return mean_sd(tanh)[0] / mean_sd(relu)[0]


def _summarise_errors(study: Study, rows: dict) -> dict:
    arms = list(study.arms)
    base, off = arms[0], arms[1]
    top1 = {a: [r["final"]["top1_error"] for r in rows[a]] for a in arms}
    top5 = {a: [r["final"].get("top5_error") for r in rows[a]] for a in arms}
    gap = {a: [r["final"].get("gap") for r in rows[a]] for a in arms}
    out = {
        "top1_error": top1,
        "top5_error": top5,
        "generalisation_gap": gap,  # validation error minus training error: overfitting
        "paper_top1_delta": study.paper_top1_delta,
        "paper_top5_delta": study.paper_top5_delta,
    }
    n = min(len(top1[base]), len(top1[off]))
    if n:
        d1 = [top1[off][i] - top1[base][i] for i in range(n)]  # paired by seed
        out["top1_delta"] = mean_sd(d1)
        if all(v is not None for v in top5[base][:n] + top5[off][:n]):
            out["top5_delta"] = mean_sd([top5[off][i] - top5[base][i] for i in range(n)])
        out["same_sign"] = out["top1_delta"][0] > 0  # the paper: switching it off hurts
    out["top1_delta_by_arm"] = {  # every other arm against the first, paired by seed
        a: mean_sd([x - y for x, y in zip(top1[a], top1[base], strict=False)])
        for a in arms[1:]
        if top1[a] and top1[base]
    }
    if study.kind == "alexnet":
        out.update(_convergence(study, rows))
    if study.kind == "eval":  # each of the ten patches alone, per seed
        ten = [r["views"] for r in rows["ten-crops"] if "views" in r]
        if ten:
            out["view_top1_error"] = {v: [t[v] for t in ten] for v in ten[0]}
    return out


def _convergence(study: Study, rows: dict) -> dict:
    """Epochs each arm's run needs to come within CONVERGED_WITHIN of its own final
    validation error; for dropout, the ratio the paper puts at about 2."""
    epochs = {a: [epochs_to_converge(r["curve"]) for r in rs] for a, rs in rows.items()}
    out = {"converged_within": CONVERGED_WITHIN, "epochs_to_converge": epochs}
    if study.name == "dropout" and epochs["paper"] and epochs["no-dropout"]:
        out["convergence_ratio"] = mean_sd(epochs["paper"])[0] / mean_sd(epochs["no-dropout"])[0]
        out["paper_convergence_ratio"] = 2.0
        out.update(_to_common_error(rows))
    return out


def _to_common_error(rows: dict) -> dict:
    """Epochs each run needs to reach the best validation error of the worst run: a
    level every run reaches, so their ratio does not depend on where a schedule ends
    them (under a held rate, dropout's 'twice the iterations')."""
    runs = [r for rs in rows.values() for r in rs]
    common = max(min(h["val_top1_error"] for h in r["curve"]) for r in runs)
    epochs = {
        a: [next(h["epoch"] for h in r["curve"] if h["val_top1_error"] <= common) for r in rs]
        for a, rs in rows.items()
    }
    ratio = mean_sd(epochs["paper"])[0] / mean_sd(epochs["no-dropout"])[0]
    return {"common_error": common, "epochs_to_common_error": epochs, "common_error_ratio": ratio}


def epochs_to_converge(history: list[dict]) -> int:
    """The first epoch whose validation error is within CONVERGED_WITHIN of the last's."""
    final = history[-1]["val_top1_error"]
    return next(
        h["epoch"] for h in history if h["val_top1_error"] <= final + CONVERGED_WITHIN + 1e-12
    )


def ablate_command(cfg: AblateConfig) -> Printed:
    """`alexnet ablate`: the studies' table, and where the results are (each run's
    progress on stderr as it goes)."""
    import sys

    from .report import table_rows

    summary = ablate(cfg, log=lambda line: print(line, file=sys.stderr, flush=True))
    lines = [" | ".join(row) for row in table_rows(summary)]
    lines.append(f"results: {cfg.out}/ablations.md, {cfg.out}/report.html")
    return Printed(summary, lines)
