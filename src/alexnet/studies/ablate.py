"""`alexnet ablate`: the paper's claimed effects, measured. Each study trains matched
arms that differ in one switch, over N seeds, everything else equal (data order, init
seed, schedule, the images each run sees).

Small-net studies (the four-layer CIFAR net of cifar_net.py, 32x32 images):
    relu       §3.1, Figure 1: epochs until the training error first reaches
               --target-error, ReLU vs tanh, each at its fastest learning rate of a grid
    lrn-cifar  §3.3: test error with and without response normalisation
AlexNet-scale studies (`alexnet train` runs; the paper net against one switch off):
    towers, lrn, overlap, augment, pca, dropout; and ten-crop (evaluation only: one
    crop vs ten on the paper arm's checkpoint). The paper arm is trained once per seed
    and shared by these studies.

DIR holds results.jsonl (one row per finished run), summary.json, ablations.md,
figure1.png, report.html and runs/ (the AlexNet-scale run directories), all written
atomically. Rerunning the same command keeps the finished runs and continues an
interrupted AlexNet-scale run from its checkpoint.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..runtime.errors import UsageError
from ..runtime.files import atomic_write_bytes

SMALL_LRS = (0.003, 0.01, 0.03, 0.1)  # the relu study's learning-rate grid, per arm


@dataclass(frozen=True)
class Study:
    """A study: its section, the paper's claim, its arms and the paper's deltas."""

    name: str
    section: str
    claim: str
    arms: dict  # arm -> the one switch it sets (TrainConfig fields, or the small net's)
    # the paper's figure for the error of the switched-off arm minus the other (fractions)
    paper_top1_delta: float | None = None
    paper_top5_delta: float | None = None
    kind: str = "alexnet"  # "small", "alexnet" or "eval"


STUDIES = {
    s.name: s
    for s in (
        Study(
            "relu",
            "§3.1, Figure 1",
            "ReLU reaches 25% training error 6x faster than tanh",
            {"relu": {"activation": "relu"}, "tanh": {"activation": "tanh"}},
            kind="small",
        ),
        Study(
            "lrn-cifar",
            "§3.3",
            "response normalisation: 13% -> 11% test error on CIFAR-10",
            {"lrn": {"lrn": True}, "no-lrn": {"lrn": False}},
            0.02,
            None,
            kind="small",
        ),
        Study(
            "towers",
            "§3.2",
            "two towers beat one tower of half the kernels",
            {"paper": {}, "one-tower": {"variant": "one-tower"}},
            0.017,
            0.012,
        ),
        Study(
            "lrn",
            "§3.3",
            "response normalisation lowers the error",
            {"paper": {}, "no-lrn": {"lrn": False}},
            0.014,
            0.012,
        ),
        Study(
            "overlap",
            "§3.4",
            "overlapping 3/2 pooling beats 2/2, and overfits less",
            {"paper": {}, "no-overlap": {"overlap_pool": False}},
            0.004,
            0.003,
        ),
        Study(
            "augment",
            "§4.1",
            "crops and flips: a larger training set, less overfitting",
            {"paper": {}, "no-augment": {"augment": False}},
        ),
        Study(
            "pca",
            "§4.1",
            "PCA lighting lowers top-1 error by over 1%",
            {"paper": {}, "no-pca": {"pca_lighting": False}},
            0.01,
            None,
        ),
        Study(
            "dropout",
            "§4.2",
            "dropout: less overfitting, about twice the iterations",
            {"paper": {}, "no-dropout": {"dropout": 0.0}},
        ),
        Study(
            "ten-crop",
            "§4.1",
            "averaging ten patches at test time",
            {"ten-crops": {"crops": 10}, "one-crop": {"crops": 1}},
            kind="eval",
        ),
    )
}


@dataclass
class AblateConfig:
    """What `alexnet ablate` is asked to do."""

    studies: list[str]
    data: str
    out: str
    seeds: int = 3
    epochs: float = 5  # the AlexNet-scale runs' and lrn-cifar's; relu: the budget per run
    train_images: int | None = None
    val_images: int | None = None
    target_error: float = 0.25
    device: str = "auto"
    recipe: str = "demo"  # the AlexNet-scale runs' (small data: the paper's does not learn)
    batch_size: int = 32
    workers: int = 2
    lrs: tuple[float, ...] = SMALL_LRS
    extra: dict = field(default_factory=dict)  # other TrainConfig fields, for every run

    def check(self) -> None:
        """Raise UsageError for an unknown study or a value out of range."""
        unknown = [s for s in self.studies if s not in STUDIES]
        if unknown:
            raise UsageError(f"unknown study {unknown[0]!r}; choose from {', '.join(STUDIES)}")
        if self.seeds < 1 or self.epochs <= 0 or not 0 < self.target_error < 1:
            raise UsageError("--seeds and --epochs must be positive, --target-error in (0, 1)")
        from ..runtime.device import pick_device

        pick_device(self.device)  # a device that is not there: one line, as every verb says


class Results:
    """results.jsonl: one row per finished run, keyed by its id; rewritten atomically."""

    def __init__(self, out: Path):
        self.path = out / "results.jsonl"
        self.rows = {}
        if self.path.is_file():
            for number, line in enumerate(self.path.read_text().splitlines(), start=1):
                if line.strip():
                    row = _row(line)
                    if row is None:
                        raise UsageError(
                            f"{self.path}, line {number}: not a run's record (a JSON object "
                            "with its id and arm): remove the line to run it again"
                        )
                    self.rows[row["id"]] = row

    def add(self, row: dict) -> None:
        """Record a finished run and rewrite results.jsonl atomically."""
        self.rows[row["id"]] = row
        data = "".join(json.dumps(r) + "\n" for r in self.rows.values()).encode()
        atomic_write_bytes(self.path, data)


def _row(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    ok = isinstance(row, dict) and isinstance(row.get("id"), str) and "arm" in row
    return row if ok else None


MARKER = ".alexnet-ablate"  # written into every folder ablate makes: a rerun may continue


def claim_results_folder(out: Path) -> None:
    """Make `out`, or continue in one that ablate made (its marker, or the results record
    of a folder from before the marker); refuse a folder holding anything else."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not ((out / MARKER).is_file() or (out / "results.jsonl").is_file()):
            first = sorted(out.iterdir())[0]
            raise UsageError(
                f"--out {out} holds files ablate did not write ({first.name}): choose a "
                "new folder, or one an earlier ablate wrote"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).touch()
    except OSError as e:
        raise UsageError(f"cannot write the results folder {out}: {e.strerror}") from None


def ablate(cfg: AblateConfig, log=print) -> dict:
    """Run every study's missing runs, then write the summary, the tables and figures."""
    from .runs import run_eval, run_small_study, run_train

    cfg.check()
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
                for arm, switch in study.arms.items():
                    run_train(cfg, arm, switch, seed, results, log)
    from .report import write_outputs

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
    from .runs import pending_trains, record_train, train_on_gpu

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


def row_id(kind: str, arm: str, seed: int, lr: float | None = None) -> str:
    """A run's id in results.jsonl: kind, arm, seed (and learning rate, in a sweep)."""
    return f"{kind}:{arm}:seed{seed}" + (f":lr{lr:g}" if lr is not None else "")


def _mean_sd(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = (
        math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    )
    return m, sd


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
        studies[name].update(section=study.section, claim=study.claim)
    return {"studies": studies, "config": asdict(cfg)}


def _ids(cfg: AblateConfig, study: Study, arm: str) -> list[str]:
    kind = {"small": study.name, "eval": "ten-crop", "alexnet": "alexnet"}[study.kind]
    if study.name == "relu":
        return [row_id(kind, arm, s) + ":best" for s in range(cfg.seeds)]
    return [row_id(kind, arm, s) for s in range(cfg.seeds)]


def _summarise_relu(cfg: AblateConfig, rows: dict) -> dict:
    epochs = {arm: [r["final"]["epochs_to_target"] for r in rs] for arm, rs in rows.items()}
    lrs = {arm: [r["config"]["lr"] for r in rs] for arm, rs in rows.items()}
    reached = {arm: [e for e in es if e is not None] for arm, es in epochs.items()}
    speedup = None
    if reached["relu"] and reached["tanh"]:
        speedup = _mean_sd(reached["tanh"])[0] / _mean_sd(reached["relu"])[0]
    return {
        "target_error": cfg.target_error,
        "epochs_to_target": epochs,
        "chosen_lr": lrs,
        "speedup": speedup,
        "paper_speedup": 6.0,
        "same_sign": None if speedup is None else speedup > 1,
    }


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
        out["top1_delta"] = _mean_sd(d1)
        if all(v is not None for v in top5[base][:n] + top5[off][:n]):
            out["top5_delta"] = _mean_sd([top5[off][i] - top5[base][i] for i in range(n)])
        out["same_sign"] = out["top1_delta"][0] > 0  # the paper: switching it off hurts
    return out
